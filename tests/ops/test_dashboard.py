"""The Grafana dashboard checked the way Grafana reads it, and every panel shown data by a real Prometheus.

* Schema: ``deploy/grafana/schema/build-schema.sh`` turns the ``Dashboard`` type of the pinned
  ``@grafana/schema`` npm package into a JSON schema (ts-json-schema-generator); ``jsonschema`` checks
  ``kairos.json`` against it. The schema is generated on first use and cached in a git-ignored folder.
* Queries: every panel expression parses (``promql-parser``, the Rust PromQL parser's Python binding).
* Data: a live worker (two, to cause a rebalance) on the embedded broker, a real Prometheus scraping
  them, every panel expression evaluated and non-empty, after driving the worker so that the series
  that only exist after some event (pushes, dead letters, erasure, expiry, rebalance) do exist.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from jsonschema import Draft7Validator

from stream.broker import EmbeddedBroker
from stream.contract import Event
from stream.topics import ensure_topics
from tests.ops.test_prometheus import metric_names
from tests.support.prometheus import PrometheusServer, prometheus_binary
from tests.support.worker import WorkerProcess, produce, settings_for, train_small_model, wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kairos.json"
BUILD_SCHEMA = ROOT / "deploy" / "grafana" / "schema" / "build-schema.sh"
NPM_FAILED = 75  # build-schema.sh's exit status when `npm ci` cannot install the pinned tools


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows excluded (rows are open, so their panels are top-level)."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL expression) for every target of every panel."""
    return [(f"{p['title']!r} {t['refId']}", t["expr"]) for p in panels() for t in p["targets"]]


@pytest.fixture(scope="module")
def grafana_schemas() -> Path:
    """The folder of schemas generated from @grafana/schema; skips only when npm cannot install."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed: cannot generate the dashboard schema from @grafana/schema")
    result = subprocess.run(["bash", str(BUILD_SCHEMA)], capture_output=True, text=True, timeout=900)
    if result.returncode == NPM_FAILED:
        pytest.skip(f"npm could not install the pinned @grafana/schema tools: {result.stderr[-1500:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def grafana_schema(grafana_schemas: Path) -> dict[str, Any]:
    """The JSON schema of a dashboard (the `Dashboard` type of @grafana/schema)."""
    schema = json.loads((grafana_schemas / "dashboard.schema.json").read_text())
    assert isinstance(schema, dict)
    return schema


def test_dashboard_validates_against_the_grafana_schema(grafana_schema: dict[str, Any]) -> None:
    validator = Draft7Validator(grafana_schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(dashboard())]
    assert not errors, "\n".join(errors)


def test_panel_options_validate_against_their_plugin_schema(grafana_schemas: Path) -> None:
    """Each panel's `options` against its plugin's `Options` type: a misspelt option would be silently
    ignored by Grafana, a missing one silently defaulted; both fail here."""
    for panel in panels():
        path = grafana_schemas / f"panel-{panel['type']}.options.schema.json"
        assert path.exists(), (
            f"no schema for panel type {panel['type']!r}: add it to PANEL_TYPES in {BUILD_SCHEMA}"
        )
        validator = Draft7Validator(json.loads(path.read_text()))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(panel["options"])]
        assert not errors, f"panel {panel['title']!r}:\n" + "\n".join(errors)
    stat = json.loads((grafana_schemas / "panel-stat.options.schema.json").read_text())
    assert not Draft7Validator(stat).is_valid({**panels()[0]["options"], "colourMode": "value"})


def test_the_grafana_schema_is_strict(grafana_schema: dict[str, Any]) -> None:
    """The generated schema refuses what Grafana would not read, so a pass above means something."""
    validator = Draft7Validator(grafana_schema)
    for broken in (
        {**dashboard(), "refreshRate": "5s"},  # no such dashboard field
        {**dashboard(), "panels": [{**panels()[0], "gridPos": {"x": 0, "y": 0}}]},  # no w, h
        {**dashboard(), "panels": [{**panels()[0], "targets": "sum(up)"}]},  # targets is a list
        {**dashboard(), "time": {"from": "now-30m"}},  # `to` is required
    ):
        assert not validator.is_valid(broken)


def test_every_panel_query_parses() -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 30
    for where, expr in exprs:
        try:
            promql_parser.parse(expr)
        except Exception as exc:  # the binding raises ValueError; be generous about its type
            pytest.fail(f"panel {where}: {expr!r} does not parse: {exc}")
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(kairos_events_total[1m])")  # the parser does refuse bad PromQL


def test_dashboard_layout_and_datasource() -> None:
    data = dashboard()
    assert len({p["id"] for p in data["panels"]}) == len(data["panels"])
    cells: set[tuple[int, int]] = set()
    for p in data["panels"]:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
        covered = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not covered & cells, f"panel {p['title']!r} overlaps another"
        cells |= covered
    for p in panels():
        assert p["description"].strip(), f"panel {p['title']!r} has no description"
        assert p["targets"] and all(t["datasource"]["uid"] == "kairos-prometheus" for t in p["targets"])


# The questions an SRE asks, and the series the answer needs: each must appear in a panel whose title
# contains the given words.
QUESTIONS: dict[str, tuple[str, set[str]]] = {
    "how many events come in": ("throughput in", {"kairos_events_total"}),
    "how many pushes go out, for what": ("pushes by trigger", {"kairos_pushes_total"}),
    "which partition is behind": ("lag per partition", {"kairos_consumer_lag_messages"}),
    "how late are pushes": ("event time to push latency", {"kairos_push_latency_seconds_bucket"}),
    "how fast is processing": ("processing time", {"kairos_event_processing_seconds_bucket"}),
    "why are inputs refused": ("dead letters by reason", {"kairos_dead_letters_total"}),
    "why are pushes held back": ("suppressions by reason", {"kairos_push_suppressions_total"}),
    "which model serves": ("model version", {"kairos_model_info"}),
    "was a model refused": ("model reloads and load failures", {"kairos_model_load_failures_total"}),
    "is state being recovered": (
        "recovery progress",
        {"kairos_recovery_in_progress", "kairos_recovering_partitions", "kairos_recovery_remaining_messages"},
    ),
    "how long do recoveries take, do they fail": (
        "recovery time and errors",
        {"kairos_recovery_seconds_bucket", "kairos_recovery_errors_total"},
    ),
    "how long do rebalances pause us": (
        "rebalances",
        {"kairos_rebalance_pause_seconds_bucket", "kairos_rebalances_total"},
    ),
    "who was erased or expired": (
        "erasures and expiries",
        {"kairos_users_erased_total", "kairos_users_expired_total"},
    ),
    "does the tick fail": ("tick errors", {"kairos_tick_errors_total"}),
    "where does the time go": (
        "time per event by stage",
        {"kairos_stage_seconds_total", "kairos_events_total"},
    ),
    "how big is the state": ("state size", {"kairos_state_keys", "kairos_state_bytes"}),
    "are user records served from memory": ("user records loaded warm", {"kairos_user_record_loads_total"}),
    "are workers up": ("workers up", {"kairos_worker_up"}),
}


@pytest.mark.parametrize("question", sorted(QUESTIONS))
def test_dashboard_answers(question: str) -> None:
    words, needed = QUESTIONS[question]
    matching = [p for p in panels() if words in p["title"].lower()]
    assert matching, f"no panel titled with {words!r} answers {question!r}"
    used = {name for p in matching for t in p["targets"] for name in metric_names(t["expr"])}
    assert needed <= used, f"{question!r}: panels {[p['title'] for p in matching]} miss {needed - used}"


def test_overview_row_comes_first() -> None:
    """At a glance: the first row holds the headline numbers as single stats."""
    data = dashboard()["panels"]
    assert data[0]["type"] == "row"
    first_row = []
    for p in data[1:]:
        if p["type"] == "row":
            break
        first_row.append(p)
    assert {p["type"] for p in first_row} == {"stat"}
    titles = {p["title"].lower() for p in first_row}
    assert {"workers up", "events in /s", "pushes out /s", "total lag", "model version"} <= titles


# --- every panel returns data from a real Prometheus scraping live workers --------------------------

# Policy that lets browsing events push (no quiet hours, threshold 0); a short TTL so that expiry runs.
LIVE_ENV = {
    "KAIROS_POLICY__THRESHOLD": "0.0",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
    "KAIROS_POLICY__QUIET_HOURS_START": "00:00",
    "KAIROS_POLICY__QUIET_HOURS_END": "00:00",
    "KAIROS_POLICY__CART_ABANDONMENT_DELAY_SECONDS": "1e9",
    "KAIROS_WORKER__USER_TTL_SECONDS": "60",
}


@pytest.fixture(scope="module")
def live_broker() -> Iterator[str]:
    with EmbeddedBroker() as b:
        ensure_topics(settings_for(b.bootstrap))
        yield b.bootstrap


@pytest.fixture(scope="module")
def live_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_small_model(tmp_path_factory.mktemp("model") / "artifact")


def _events(tag: str, users: int, per_user: int, items: list[str], ts: float) -> list[tuple[bytes, Event]]:
    out = []
    for u in range(users):
        user = f"u-{tag}-{u}"
        for n in range(per_user):
            event = Event(
                event_id=f"e-{user}-{n}",
                user_id=user,
                type="view",
                item_id=items[(u * 7 + n) % len(items)],
                ts=ts + n,
                session_id=f"s-{user}",
            )
            out.append((user.encode(), event))
    return out


@pytest.mark.integration
def test_every_panel_returns_data_from_a_live_worker(
    live_broker: str, live_model: Path, tmp_path: Path
) -> None:
    if prometheus_binary() is None:
        pytest.skip("the prometheus binary is missing: run deploy/install-test-deps.sh (make test does)")
    from stream.simulator import SimConfig, World

    broker = live_broker
    topics = settings_for(broker).topics
    world = World(SimConfig(seed=7, n_users=1500, n_items=600))
    catalog = world.initial_catalog()
    produce(broker, topics.catalog, [(c.item_id.encode(), c) for c in catalog])
    items = [c.item_id for c in catalog if c.stock > 0 and c.promotion is None]

    first = WorkerProcess(broker, tmp_path / "w1", live_model, LIVE_ENV, app_id="kairos-dash")
    second = WorkerProcess(broker, tmp_path / "w2", live_model, LIVE_ENV, app_id="kairos-dash")
    # Prometheus scrapes both from the start, so what happens at start-up and at the rebalance falls
    # between two scrapes and shows in rate() and increase().
    with PrometheusServer([f"127.0.0.1:{first.web_port}", f"127.0.0.1:{second.web_port}"]) as prom:
        try:
            first.start()
            first.wait_ready()
            now = time.time()
            # Old users (their last event 250 s before the new ones: past the 60 s TTL, so expired),
            # current users (pushes with a short latency), broken records (dead letters).
            produce(broker, topics.events, _events("old", 24, 3, items, now - 250))
            wait_for(lambda: first.metric("kairos_events_total") >= 72, 60, what="old events")
            produce(broker, topics.events, _events("new", 24, 4, items, now))
            produce(broker, topics.events, [(b"u-dash-bad", b"{broken") for _ in range(5)])
            wait_for(lambda: first.metric("kairos_events_total") >= 72 + 96 + 5, 60, what="new events")
            # An erasure request: a consent tombstone for a user the worker holds.
            produce(broker, topics.consent, [(b"u-new-0", None)])
            wait_for(lambda: first.metric("kairos_users_erased_total") >= 1, 60, what="the erasure")
            wait_for(lambda: first.metric("kairos_users_expired_total") >= 1, 60, what="the expiry")
            assert first.metric("kairos_pushes_total") > 0

            # A second member joins: the first is revoked and reassigned (rebalance pause, recovery).
            pauses = first.metric("kairos_rebalance_pause_seconds_count")
            second.start()
            second.wait_ready()
            wait_for(
                lambda: first.metric("kairos_rebalance_pause_seconds_count") > pauses,
                90,
                what="a rebalance on the first worker",
            )
            produce(broker, topics.events, _events("late", 24, 2, items, time.time()))
            wait_for(
                lambda: (
                    first.metric("kairos_events_total") + second.metric("kairos_events_total")
                    >= 72 + 96 + 5 + 48
                ),
                60,
                what="events after the rebalance",
            )
            prom.wait_for_scrape(after=time.time())
            time.sleep(2.5)  # a few more scrapes, so every rate() window holds two samples or more

            empty, not_a_number = [], []
            for where, expr in panel_exprs():
                result = prom.query(expr)
                if not result:
                    empty.append(f"{where}: {expr}")
                elif any(math.isnan(float(r["value"][1])) for r in result):
                    not_a_number.append(f"{where}: {expr}")
            assert not empty, "panels without data:\n" + "\n".join(empty)
            assert not not_a_number, "panels showing NaN:\n" + "\n".join(not_a_number)

            # A few values checked against what was driven.
            assert prom.query_value("sum(kairos_worker_up)") == 2
            assert prom.query_value('sum(kairos_dead_letters_total{reason="bad_json"})') == 5
            assert (prom.query_value("sum(increase(kairos_users_erased_total[1h]))") or 0) > 0
            assert (prom.query_value("sum(increase(kairos_rebalances_total[15m]))") or 0) > 0
        finally:
            second.stop()
            first.stop()

"""Prometheus side: promtool on the deploy files, a real server scraping stream.web, metric names used
by the dashboard and alert rules all exposed by /metrics."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from stream import metrics_exposition, metrics_record
from stream.web import Health, WebServer
from tests.support.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "kairos.json"

# Series Prometheus makes itself rather than scraping them from Kairos.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_promtool_check_config(promtool: str) -> None:
    result = run([promtool, "check", "config", str(PROM_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(PROM_DIR / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(PROM_DIR / "alerts_test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


# What pages someone, by the alert that says it.
REQUIRED_ALERTS = {
    "worker down": "KairosWorkerDown",
    "no worker at all": "KairosNoWorkers",
    "lag growing": "KairosConsumerLagGrowing",
    "no progress": "KairosNoProgress",
    "dead-letter burst": "KairosDeadLetterBurst",
    "dead-letter share": "KairosDeadLetterRateHigh",
    "recovery stuck": "KairosRecoveryStuck",
    "recovery errors": "KairosRecoveryErrors",
    "model refused": "KairosModelLoadFailures",
    "no model": "KairosNoModel",
}


def test_every_alert_fires_in_a_unit_test() -> None:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert set(REQUIRED_ALERTS.values()) <= alerts, set(REQUIRED_ALERTS.values()) - alerts
    cases = [
        t
        for test in yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text())["tests"]
        for t in test.get("alert_rule_test", [])
    ]
    fired = {t["alertname"] for t in cases if t.get("exp_alerts")}
    quiet = {t["alertname"] for t in cases if not t.get("exp_alerts")}
    assert alerts <= fired, f"alerts never shown firing in alerts_test.yml: {sorted(alerts - fired)}"
    assert alerts <= quiet, f"alerts never shown staying quiet: {sorted(alerts - quiet)}"
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"].get("runbook"), rule["alert"]
            assert rule["annotations"].get("summary"), rule["alert"]
            assert rule["labels"]["severity"] in ("warning", "critical")


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (strings, label matchers, grouping lists, function
    names, ranges and keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b\d+(\.\d*)?([eE][-+]?\d+)?\b", " ", text)  # numbers such as 1e-9
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue  # a function call or an operator keyword
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(kairos_x_bucket{a="b{c}"}[5m]))) > 0.05 '
        'and on(job) (sum(rate(kairos_y_total[15m])) or vector(0)) / 1e-9 == 0 unless up{job="k"}'
    )
    assert metric_names(expr) == {"kairos_x_bucket", "kairos_y_total", "up"}


def exposed_names(body: str) -> set[str]:
    """Series names /metrics can produce, counting TYPE lines of labelled metrics without samples."""
    names: set[str] = set()
    for family in text_string_to_metric_families(body):
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "summary":
            names |= {family.name, family.name + "_sum", family.name + "_count"}
        else:
            names.add(family.name)
        names |= {s.name for s in family.samples}
    return names


def used_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((PROM_DIR / "alerts.yml").read_text())
    exprs = [(f"alert {r.get('alert')}", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs += [
        (f"panel {p['title']!r}", t["expr"])
        for p in dashboard["panels"]
        if p["type"] != "row"  # rows only group panels
        for t in p["targets"]
    ]
    return exprs


def test_dashboard_and_alerts_use_only_exposed_metrics(live_server: tuple[WebServer, Health]) -> None:
    server, _ = live_server
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        exposed = exposed_names(resp.read().decode())
    exprs = used_expressions()
    assert len(exprs) > 20
    used: set[str] = set()
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = {n for n in names if n not in exposed and n not in SYNTHETIC}
        assert not unknown, f"{where} uses {sorted(unknown)}, which /metrics does not expose"
        used |= names
    # The required metrics are all exposed, and the headline ones are used somewhere.
    for name in (
        "kairos_events_total",
        "kairos_dead_letters_total",
        "kairos_event_processing_seconds_bucket",
        "kairos_push_latency_seconds_bucket",
        "kairos_pushes_total",
        "kairos_push_suppressions_total",
        "kairos_push_feedback_total",
        "kairos_push_revenue_total",
        "kairos_consumer_lag_messages",
        "kairos_state_keys",
        "kairos_state_bytes",
        "kairos_recovery_remaining_messages",
        "kairos_recovery_in_progress",
        "kairos_rebalances_total",
        "kairos_model_info",
        "kairos_model_load_seconds_bucket",
        "kairos_model_load_failures_total",
        "kairos_model_reloads_total",
        "kairos_interest_score_bucket",
        "kairos_worker_up",
    ):
        assert name in exposed, name
    assert {
        "kairos_events_total",
        "kairos_pushes_total",
        "kairos_consumer_lag_messages",
        "kairos_model_info",
        "kairos_dead_letters_total",
    } <= used


def test_real_prometheus_scrapes_the_web_server(
    prometheus_available: None, live_server: tuple[WebServer, Health]
) -> None:
    server, health = live_server
    for _ in range(3):
        metrics_record.observe_dead_letter("bad_json", "promtest")
    metrics_record.observe_dead_letter("oversized", "promtest")
    metrics_exposition.worker_started()
    metrics_record.set_consumer_lag("promtest", 2, 42)
    started = time.time()
    with PrometheusServer([f"127.0.0.1:{server.port}"]) as prom:
        prom.wait_for_scrape(after=started)
        assert prom.query_value('kairos_dead_letters_total{topic="promtest", reason="bad_json"}') == 3
        assert prom.query_value('sum(kairos_dead_letters_total{topic="promtest"})') == 4
        assert prom.query_value('kairos_consumer_lag_messages{topic="promtest", partition="2"}') == 42
        assert prom.query_value("max(kairos_worker_up)") == 1
        by_reason = {
            r["metric"]["reason"]: float(r["value"][1])
            for r in prom.query('sum by (reason) (kairos_dead_letters_total{topic="promtest"})')
        }
        assert by_reason == {"bad_json": 3.0, "oversized": 1.0}

        # New increments show up at the next scrape.
        metrics_record.observe_dead_letter("bad_json", "promtest")
        metrics_record.observe_dead_letter("bad_json", "promtest")
        deadline = time.monotonic() + 15
        value = None
        while time.monotonic() < deadline:
            value = prom.query_value('kairos_dead_letters_total{topic="promtest", reason="bad_json"}')
            if value == 5:
                break
            time.sleep(0.3)
        assert value == 5
        health.set_recovering(False)
        targets = prom.targets_health()
        assert [t["health"] for t in targets] == ["up"]


def test_prometheus_helper_reports_a_bad_query(prometheus_available: None) -> None:
    from tests.support.prometheus import PrometheusError

    with PrometheusServer(["127.0.0.1:9"]) as prom, pytest.raises(PrometheusError):
        prom.query("sum(")

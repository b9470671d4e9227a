"""The worker on the broker decides exactly what the engine alone decides on the same recorded stream.

The engine's exactness tests (``tests/stream/test_real_model_replay.py``) cut one stream into
batches in-process. This one runs the whole worker (bulk reader, transactions, RocksDB, changelog,
the catalog read as a start-up bootstrap) on a simulated shop with the production decision path,
and compares its pushes and every stored row with :class:`stream.engine.Engine` fed the same
records in one call per partition. Only store bookkeeping (``\\x00meta``) is left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.scorer import IncrementalScorer
from stream.contract import CatalogUpdate, Event, to_json_bytes
from stream.engine import Engine, Inbound
from stream.partitioning import partition_for
from stream.settings import Settings
from stream.simulator import SimConfig, World
from tests.stream.fakes import DictState
from tests.support.worker import (
    PRODUCTION_DECISIONS,
    TEST_ENV,
    WorkerProcess,
    produce,
    read_topic,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.integration

# The production decision path (session ends, no push to active shoppers, send time) with a holdout
# whose ghosts teach the outcome estimates, short learning epochs and every trigger able to fire.
ENV = {
    **PRODUCTION_DECISIONS,
    "KAIROS_POLICY__HOLDOUT_SHARE": "0.3",
    "KAIROS_POLICY__LEARNING_EPOCH_SECONDS": "600",
    "KAIROS_POLICY__THRESHOLD": "0.02",
    "KAIROS_POLICY__MIN_THRESHOLD": "0.0",
}
APP_ID = "matches-engine"
STORE_BOOKKEEPING = b"\x00meta"


def _shop(n_events: int) -> tuple[list[CatalogUpdate], list[Event]]:
    """A simulated shop's catalog (start plus its changes during the stream) and its first events."""
    world = World(SimConfig(seed=29, n_users=200, n_items=600))
    catalog = world.initial_catalog()
    events: list[Event] = []
    while len(events) < n_events:
        for msg in world.advance(world.now + 3600.0):
            if isinstance(msg, Event) and len(events) < n_events:
                events.append(msg)
            elif isinstance(msg, CatalogUpdate):
                catalog.append(msg)
    return catalog, events


def _engine_alone(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, catalog: list[CatalogUpdate], events: list[Event]
) -> tuple[set[str], dict[tuple[int, bytes], bytes]]:
    """The engine in-process with the worker's settings: catalog as a bootstrap, one call per partition."""
    for name, value in {**TEST_ENV, **ENV}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    partitions = settings.topics.partitions
    engine = Engine(settings, IncrementalScorer.load(model_dir))
    engine.owned = set(range(partitions))
    store = DictState()
    records = [Inbound("catalog", 0, n, c.item_id.encode(), to_json_bytes(c)) for n, c in enumerate(catalog)]
    engine.apply_catalog(records, store, announce=False)  # the worker's start-up read: a bootstrap
    pushes: set[str] = set()
    for partition in range(partitions):
        mine = [e for e in events if partition_for(e.user_id.encode(), partitions) == partition]
        inbound = [
            Inbound("events", partition, offset, e.user_id.encode(), to_json_bytes(e))
            for offset, e in enumerate(mine)
        ]
        pushes |= {push.push_id for _, push in engine.process(inbound, store).pushes}
    return pushes, {k: v for k, v in store.data.items() if k[1] != STORE_BOOKKEEPING}


# The worker's own settings, which must not change a decision: the production defaults, and small
# batches with no user records kept warm, so that each batch reads users that the two batches before
# it wrote and whose commits are still in flight (stream.commit_pipeline).
WORKER_SETTINGS = {
    "defaults": {},
    "small-batches-cold-users": {
        "KAIROS_WORKER__BATCH_SIZE": "37",
        "KAIROS_WORKER__WARM_USERS_PER_PARTITION": "0",
        "KAIROS_WORKER__COMMIT_OVERLAP_MIN_BATCH": "1",  # every batch staged
    },
}


@pytest.mark.parametrize("worker_settings", sorted(WORKER_SETTINGS))
def test_the_worker_decides_and_stores_exactly_what_the_engine_alone_does(
    own_broker: str, model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, worker_settings: str
) -> None:
    catalog, events = _shop(2500)
    topics = settings_for(own_broker).topics
    produce(own_broker, topics.catalog, [(c.item_id.encode(), c) for c in catalog])
    produce(own_broker, topics.events, [(e.user_id.encode(), e) for e in events])
    env = {**ENV, **WORKER_SETTINGS[worker_settings]}
    worker = WorkerProcess(own_broker, tmp_path / "w", model_dir, env=env, app_id=APP_ID).start()
    try:
        worker.wait_ready()
        wait_for(lambda: worker.metric("kairos_events_total") >= len(events), 120, what="every event")
        assert worker.metric("kairos_dead_letters_total") == 0
        log = worker.tail_log(200_000)
    finally:
        worker.stop()
    assert "Traceback" not in log
    pushed = {json.loads(m.value())["push_id"] for m in read_topic(own_broker, topics.pushes, timeout=30)}
    latest: dict[tuple[int, bytes], bytes | None] = {}
    for m in read_topic(own_broker, f"{APP_ID}-user-state-changelog", timeout=30):  # the last one wins
        if m.key() != STORE_BOOKKEEPING:
            latest[(m.partition(), m.key())] = m.value()
    stored = {k: v for k, v in latest.items() if v is not None}  # a tombstone deletes

    expected_pushes, expected_rows = _engine_alone(model_dir, monkeypatch, catalog, events)
    assert len(expected_pushes) > 20, "the stream should make the engine push"
    assert pushed == expected_pushes
    assert stored.keys() == expected_rows.keys()
    differing = sorted(k for k in stored if stored[k] != expected_rows[k])
    assert not differing, f"{len(differing)} rows differ, first {differing[:3]}"

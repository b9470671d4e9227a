"""Erasure on request, end to end: ``kairos erase`` → consent tombstone → the owner deletes the user.

A real worker on the embedded broker holds a user with state, a pending cart timer and index
entries; ``kairos erase`` (the documented way for a shop to request erasure) writes a tombstone;
the worker deletes the user's record from RocksDB, writes a changelog tombstone, and a restarted
worker recovering from the changelog alone knows nothing of the user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stream.topics import changelog_topic
from tests.integration.test_worker import SCRIPTED_ENV, T0, _catalog, _event, _world
from tests.support.worker import ROOT, WorkerProcess, produce, read_topic, settings_for, wait_for

pytestmark = pytest.mark.integration


def _changelog(bootstrap: str, app_id: str) -> dict[bytes, bytes | None]:
    settings = settings_for(bootstrap)
    settings.worker.app_id = app_id
    latest: dict[bytes, bytes | None] = {}
    for msg in read_topic(bootstrap, changelog_topic(settings)):
        latest[msg.key()] = msg.value()
    return latest


def test_kairos_erase_deletes_the_user_everywhere(own_broker: str, model_dir: Path, tmp_path: Path) -> None:
    items = _catalog(own_broker, _world())
    state_dir = tmp_path / "state"
    worker = WorkerProcess(own_broker, state_dir, model_dir, SCRIPTED_ENV, app_id="erase").start()
    try:
        worker.wait_ready()
        topics = settings_for(own_broker).topics
        doomed, kept = "u-erase-me", "u-keep-me"
        events = [_event(i, doomed, "view", items[i], T0 + i) for i in range(5)]
        events.append(_event(5, doomed, "add_to_cart", items[1], T0 + 10))  # a pending timer
        events += [_event(10 + i, kept, "view", items[i], T0 + i) for i in range(5)]
        produce(own_broker, topics.events, events)
        wait_for(lambda: worker.metric("kairos_events_total") >= len(events), 60, what="events processed")
        wait_for(lambda: _changelog(own_broker, "erase").get(doomed.encode()), 30, what="the user's state")

        env = {**os.environ, "KAIROS_KAFKA__BOOTSTRAP_SERVERS": own_broker}
        done = subprocess.run(
            [sys.executable, "-m", "stream.cli", "erase", doomed],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert '"erase_requested": 1' in done.stdout

        wait_for(lambda: worker.metric("kairos_users_erased_total") == 1, 30, what="the erasure")
        log = _changelog(own_broker, "erase")
        assert doomed.encode() in log and log[doomed.encode()] is None  # a changelog tombstone
        assert log[kept.encode()] is not None
        assert worker.metric("kairos_dead_letters_total") == 0
        # An invalid id is refused before anything is written.
        bad = subprocess.run(
            [sys.executable, "-m", "stream.cli", "erase", "bad\x01id"], env=env, cwd=ROOT, capture_output=True
        )
        assert bad.returncode == 2
    finally:
        worker.stop()

    # Recovery from the changelog alone (local RocksDB deleted) brings back the kept user only.
    shutil.rmtree(state_dir)
    again = WorkerProcess(own_broker, state_dir, model_dir, SCRIPTED_ENV, app_id="erase").start()
    try:
        again.wait_ready(120)
        from rocksdict import Options, Rdict

        again.stop()  # RocksDB is locked while the worker runs
        found_kept = False
        for p in range(settings_for(own_broker).topics.partitions):
            path = state_dir / "erase" / f"p{p}"
            if not path.exists():
                continue
            db = Rdict(str(path), Options(raw_mode=True))
            try:
                assert db.get(doomed.encode()) is None
                if db.get(kept.encode()) is not None:
                    found_kept = True
            finally:
                db.close()
        assert found_kept
    finally:
        again.stop()

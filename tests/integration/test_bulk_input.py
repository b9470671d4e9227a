"""Bulk input on the broker: faust holds the group, librdkafka reads, offsets come from the state."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from stream.broker import EmbeddedBroker
from stream.contract import CatalogUpdate, Event
from stream.partitioning import partition_for
from stream.topics import ensure_topics
from tests.support.worker import WorkerProcess, produce, settings_for, wait_for

pytestmark = pytest.mark.integration

T0 = 1_780_315_200.0  # 2026-06-01 12:00 UTC


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets (next record to read) per partition; absent ones left out."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def test_bulk_reader_processes_every_event_and_the_group_offsets_follow_the_state(
    tmp_path: Path, model_dir: Path
) -> None:
    with EmbeddedBroker() as broker:
        settings = settings_for(broker.bootstrap)
        ensure_topics(settings)
        topics = settings.topics
        items = [f"item-{i}" for i in range(20)]
        produce(
            broker.bootstrap,
            topics.catalog,
            [
                (
                    i.encode(),
                    CatalogUpdate(
                        item_id=i, title=i, category="c", price=10.0, stock=5, updated_at=T0 - 3600
                    ),
                )
                for i in items
            ],
        )
        events = []
        for n in range(400):
            user = f"user-{n % 37}"
            event = Event(
                event_id=f"e-{n}", user_id=user, type="view", item_id=items[n % len(items)], ts=T0 + n
            )
            events.append((user.encode(), event))
        per_partition: dict[int, int] = {}
        for key, _ in events:
            p = partition_for(key, topics.partitions)
            per_partition[p] = per_partition.get(p, 0) + 1
        produce(broker.bootstrap, topics.events, events)

        worker = WorkerProcess(broker.bootstrap, tmp_path / "w", model_dir, app_id="bulk").start()
        try:
            worker.wait_ready()
            wait_for(lambda: worker.metric("kairos_events_total") >= len(events), 90, what="every event")
            # Offsets are committed after the fact (each tick) from the state: the next record to read.
            wait_for(
                lambda: (
                    _committed(broker.bootstrap, "bulk", topics.events, topics.partitions) == per_partition
                ),
                30,
                what="the group's offsets to reach the end of each partition",
            )
            log = worker.tail_log(200_000)
        finally:
            worker.stop()
        # A restart reads on from the state's applied offsets: nothing read twice.
        again = WorkerProcess(broker.bootstrap, tmp_path / "w", model_dir, app_id="bulk").start()
        try:
            again.wait_ready()
            wait_for(
                lambda: all(f"events[{p}]@" in again.tail_log(200_000) for p in per_partition),
                30,
                what="the reader's start on every partition",
            )
            restarted = again.tail_log(200_000)
        finally:
            again.stop()
    for p, n in per_partition.items():
        assert f"events[{p}]@{n}" in restarted
    assert "redelivered records already applied" not in restarted
    # A fresh state has no applied offsets: each input partition is read from the beginning (-2).
    assert all(f"events[{p}]@-2" in log and f"consent[{p}]@-2" in log for p in range(topics.partitions))
    # faust joined the group but never fetched the held inputs: its agent received nothing.
    assert "faust delivered" not in log
    assert "Traceback" not in log

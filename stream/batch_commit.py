"""Making a batch durable, in the order recovery relies on (``docs/architecture.md``).

Pushes, dead letters and decisions are produced and acknowledged first; then the changelog gets the
batch's state writes and, per partition, the pushes topic's offset those states account for, and is
acknowledged; only then is RocksDB written. A crash anywhere leaves RocksDB at or behind the
changelog, and pushes produced after the last changelog write are read back at recovery.
"""

from __future__ import annotations

import logging
import os
import time
from typing import NoReturn

from stream import metrics_record
from stream.contract import to_json_bytes
from stream.engine import Outcome
from stream.kafka_io import DeliveryError, Outbox
from stream.settings import Settings
from stream.store import META_KEY, PartitionMeta, Transaction
from stream.topics import changelog_topic
from stream.web import Health

log = logging.getLogger(__name__)


def exit_for_redelivery(what: str) -> NoReturn:
    """End the process at once (exit 70), logging ``what`` with the current exception's traceback.

    Like a kill -9: nothing acknowledges or commits the input in flight, so a restarted worker reads
    it again from its recovered state's offsets. For a failure after which the input path cannot go
    on without losing or repeating something.
    """
    log.critical("%s; exiting for a clean redelivery", what, exc_info=True)
    logging.shutdown()
    os._exit(70)


class BatchCommitter:
    """Commits the worker's batches through its outbox; reports the broker's health on the way."""

    def __init__(self, settings: Settings, outbox: Outbox, health: Health) -> None:
        self.topics = settings.topics
        self.changelog = changelog_topic(settings)
        self.outbox = outbox
        self.health = health

    def commit_or_die(self, outcome: Outcome, txn: Transaction) -> None:
        """Commit the batch, or end the process at once if its output cannot be made durable.

        faust acks a batch's records when the loop body ends, even by an exception, and would then
        commit their offsets: exiting here (like a kill -9) keeps them uncommitted, so a restarted
        worker gets them again. librdkafka has already retried for ``message.timeout.ms``.
        """
        try:
            self.commit(outcome, txn)
        except Exception:
            exit_for_redelivery("the batch's output could not be made durable")

    def commit(self, outcome: Outcome, txn: Transaction) -> None:
        """Produce the batch's output, then its state changes, then write RocksDB (see module doc)."""
        started = time.perf_counter()
        produced = self.produce_output(outcome)
        stage = outcome.stage_seconds
        acked = self.flush() if produced else {}
        observe_pushes(outcome)
        pushes_offsets = self.pushes_offsets(acked)
        t0 = time.perf_counter()
        stage["produce"] += t0 - started
        produced = self.produce_changelog(txn, pushes_offsets)
        changelog_acked = self.flush() if produced else {}
        stage["changelog"] += time.perf_counter() - t0
        self.write_store([outcome], txn, self.changelog_offsets(changelog_acked), pushes_offsets)

    def produce_output(self, outcome: Outcome) -> bool:
        """Queue the batch's pushes, dead letters and decisions; whether there was any."""
        t = self.topics
        for partition, push in outcome.pushes:
            self.outbox.produce(t.pushes, to_json_bytes(push), push.user_id.encode("utf-8"), partition)
        for dl in outcome.dead_letters:
            self.outbox.produce(
                t.dead_letters, to_json_bytes(dl), dl.original_key.encode() if dl.original_key else None
            )
        for partition, decision in outcome.decisions:
            self.outbox.produce(
                t.decisions, to_json_bytes(decision), decision.user_id.encode("utf-8"), partition
            )
        return bool(outcome.pushes or outcome.dead_letters or outcome.decisions)

    def produce_changelog(self, txn: Transaction, pushes_offsets: dict[int, int]) -> bool:
        """Queue the batch's state writes and, per partition, the pushes offset its states account for
        (only once the broker has acknowledged those pushes); whether there was any."""
        for partition, writes in txn.writes.items():
            self.outbox.produce_rows(self.changelog, writes, partition)
        for partition, offset in pushes_offsets.items():
            meta = PartitionMeta(pushes_offset=offset).to_bytes()
            self.outbox.produce(self.changelog, meta, META_KEY, partition)
        return bool(txn.writes or pushes_offsets)

    def acknowledged(self) -> bool:
        """Whether everything queued is acknowledged already (:meth:`flush` would not wait)."""
        return self.outbox.acknowledged()

    def flush(self) -> dict[tuple[str, int], int]:
        """Wait until the broker has acknowledged everything queued (the highest offsets per topic and
        partition since the last flush); the broker's health follows."""
        try:
            acked = self.outbox.flush()
        except DeliveryError:
            self.health.set_broker_ok(False)
            raise
        self.health.set_broker_ok(True)
        return acked

    def pushes_offsets(self, acked: dict[tuple[str, int], int]) -> dict[int, int]:
        """The pushes topic's offsets per partition in a flush's acknowledgements."""
        return {p: off for (topic, p), off in acked.items() if topic == self.topics.pushes}

    def changelog_offsets(self, acked: dict[tuple[str, int], int]) -> dict[int, int]:
        """The changelog's offsets per partition in a flush's acknowledgements."""
        return {p: off for (topic, p), off in acked.items() if topic == self.changelog}

    def write_store(
        self,
        outcomes: list[Outcome],
        txn: Transaction,
        changelog_offsets: dict[int, int],
        pushes_offsets: dict[int, int],
    ) -> None:
        """Write RocksDB once the changelog holds the batch (or batches: ``txn`` holds their writes,
        the later ones over the earlier), then count what each batch did."""
        started = time.perf_counter()
        txn.commit(changelog_offsets, pushes_offsets)
        outcomes[-1].stage_seconds["rocksdb"] += time.perf_counter() - started
        for outcome in outcomes:
            observe(outcome)


def observe_pushes(outcome: Outcome) -> None:
    """Count a batch's pushes and their latency from their events, once the broker holds them."""
    now = time.time()
    for _, push in outcome.pushes:
        metrics_record.observe_push(push.trigger, now - push.event_ts)


def observe(outcome: Outcome) -> None:
    """Count a committed batch's suppressions, dead letters, feedback and stage times (its pushes are
    counted when acknowledged, :func:`observe_pushes`)."""
    for (trigger, reason), n in outcome.suppressions.items():
        if n > 0:
            metrics_record.observe_suppression(trigger, reason, n)
    for dl in outcome.dead_letters:
        metrics_record.observe_dead_letter(dl.reason, dl.source_topic)
    for fb in outcome.feedback:
        metrics_record.observe_feedback(fb.trigger, fb.kind, fb.revenue)
    if outcome.interest:
        metrics_record.observe_interest(outcome.interest)
    metrics_record.observe_stages(outcome.stage_seconds)
    metrics_record.observe_removals(outcome.erasures, outcome.expired_users, outcome.catalog_removals)
    metrics_record.observe_user_loads(outcome.users_warm, outcome.users_read)
    metrics_record.observe_late_timers(outcome.late_timers)
    metrics_record.observe_arrival_asks_capped(outcome.arrival_asks_capped)
    metrics_record.observe_discovery_left_out(outcome.discovery_categories_left_out)

"""Batches committed in stages, so the broker's acknowledgements arrive while the engine works.

Most of a commit is waiting for the broker (``stream.batch_commit``): the pushes' acknowledgements
(the changelog records the pushes offset they give), then the changelog's (RocksDB is written only
after it). Done in a row, that is two round trips per batch in which the worker does nothing, and
at a low input rate most of a batch's time, which queues the events behind it. Staged, the worker
never waits for the broker while input is waiting:

1. after the engine, a batch's pushes, dead letters and decisions are queued (``produce_output``);
2. once the broker has acknowledged everything queued (looked at after each batch and each read
   that found nothing, never waited for), one flush takes the acknowledgements: the changelog of
   every batch whose output they cover is queued (their writes in order, then per partition the
   pushes offset just learned), and the group of batches whose changelog the flush before queued is
   written to RocksDB in one write per partition.

So the batches in flight are one group whose changelog is queued and the batches whose output was
queued since, and a flush's offsets are unambiguous: the pushes topic's belong to the latter, the
changelog's to the former. Each batch's transaction reads through the writes of the batches in flight
(``Transaction.below``), so the engine builds on exactly the state it would have read after their
commits. With :data:`MAX_IN_FLIGHT` batches in flight, the next one waits for the broker.

What keeps the guarantees of ``docs/architecture.md``: each batch's pushes are acknowledged before
its changelog is queued, its changelog before its RocksDB write, and batches move through the stages
in order, so a crash anywhere leaves the kinds of state a crash of the one-at-a-time commit can:
RocksDB at or behind the changelog, pushes past the stored pushes offset (now of several batches)
read back at recovery and met by the decisions made again. A failure ends the process (exit 70, like
a kill -9), so nothing is acknowledged past it. Everything else that commits, or reads or closes a
store outside a transaction (the tick, a failure's record-by-record retry and re-read, recovery, a
revocation, the shutdown), first completes the batches in flight (:meth:`CommitPipeline.settle`).
Everything runs on the event loop's thread: the broker's delivery reports, which call into Python
for each message, never wait for the interpreter lock.

Only bulk input stages its commits: it positions every partition from the state, never from the
group's committed offsets. faust's own reader commits a batch's offsets when its loop body ends, so
with it each batch is committed whole before the next (as with ``worker.commit_overlap`` off).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stream.batch_commit import BatchCommitter, exit_for_redelivery, observe_pushes
from stream.engine import Outcome
from stream.store import StateStore, Transaction

# Most batches in flight: a batch's reads walk the writes of each (a chain of dicts), and RocksDB and
# the changelog fall this many batches behind the engine.
MAX_IN_FLIGHT = 8


@dataclass
class _InFlight:
    """A batch between its engine work and its RocksDB write."""

    outcome: Outcome
    txn: Transaction


@dataclass
class _Group:
    """Batches whose changelog is queued together, with the pushes offsets it records."""

    batches: list[_InFlight]
    pushes_offsets: dict[int, int]


class CommitPipeline:
    """The worker's commits: whole (:meth:`commit`) or staged behind the next batches (:meth:`stage`)."""

    def __init__(
        self,
        commit: Callable[[Outcome, Transaction], None],
        committer: BatchCommitter,
        store: StateStore,
        stage_from: int | None,
    ) -> None:
        """``commit`` makes one batch durable whole or ends the process (the worker's
        ``_commit_or_die``); ``committer`` does the stages; ``stage_from`` is the smallest batch
        (records) :meth:`stage` stages, None for none."""
        self._commit = commit
        self._committer = committer
        self._store = store
        self.stage_from = stage_from
        self._changelog_queued: _Group | None = None
        self._output_queued: list[_InFlight] = []

    @property
    def in_flight(self) -> int:
        """Batches whose commit has begun but not ended."""
        queued = self._changelog_queued
        return len(self._output_queued) + (len(queued.batches) if queued is not None else 0)

    def transaction(self) -> Transaction:
        """A new transaction, reading through the writes of the batches in flight."""
        newest = self._newest()
        return Transaction(self._store, below=newest.txn if newest is not None else None)

    def _newest(self) -> _InFlight | None:
        if self._output_queued:
            return self._output_queued[-1]
        return self._changelog_queued.batches[-1] if self._changelog_queued is not None else None

    def commit(self, outcome: Outcome, txn: Transaction) -> None:
        """Commit a batch whole, after the batches in flight: durable when this returns."""
        self.settle()
        txn.below = None
        self._commit(outcome, txn)

    def stage(self, outcome: Outcome, txn: Transaction, records: int) -> None:
        """Begin the commit of a batch of ``records`` input records: queue its output, and move the
        batches in flight on if the broker has acknowledged them (waiting only when
        :data:`MAX_IN_FLIGHT` are). A batch under ``stage_from`` (the worker keeps up with its input:
        waiting then costs latency, not throughput), or any batch without staging
        (``worker.commit_overlap`` off, or faust input): :meth:`commit`."""
        if self.stage_from is None or records < self.stage_from:
            self.commit(outcome, txn)
            return
        try:
            while self.in_flight >= MAX_IN_FLIGHT:
                self._advance()
            started = time.perf_counter()
            self._committer.produce_output(outcome)
            outcome.stage_seconds["produce"] += time.perf_counter() - started
            self._output_queued.append(_InFlight(outcome, txn))
            self._advance_if_acknowledged()
        except Exception:
            exit_for_redelivery("the batch's output could not be made durable")

    def poll(self) -> None:
        """Move the batches in flight on if the broker has acknowledged them (never waits)."""
        try:
            self._advance_if_acknowledged()
        except Exception:
            exit_for_redelivery("the batch's output could not be made durable")

    def settle(self) -> None:
        """Complete every batch in flight (RocksDB written): a flush per stage left, at most two."""
        try:
            while self.in_flight:
                self._advance()
        except Exception:
            exit_for_redelivery("the batch's output could not be made durable")

    def _advance_if_acknowledged(self) -> None:
        if self.in_flight and self._committer.acknowledged():
            self._advance()

    def _advance(self) -> None:
        """One flush: the group whose changelog is queued is written to RocksDB; the batches whose
        output is queued become the next group, their changelog queued."""
        committer = self._committer
        started = time.perf_counter()
        acked = committer.flush()
        waited = time.perf_counter() - started
        written = self._changelog_queued
        if written is not None:
            written.batches[-1].outcome.stage_seconds["commit_wait"] += waited
            self._changelog_queued = None
            merged = Transaction(self._store)
            for batch in written.batches:  # in stream order: a later batch's write wins
                for partition, writes in batch.txn.writes.items():
                    merged.writes.setdefault(partition, {}).update(writes)
            committer.write_store(
                [b.outcome for b in written.batches],
                merged,
                committer.changelog_offsets(acked),
                written.pushes_offsets,
            )
            for batch in written.batches:
                batch.txn.writes = {}  # in RocksDB now; no one reads through them any more
            if self._output_queued:
                self._output_queued[0].txn.below = None
        elif self._output_queued:
            self._output_queued[-1].outcome.stage_seconds["commit_wait"] += waited
        if not self._output_queued:
            return
        started = time.perf_counter()
        group = _Group(self._output_queued, committer.pushes_offsets(acked))
        self._output_queued = []
        last = group.batches[-1]
        for batch in group.batches:
            observe_pushes(batch.outcome)  # on the topic now
            committer.produce_changelog(batch.txn, group.pushes_offsets if batch is last else {})
        self._changelog_queued = group
        last.outcome.stage_seconds["changelog"] += time.perf_counter() - started

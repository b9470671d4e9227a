"""The worker's partitions: ownership through faust's rebalances, and recovery before serving.

:class:`RecoveryMixin` gives :class:`stream.app.Worker` what happens when the group's assignment
changes: partitions that left are dropped (their store closed, their engine state released), those
that arrived are recovered by one loop (RocksDB caught up with the changelog, the pushes emitted after
the last changelog write reconciled, the partition's shared state loaded) and only then served.
Each assignment of a partition has an epoch, so a recovery started for an older one knows its result
is stale. The replays themselves are ``stream.recovery``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from faust.types import TP

from stream import metrics, metrics_record
from stream.engine import Outcome
from stream.recovery import read_pushes, replay_changelog
from stream.store import Transaction
from stream.worker_parts import WorkerParts

log = logging.getLogger(__name__)


class RecoveryMixin(WorkerParts):
    """Worker mixin: assignments, dropped partitions and the recovery loop."""

    # faust (aiokafka) rebalances eagerly: every member is told "revoked: everything" and then
    # "assigned: the new assignment". A partition kept across a rebalance keeps its store, its
    # timers and its ready state (no re-read); one that left is dropped at the assignment that no
    # longer lists it; one that arrived is recovered by the single recovery loop below.

    async def _on_assigned(self, app: faust.App, assigned: set[TP], **_: Any) -> None:
        self.on_assignment({(tp.topic, tp.partition) for tp in assigned})

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        # Until the next assignment another member may take these partitions: no timer or catalog
        # writes from here (see _tick). State is dropped at the assignment, only for what moved.
        # The batches in flight are made durable first: the next owner's recovery must find them.
        self.commits.settle()
        self._rebalancing = True
        self._assigned_event.clear()
        self._revoked_at = time.monotonic()
        self.lag.on_revoked((tp.topic, tp.partition) for tp in revoked)

    def on_assignment(self, assigned: set[tuple[str, int]]) -> None:
        """Apply a new assignment (all of it): drop what left, start recovering what arrived."""
        parts = {p for topic, p in assigned if topic == self.topics.events}
        # Only our inputs: faust's assignor also assigns its internal "<app>-__assignor-__leader".
        self.lag.on_assigned(tp for tp in assigned if tp[0] in self._inputs)
        gone, new = self._owned - parts, sorted(parts - self._owned)
        self._owned = parts  # before the drop: a store is closed only once nothing owns or reads it
        self._drop(gone)
        for p in new:
            self._epochs[p] = self._epochs.get(p, 0) + 1
            self._recovering[p] = self._epochs[p]
            self._ready_partitions[p] = asyncio.Event()
        self._rebalancing = False
        self._assigned_event.set()
        if self._revoked_at is not None:
            pause = time.monotonic() - self._revoked_at
            self._revoked_at = None
            metrics.REBALANCE_PAUSE_SECONDS.observe(pause)
            log.info("rebalance: consumption paused %.2fs (revocation to assignment)", pause)
        self.health.set_assigned(True)
        self._update_recovery_health()
        if new:
            self._recovery_wakeup.set()
        log.info("assigned partitions %s (new: %s)", sorted(parts), new)

    def _close_if_unused(self, partition: int) -> None:
        """Close a partition's store unless it is owned (the latest assignment), in a recovery round or
        being re-read after a failure (``stream.worker_input``): the round or the re-read, which read it
        in threads, call this again when done. The one rule for closing a store before shutdown."""
        if partition not in self._owned | self._in_recovery | self._reloading:
            self.store.close(partition)

    def _drop(self, partitions: set[int]) -> None:
        """Forget partitions this worker no longer owns, even mid-recovery."""
        if not partitions:
            return
        self.commits.settle()  # batches in flight may still write to their stores
        for p in partitions:
            self._epochs[p] = self._epochs.get(p, 0) + 1  # a running recovery's result is now stale
            self._recovering.pop(p, None)
            event = self._ready_partitions.pop(p, None)
            if event is not None:
                event.set()  # release batches waiting on it; _consume then skips their records
            self._close_if_unused(p)  # else the recovery round or reload reading it closes it when done
        if self.reader is not None:
            self.reader.unassign((t, p) for t in sorted(self._inputs) for p in partitions)
        for tp in [tp for tp in self._group_committed if tp[1] in partitions]:
            del self._group_committed[tp]
        if self.engine is not None:
            self.engine.release(partitions)
        log.info("released partitions %s", sorted(partitions))

    def _current(self, partition: int, epoch: int) -> bool:
        """Whether a recovery for (partition, epoch) is still wanted."""
        return partition in self._owned and self._epochs.get(partition) == epoch

    def _update_recovery_health(self) -> None:
        recovering = len(self._recovering)
        metrics.OWNED_PARTITIONS.set(len(self._owned))
        metrics.RECOVERING_PARTITIONS.set(recovering)
        metrics_record.set_recovery(recovering > 0, 0)
        self.health.set_recovering(self._still_recovering())

    async def _recovery_loop(self) -> None:
        """Recover assigned partitions, one round at a time, retrying failures with backoff.

        Never ends while the worker runs: an error (broker down, replay timeout, a store that
        cannot be opened) is logged, counted in ``kairos_recovery_errors_total`` and retried after
        ``recovery_retry_seconds``, doubling up to ``recovery_retry_max_seconds``. A partition
        revoked meanwhile is simply no longer in ``_recovering`` at the next round.
        """
        wk = self.settings.worker
        delay = wk.recovery_retry_seconds
        while not self._stop.is_set():
            if not self._recovering:  # an assignment may have come before this task started
                await self._recovery_wakeup.wait()
            self._recovery_wakeup.clear()
            while self._recovering and not self._stop.is_set():
                batch = dict(self._recovering)
                self._in_recovery = set(batch)
                started = time.monotonic()
                try:
                    await self._recover(batch)
                    delay = wk.recovery_retry_seconds
                    metrics.RECOVERY_SECONDS.observe(time.monotonic() - started)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - whatever failed is retried
                    metrics.RECOVERY_ERRORS.inc()
                    log.exception("recovery of partitions %s failed; retrying in %.1fs", sorted(batch), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, wk.recovery_retry_max_seconds)
                finally:
                    self._in_recovery = set()
                    for p in batch:  # revoked during the round: its store was left open for us
                        self._close_if_unused(p)
                    self._update_recovery_health()

    async def _recover(self, batch: dict[int, int]) -> None:
        """Catch local RocksDB up with the changelog, reconcile pushes, then open the partitions.

        ``batch``: partition -> the epoch its recovery is for. Long work (changelog and pushes
        replays, reading every stored user) runs in threads; the loop only applies the results.
        """
        while self.engine is None:  # recovery needs the model's engine to adopt timers
            await asyncio.sleep(0.2)
            if self.watcher.poll() is not None:
                self._adopt_model(self.watcher.current)
        started = time.monotonic()
        stores = {p: self.store.open(p) for p in batch if self._current(p, batch[p])}
        if not stores:
            return

        def still_wanted(p: int) -> bool:
            # Read from a thread: a dict lookup and a set test, safe under the GIL.
            return not self._stop.is_set() and self._current(p, batch[p])

        applied = await asyncio.to_thread(
            replay_changelog, self.settings, self.changelog, stores, still_wanted
        )
        wanted = {p: s for p, s in stores.items() if still_wanted(p)}
        starts = {p: s.meta.pushes_offset + 1 for p, s in wanted.items()}
        pushes = await asyncio.to_thread(read_pushes, self.settings, self.topics.pushes, starts)
        for p, pstore in wanted.items():
            if not self._current(p, batch[p]):
                continue
            loaded = await asyncio.to_thread(self.engine.load_partition, p, pstore)
            if not self._current(p, batch[p]):
                continue  # revoked while loading: not adopted
            # Adopt first: reconciling pushes saves users, and a saved user's timers come from the
            # partition's loaded timer queue (nothing runs on the loop between the two).
            self.engine.adopt(p, loaded)
            users = loaded.users_loaded
            txn = Transaction(self.store)
            n_pushes = self.engine.apply_recovered_pushes(p, pushes.get(p, []), txn)
            if txn.writes:
                self.commits.settle()  # one commit at a time uses the outbox
                try:
                    self.committer.commit(Outcome(), txn)
                except Exception:
                    self.engine.release([p])  # retried from the store in the next round
                    raise
            pstore.ready = True
            self._recovering.pop(p, None)
            if self.reader is not None:
                self.reader.assign(self._read_starts(p))
            event = self._ready_partitions.get(p)
            if event is not None:
                event.set()
            log.info(
                "partition %d ready: %d changelog records applied, %d users, %d pushes reconciled",
                p,
                applied.get(p, 0),
                users,
                n_pushes,
            )
            self._update_recovery_health()
        log.info("recovery of %s took %.2fs", sorted(batch), time.monotonic() - started)

    def _still_recovering(self) -> bool:
        """Not ready while an owned partition's state or the catalog is still being loaded."""
        catalog_ready = self._catalog_ready is not None and self._catalog_ready.is_set()
        return bool(self._recovering) or not catalog_ready

    def _read_starts(self, partition: int) -> dict[tuple[str, int], int | None]:
        """Where the bulk reader starts on a recovered partition: after each input's applied offset."""
        assert self.engine is not None
        offsets = self.engine.part(partition).offsets
        return {
            (topic, partition): (offsets[topic] + 1 if topic in offsets else None)
            for topic in sorted(self._inputs)
        }

"""The worker's periodic work: one faust timer for everything that is not an input batch.

:class:`TickMixin` gives :class:`stream.app.Worker` its tick: a new model is adopted, gauges are
published, applied input offsets are written to the group (bulk input), the catalog read by its own
thread is applied (the first full read is a bootstrap: it announces nothing on arrival, and logs
the changes the partitions' stored announced-until has not reached), and, once the catalog is read,
the engine's tick announces the changes the clock passed, fires due timers and sweeps expired users.
The tick never raises: each stage's error is logged and counted (``kairos_tick_errors_total``), and
the tick goes on.

The catalog records read since the last tick are applied in order, in slices of about
:data:`CATALOG_SLICE_SECONDS` each, committed one by one, and the event loop runs between slices: a
producer that publishes thousands of records at once (a season's import, a broken producer) never
holds the loop, its heartbeats and the health endpoint for long. A rebalance that begins between
slices stops the tick; the rest of the records wait, in order, for a later one. So does a shutdown
(faust's timer runs on while the worker closes its stores): the next start reads the catalog again.
A slice the engine fails on is retried record by record from the state before it, the bad record
dead-lettered (:meth:`TickMixin._apply_catalog_safely`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from typing import Any

from stream import metrics, metrics_record
from stream.batch_commit import exit_for_redelivery
from stream.bulk_input import group_offsets
from stream.contract import ContractError
from stream.engine import CatalogFailure, Inbound, Outcome, refused
from stream.kafka_io import consume_forever
from stream.store import Transaction
from stream.worker_parts import WorkerParts

log = logging.getLogger(__name__)

# The catalog inbox is applied in slices of about this many seconds each, the event loop running between
# them (TickMixin._apply_catalog_backlog); the first slice of a tick has CATALOG_SLICE_FIRST records.
CATALOG_SLICE_SECONDS = 0.2
# Catalog records read and not applied yet, at most (the reader waits beyond): a catalog topic of
# millions of records (a storm of updates not yet compacted) is never held in memory whole.
CATALOG_INBOX_RECORDS = 20_000
CATALOG_SLICE_FIRST = 16
# How long the content preparation waits when it found nothing to encode (TickMixin._prepare_content_loop).
PREPARE_IDLE_SECONDS = 0.2
CATALOG_SLICE_MAX = 4096


def next_slice_size(size: int, took: float) -> int:
    """Records in the next slice of the catalog backlog, after one of ``size`` records took ``took``
    seconds: about :data:`CATALOG_SLICE_SECONDS` worth, at most four times as many, 1 to
    :data:`CATALOG_SLICE_MAX`."""
    return max(1, min(CATALOG_SLICE_MAX, 4 * size, int(size * CATALOG_SLICE_SECONDS / max(took, 1e-4))))


class TickMixin(WorkerParts):
    """Worker mixin: the periodic tick, the catalog reader and the gauges."""

    async def _commit_group_offsets(self) -> None:
        """Write the applied input offsets to the group (bulk input): for lag dashboards only."""
        if self.engine is None or self._rebalancing:
            return
        applied: dict[tuple[str, int], int] = {}
        for p in sorted(self._owned):
            if self._serving(p) and p not in self._reloading:  # a reloading one's offsets may be ahead
                for topic, offset in self.engine.part(p).offsets.items():
                    if topic in self._inputs and self._group_committed.get((topic, p)) != offset:
                        applied[(topic, p)] = offset
        consumer: Any = self.app.consumer  # faust's explicit-offsets commit (ThreadDelegateConsumer)
        if applied and await consumer._commit(group_offsets(applied)):
            self._group_committed.update(applied)

    async def _tick(self) -> None:
        """Periodic work; never raises: each stage's error is logged, counted and the tick goes on.

        faust stops a timer whose callback raises, and a dead tick would leave catalog updates,
        timers and gauges unapplied while the consume loop still looks healthy.
        """
        self.health.beat()
        # The group's offsets below are read from the engine, which may be batches ahead of the stores.
        self.commits.settle()
        try:
            scorer = self.watcher.poll()
            if scorer is not None:
                self._adopt_model(scorer)
        except Exception:  # noqa: BLE001
            self._tick_error("model")
        try:
            self._publish_gauges()
        except Exception:  # noqa: BLE001
            self._tick_error("gauges")
        if self.reader is not None:
            try:
                await self._commit_group_offsets()
            except Exception:  # noqa: BLE001
                self._tick_error("offsets")
        if self.engine is None or not self._engine_work_allowed():
            return
        caught_up = self._catalog_read.is_set()  # read before draining: all of it is in the inbox then
        self._drain_catalog_inbox()
        if self._catalog_backlog and not await self._apply_catalog_backlog():
            # A rebalance or a failure's re-read began while the loop ran: the rest of the catalog, and
            # the timers, wait for a later tick.
            return
        if (
            caught_up
            and not self._catalog_backlog
            and self._catalog_ready is not None
            and not self._catalog_ready.is_set()
        ):
            self._catalog_ready.set()
            self.health.set_recovering(self._still_recovering())
            log.info("catalog loaded: %d items", len(self.engine.catalog))
            self._freeze_long_lived()
        if self._catalog_ready is not None and not self._catalog_ready.is_set():
            # Still reading the catalog: timers would decide on part of it, and announcing the changes
            # read so far would move the partitions' announced-until past those still to come.
            return
        txn = self.commits.transaction()
        outcome = Outcome()
        try:  # only adopted partitions have timers in the engine: recovering ones wait
            ticked = self.engine.tick(txn)
            metrics_record.observe_input_updates(content_items=ticked.content_items_added)
            outcome.extend(ticked)
        except Exception:  # noqa: BLE001 - the timers popped are lost for this run; state stays
            self._tick_error("timers")
        self._commit_if_any(outcome, txn)

    def _engine_work_allowed(self) -> bool:
        """Whether the tick may touch the engine's state now (catalog slices, timers): not during a
        rebalance (another member may own the partitions), not while a partition is re-read from its
        store after a failure (its engine state may hold a failed attempt's changes,
        ``stream.worker_input``), and not once the worker is shutting down (its stores close while
        faust's timer still runs)."""
        return (
            self.engine is not None
            and not self._rebalancing
            and not self._reloading
            and not self._stop.is_set()
        )

    def _commit_if_any(self, outcome: Outcome, txn: Transaction) -> None:
        """Commit the tick's work when it has output or writes; else only count what is counted at a
        commit without any (users a new item left out at the hourly bound: it asked no one; categories
        a discovery pool left out)."""
        if txn.writes or outcome.pushes or outcome.dead_letters:
            # A broker that cannot take the output ends the process (redelivery after restart),
            # exactly as for an event batch; anything else is the tick's own error.
            self.commits.commit(outcome, txn)
        else:
            metrics_record.observe_arrival_asks_capped(outcome.arrival_asks_capped)
            metrics_record.observe_discovery_left_out(outcome.discovery_categories_left_out)
            metrics_record.observe_user_loads(outcome.users_warm, outcome.users_read)

    async def _apply_catalog_backlog(self) -> bool:
        """Apply the catalog records read so far, in order, a slice at a time, each slice committed on
        its own; the event loop runs between slices (heartbeats, health, input batches).

        A slice is sized so that it takes about :data:`CATALOG_SLICE_SECONDS` (the first of a tick has
        :data:`CATALOG_SLICE_FIRST` records, the next ones scale with the time the last one took): a
        burst of thousands of catalog records never holds the loop for long. Returns False when the
        engine went away, a rebalance began, a partition is being re-read after a failure
        (``stream.worker_input``) or the worker began shutting down between slices: what is left waits
        in the backlog, and a later tick goes on with it (in order; after a shutdown, the next start
        reads the catalog again).
        """
        backlog = self._catalog_backlog
        size = CATALOG_SLICE_FIRST
        while backlog:
            if not self._engine_work_allowed():
                return False
            # The first full read of the catalog (at every start) is a bootstrap, not a change: it fills
            # the view and announces nothing, or a restarted worker would take every promoted item for
            # a new promotion (it has no previous version to compare with). The catalog is ready only
            # once the backlog is empty, so a bootstrap never shares a slice with changes.
            announce = self._catalog_ready is not None and self._catalog_ready.is_set()
            records = [backlog.popleft() for _ in range(min(size, len(backlog)))]
            started = time.perf_counter()
            applied, whole = await self._apply_catalog_safely(records, announce)
            metrics_record.observe_input_updates(
                catalog=applied.catalog_updates,
                catalog_late=applied.catalog_late,
                content_items=applied.content_items_added,
            )
            if not whole:  # stopped while a failure's partitions were re-read: the rest waits
                return False
            size = next_slice_size(size, time.perf_counter() - started)
            if not backlog and not announce:
                # Still the start-up read: take what the reader has read meanwhile (it waits while the
                # inbox is full), so the bootstrap goes on at the rate it is applied, not a tick's worth.
                self._drain_catalog_inbox()
            if backlog:
                self.health.beat()  # the tick is alive: it lets the loop run
                await asyncio.sleep(0)
        return self._engine_work_allowed()  # a failure's re-read may have let a rebalance begin

    async def _prepare_content_loop(self) -> None:
        """Encode the titles of the items the model places next, in a thread, while there are any.

        Placement (the engine's, on the event loop) then finds them in the encoder's cache: a catalog
        of thousands of items the model lacks (at every start, after a model swap) costs the loop
        little instead of 5-30 ms per item (:meth:`stream.engine.Engine.content_preparation`).
        """
        while not self._stop.is_set():
            encoded = 0
            try:
                work = self.engine.content_preparation() if self.engine is not None else None
                if work is not None:
                    encoded = await asyncio.to_thread(work)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - placement encodes what was not prepared: nothing is lost
                self._tick_error("content")
            if not encoded:
                await asyncio.sleep(PREPARE_IDLE_SECONDS)

    def _drain_catalog_inbox(self) -> None:
        """Move what the catalog reader has read (at most :data:`CATALOG_INBOX_RECORDS`) to the backlog."""
        inbox, backlog = self._catalog_inbox, self._catalog_backlog
        for _ in range(CATALOG_INBOX_RECORDS):
            try:
                backlog.append(inbox.get_nowait())
            except queue.Empty:
                return

    def _tick_error(self, stage: str) -> None:
        metrics.TICK_ERRORS.labels(stage).inc()
        log.exception("tick stage %s failed; the tick goes on", stage)

    async def _apply_catalog_safely(self, records: list[Inbound], announce: bool) -> tuple[Outcome, bool]:
        """Apply and commit a slice of catalog records; one the engine fails on is dead-lettered
        (``processing_error``). Returns what was applied and whether all of it was: not when the worker
        stopped meanwhile (a rebalance or a shutdown while a failure's partitions were re-read), the
        rest then back at the front of the backlog.

        Like :meth:`_process_isolated` for events: the slice first, then, when the engine fails on it,
        one record at a time, so a bad record cannot stop the catalog (every worker re-reads it from
        offset 0 at start), and every other record is applied and announced as if the bad one had never
        been there. The engine rolls a failed slice back engine-wide (``CatalogFailure``: the catalog
        view, the items waiting for placement); the partitions it had begun announcing to are re-read
        from the store, as the input path does (:meth:`_reload_partitions`), since their in-memory state
        holds part of the failed attempt while its writes are dropped.
        """
        engine = self.engine
        assert engine is not None
        txn = self.commits.transaction()
        try:
            applied = engine.apply_catalog(records, txn, announce)
        except Exception as exc:  # noqa: BLE001 - the slice is retried record by record
            self._tick_error("catalog")
            return await self._apply_catalog_isolated(records, announce, self._touched_by(exc))
        self._commit_if_any(applied, txn)
        return applied, True

    def _touched_by(self, failure: Exception) -> set[int]:
        """The partitions whose in-memory state a failed ``apply_catalog`` may have changed: those
        ``CatalogFailure`` names, or, for any other error (not raised through the engine's rollback),
        every owned one."""
        if isinstance(failure, CatalogFailure):
            return set(failure.partitions)
        return set(self.engine.owned) if self.engine is not None else set()

    async def _apply_catalog_isolated(
        self, records: list[Inbound], announce: bool, touched: set[int]
    ) -> tuple[Outcome, bool]:
        """Apply and commit records one at a time after the slice failed, the partitions a failure
        ``touched`` re-read first; see :meth:`_apply_catalog_safely`.

        Each record is committed before the next, so a re-read after a failure finds the records before
        it in the store. While a partition is re-read (in a thread) input batches of it wait
        (``stream.worker_input``); batches of other partitions go on, with the catalog view as it was
        before the slice, as they might have before the slice anyway. The records left when a
        rebalance, a shutdown or an input batch's own re-read began meanwhile go back to the front of
        the backlog, for a later tick.
        """
        engine = self.engine
        assert engine is not None
        total = Outcome()
        for k, rec in enumerate(records):
            if touched:
                await self._reload_or_exit(touched)
                self.health.beat()  # the tick is alive: a re-read can take seconds
                touched = set()
            # Not while a rebalance, a shutdown or an input batch's own re-read began during this one.
            if not self._engine_work_allowed() or self.engine is not engine:
                self._catalog_backlog.extendleft(reversed(records[k:]))
                return total, False
            txn = self.commits.transaction()
            try:
                outcome = engine.apply_catalog([rec], txn, announce)
            except Exception as exc:  # noqa: BLE001 - isolate whatever failed
                where = (rec.topic, rec.partition, rec.offset)
                self._log_failure("catalog record %s[%d]@%d failed; dead-lettered", *where)
                touched = self._touched_by(exc)
                cause = exc.error if isinstance(exc, CatalogFailure) else exc
                error = ContractError("processing_error", f"{type(cause).__name__}: {cause}"[:500])
                txn = self.commits.transaction()  # the failed attempt's writes are dropped
                outcome = Outcome()
                outcome.dead_letters.append(refused(rec, error, self.settings))
            self._commit_if_any(outcome, txn)
            total.extend(outcome)
        if touched:
            await self._reload_or_exit(touched)
        return total, True

    async def _reload_or_exit(self, partitions: set[int]) -> None:
        """Re-read partitions after a failed catalog slice (:meth:`_reload_partitions`), or end the
        process when that fails (exit 70, as the input path does): their in-memory state would go on
        holding part of the failed attempt, and a dead tick would stop the catalog and the timers.
        A restarted worker recovers them from the changelog and reads the catalog again."""
        try:
            await self._reload_partitions(partitions)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - whatever failed: see above
            exit_for_redelivery(
                f"partitions {sorted(partitions)} could not be re-read after a failed catalog slice"
            )

    def _publish_gauges(self) -> None:
        consumer = self.app.consumer
        assignment = [tp for tp in consumer.assignment() if tp.topic in self._inputs]
        self.lag.set_assignment((tp.topic, tp.partition) for tp in assignment)
        # faust's committed offsets (read from the group at assignment, then its own commits):
        # a partition that arrived with nothing new to read has lag 0, not its high-watermark.
        committed: dict[Any, int | None] = getattr(consumer, "_committed_offset", {})
        probed = self._probed_ends
        for tp in assignment:
            self.lag.on_position(tp.topic, tp.partition, committed.get(tp))
            self.lag.on_high_watermark(tp.topic, tp.partition, consumer.highwater(tp))
            self.lag.on_high_watermark(tp.topic, tp.partition, probed.get((tp.topic, tp.partition)))
        self.lag.publish()
        self.health.set_work_pending(self._work_pending())
        keys = sum(p.estimated_keys() for p in list(self.store.partitions.values()) if p.ready)
        size = sum(p.estimated_bytes() for p in list(self.store.partitions.values()) if p.ready)
        metrics_record.set_state_size("users", keys, size)
        if self.engine is not None:
            metrics.CONTENT_ITEMS_WAITING.set(len(self.engine.unplaced))

    def _work_pending(self) -> bool:
        """Whether a recovered, owned partition has records the consume loop should be processing.

        Not while there is no model or the catalog is still loading: batches wait for those on
        purpose (the worker is alive and not ready), and a restart would not help.
        """
        if self.engine is None or self._catalog_ready is None or not self._catalog_ready.is_set():
            return False
        return any(lag > 0 and self._serving(p) for (_, p), lag in self.lag.lags().items())

    def _read_catalog(self) -> None:
        def on_message(msg: Any) -> None:
            record = Inbound(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
            while not self._stop.is_set():
                try:  # a full inbox holds the reader back (librdkafka stops fetching at its own bound)
                    self._catalog_inbox.put(record, timeout=0.5)
                    return
                except queue.Full:
                    continue

        while not self._stop.is_set():
            try:
                consume_forever(
                    self.settings, self.topics.catalog, on_message, self._stop.is_set, self._catalog_read.set
                )
            except Exception:  # noqa: BLE001 - keep following the catalog whatever happens
                log.exception("catalog reader failed; retrying in 1 s")
                time.sleep(1.0)

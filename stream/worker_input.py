"""The worker's input path: batches of input records processed by the engine and made durable.

:class:`InputMixin` gives :class:`stream.app.Worker` its hot path: the records arrive from faust's agent
(``worker.input_reader = faust``) or from the bulk reader (``bulk``, ``stream.bulk_input``), wait for
their partition's recovery and the catalog, skip what the recovered state already accounts for, go
through the engine in one batch, and are committed (``stream.batch_commit``) before the next batch. A
batch that breaks the engine is retried record by record, and a record that still fails is
dead-lettered, so one bad record never stops its partition.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust

from stream import metrics_record
from stream.batch_commit import exit_for_redelivery
from stream.contract import ContractError
from stream.engine import Inbound, Outcome, refused
from stream.store import Transaction
from stream.worker_parts import WorkerParts

log = logging.getLogger(__name__)

# The bulk reader's wait for a first record while commits are in flight (``stream.commit_pipeline``).
IN_FLIGHT_READ_SECONDS = 0.002


class InputMixin(WorkerParts):
    """Worker mixin: the input batches, from either reader to the commit."""

    async def _consume(self, stream: faust.StreamT) -> None:
        """faust's agent on the inputs: the per-record path (``worker.input_reader = faust``).

        With bulk input faust never fetches the inputs (``stream.bulk_input.HeldInputConsumer``),
        so this agent only keeps them in faust's subscription and receives nothing.
        """
        wk = self.settings.worker
        batches = stream.take_events(wk.batch_size, within=wk.batch_wait_seconds)  # type: ignore[attr-defined]
        async for events in batches:
            records = [
                Inbound(
                    e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value
                )
                for e in events
            ]
            if self._bulk:
                log.error(
                    "faust delivered %d input records while bulk input reads them; ignored", len(records)
                )
                continue
            await self._handle_or_exit(records)

    async def _bulk_loop(self) -> None:
        """Read the inputs in batches (stream/bulk_input.py) and hand them to :meth:`_handle`.

        A read sees the reader's assignment as it stood when the read began; a partition that was
        dropped meanwhile has a new epoch, and its records (from before the move) are discarded: a
        later assignment reads them again from the recovered state's offsets.
        """
        assert self.reader is not None
        reader = self.reader
        wk = self.settings.worker
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            epochs = dict(self._epochs)
            # With commits in flight, look at the broker's acknowledgements between short reads: an
            # idle input completes them within a few round trips, never waiting on the loop.
            timeout = IN_FLIGHT_READ_SECONDS if self.commits.in_flight else 0.2
            try:
                records = await loop.run_in_executor(self._reader_thread, reader.read, wk.batch_size, timeout)
            except RuntimeError:  # the executor shut down: the worker is stopping
                return
            if not records:
                self.commits.poll()
                continue
            metrics_record.observe_stages({"read": reader.take_read_seconds()})
            await self._until_assigned()
            records = [r for r in records if self._epochs.get(r.partition) == epochs.get(r.partition)]
            if records:
                await self._handle_or_exit(records)

    async def _until_assigned(self) -> None:
        """Wait out a rebalance under way: from a revocation to the next assignment another member may
        own (and be recovering) any partition, so no batch is written meanwhile."""
        while self._rebalancing:
            await self._assigned_event.wait()

    async def _until_reloaded(self, partitions: set[int]) -> None:
        """Wait until none of ``partitions`` is being re-read from its store after a failure
        (:meth:`_reload_partitions`): the re-read replaces the engine's state of the partition, so
        nothing may change it meanwhile."""
        while self._reloading & partitions:
            await self._reloaded.wait()

    async def _handle_or_exit(self, records: list[Inbound]) -> None:
        """:meth:`_handle`, or the end of the process when it raises (exit 70, a clean redelivery).

        Records the engine fails on are dead-lettered inside; what escapes is a failure of the path
        itself (a partition's store that no longer reads during a re-read, say). Left to itself it
        would end the input loop silently (faust's agent, or the bulk loop's task) while the process
        stayed up until the consume-stall check gave up on it; and the batch's records, read but
        neither applied nor dead-lettered, must not be skipped by carrying on.
        """
        try:
            await self._handle(records)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - whatever escaped: see above
            exit_for_redelivery(f"a batch of {len(records)} input records could not be processed")

    async def _handle(self, records: list[Inbound]) -> None:
        """Process one batch of input records and make its output and state durable."""
        partitions = {r.partition for r in records}
        for p in partitions:
            ready = self._ready_partitions.get(p)
            if ready is not None and not ready.is_set():
                await ready.wait()  # set when recovered, or when the partition is revoked
        while self.engine is None:
            await asyncio.sleep(0.1)
        if self._catalog_ready is not None and not self._catalog_ready.is_set():
            await self._catalog_ready.wait()  # decisions need stock, prices and promotions
        # A rebalance may have begun while the batch waited, and the tick may be re-reading some of its
        # partitions from their stores after a failed catalog slice: either may begin while the other
        # is waited out.
        while self._rebalancing or self._reloading & partitions:
            await self._until_assigned()
            await self._until_reloaded(partitions)
        # Records of a partition this worker no longer owns (revoked while they waited) belong
        # to its new owner, which reads them again from its recovered state's offsets.
        if not all(self._serving(p) for p in partitions):
            records = [r for r in records if self._serving(r.partition)]
        if not records:
            return
        # Input read again after a revocation or a crash (faust forgets offsets acked since its last
        # commit; the bulk reader restarts from the state) is already accounted for by the state.
        # Skipping it keeps dead letters (which have no other dedupe) to one per malformed record.
        fresh = [r for r in records if not self.engine.applied(r)]
        if len(fresh) < len(records):
            log.info("skipped %d redelivered records already applied", len(records) - len(fresh))
        started = time.perf_counter()
        txn = self.commits.transaction()  # reads through the writes of the batches in flight
        if not fresh:
            outcome = Outcome()
        else:
            try:
                outcome = self.engine.process(fresh, txn)
            except Exception:
                self._log_failure("a batch of %d records failed; retrying them one by one", len(fresh))
                outcome = await self._process_isolated(fresh)
            else:
                # No await between the engine's work and this: anything else that reads the state
                # must find this batch's writes in flight, as the tick's transaction does.
                self.commits.stage(outcome, txn, len(records))
        elapsed = time.perf_counter() - started
        metrics_record.observe_events(outcome.events, elapsed / max(len(records), 1))
        metrics_record.observe_input_updates(consent=outcome.consent_updates)
        self.lag.on_processed_batch((r.topic, r.partition, r.offset) for r in records)
        self.health.batch_done()

    def _log_failure(self, message: str, *args: object) -> None:
        """Log a failure with its traceback, within the failure log budget (``stream.logs.LogBudget``):
        records (events, consent, catalog) that keep hitting one bug are each dead-lettered and
        counted, but not each logged."""
        held = self._failure_logs.take()
        if held is None:
            return
        if held:
            message += "; %d failure lines held back by the log budget before this one"
            args = (*args, held)
        log.exception(message, *args)

    def _serving(self, partition: int) -> bool:
        """Whether this worker owns ``partition`` and has recovered it."""
        event = self._ready_partitions.get(partition)
        return partition in self._owned and event is not None and event.is_set()

    async def _process_isolated(self, records: list[Inbound]) -> Outcome:
        """Process and commit records one at a time; one that still fails goes to the dead-letter topic.

        A record that breaks the engine (a bug, not bad input) must not stop the partition behind
        it; it is kept, with its bytes and the error, for a replay once the bug is fixed. A failed
        attempt may have changed the engine's in-memory partition state (indexes, timers) without
        committing it, so the partitions are reloaded from the store before each retry: what the
        engine holds is then again exactly what was committed. A reload reads every stored user of
        the partition (seconds for a large one), so it runs in a thread
        (:meth:`_reload_partitions`); records of a partition revoked meanwhile are left to its new
        owner, which reads them again from the recovered state's offsets.
        """
        assert self.engine is not None
        epochs = {r.partition: self._epochs.get(r.partition) for r in records}

        async def still_ours(partition: int) -> bool:
            await self._until_assigned()  # a rebalance may have begun during a reload
            return self._epochs.get(partition) == epochs[partition] and self._serving(partition)

        await self._reload_partitions({r.partition for r in records})
        total = Outcome()
        for rec in records:
            if not await still_ours(rec.partition):
                continue
            txn = self.commits.transaction()
            try:
                outcome = self.engine.process([rec], txn)
            except Exception as exc:  # noqa: BLE001 - isolate whatever failed
                where = (rec.topic, rec.partition, rec.offset)
                self._log_failure("record %s[%d]@%d failed; dead-lettered", *where)
                await self._reload_partitions({rec.partition})
                if not await still_ours(rec.partition):
                    continue
                txn = self.commits.transaction()
                self.engine.mark_applied(rec, txn)  # dead-lettered once, not again on a redelivery
                error = ContractError("processing_error", f"{type(exc).__name__}: {exc}"[:500])
                outcome = Outcome()
                outcome.dead_letters.append(refused(rec, error, self.settings))
                outcome.events[("unknown", "dead_letter")] += 1
            self.commits.commit(outcome, txn)
            self.health.batch_done()  # each record committed is progress, however slow the reloads
            total.extend(outcome)
        return total

    async def _reload_partitions(self, partitions: set[int]) -> None:
        """Replace the engine's state of these partitions by what the store holds (rare: after a bug).

        The store is read in a thread, so the event loop (liveness, metrics, the broker's heartbeats)
        keeps running. Meanwhile nothing else may change these partitions' engine state: the tick
        leaves the engine alone while ``_reloading`` is not empty (``stream.worker_tick``), input
        batches of these partitions wait (:meth:`_until_reloaded`), and ``_drop`` leaves their stores
        open for the read. A partition revoked during the read (its epoch moved on) is not adopted,
        and its store is closed here.

        The time up to which catalog changes were announced to a partition comes back as stored (with
        the last commit that announced one): the changes after it are announced as its clock passes
        them, the failed attempt's among them.
        """
        engine = self.engine
        assert engine is not None
        self.commits.settle()  # the stores must hold every batch the engine has applied
        epochs = {p: self._epochs.get(p) for p in partitions}
        self._reloading |= partitions
        self._reloaded.clear()
        try:
            for p in sorted(partitions):
                pstore = self.store.partitions.get(p)
                if pstore is None or p not in engine.owned:
                    continue
                started = time.perf_counter()
                loaded = await asyncio.to_thread(engine.load_partition, p, pstore)
                if self._epochs.get(p) == epochs[p] and p in engine.owned:
                    engine.adopt(p, loaded)
                    log.info(
                        "partition %d reloaded from its store after a failure (%d users, %.2fs)",
                        p,
                        loaded.users_loaded,
                        time.perf_counter() - started,
                    )
        finally:
            self._reloading -= partitions
            if not self._reloading:
                self._reloaded.set()
            for p in partitions:  # revoked during the re-read: its store was left open for us
                self._close_if_unused(p)

    def _commit_or_die(self, outcome: Outcome, txn: Transaction) -> None:
        """:meth:`stream.batch_commit.BatchCommitter.commit_or_die`: a whole commit, as the commit
        pipeline runs it after the batches in flight. Callers go through ``self.commits.commit``
        (:meth:`_handle`'s batches through ``self.commits.stage``)."""
        self.committer.commit_or_die(outcome, txn)

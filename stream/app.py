"""The stream worker: a faust-streaming app around the :class:`~stream.engine.Engine`.

Topology
    ``events`` + ``consent`` (user-keyed, same partition count) → one agent, batched with
    ``take_events`` → engine → ``pushes`` / ``dead-letters`` / ``push-decisions``, and the user state
    into RocksDB and the ``<app_id>-user-state-changelog`` topic. The ``catalog`` topic is read whole
    by every worker (a plain consumer, no group), since each worker needs every item. A faust timer
    fires due timers, applies catalog changes, polls for a new model and publishes gauges.

Delivery guarantee: at-least-once input, idempotent output. Per batch: produce pushes, dead
letters and decisions and wait for the acks; then write the changelog (new states plus the pushes
offset the states account for) and wait for the acks; then RocksDB; only then does faust commit
the input offsets. After a crash, redelivered events are recognised by ``event_id`` in the
recovered state, and pushes emitted after the last changelog write are read back from the pushes
topic at recovery, so no push is emitted twice.

Why not faust Tables: a Table write must happen inside per-event iteration and goes through
faust's Python producer, which measured at ~3.9k events/s here; the batched store with the
confluent-kafka producer keeps the same changelog-recovery design at the speed of the agent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust

from stream import gc_tuning, metrics, metrics_exposition, metrics_record, native
from stream.batch_commit import BatchCommitter
from stream.bulk_input import BulkReader, holding
from stream.commit_pipeline import CommitPipeline
from stream.engine import Engine, Inbound
from stream.faust_setup import BalancedAssignor, patch_fetch_wait
from stream.kafka_io import EndOffsetProbe, Outbox
from stream.lag import LagTracker
from stream.logs import LogBudget
from stream.model_reload import ModelWatcher, load_scorer
from stream.security import faust_credentials
from stream.settings import Settings
from stream.store import StateStore
from stream.topics import changelog_topic
from stream.web import Health, WebServer, start_web_server
from stream.worker_input import InputMixin
from stream.worker_recovery import RecoveryMixin
from stream.worker_tick import CATALOG_INBOX_RECORDS, TickMixin

log = logging.getLogger(__name__)


class Worker(InputMixin, RecoveryMixin, TickMixin):
    """One worker process: the faust app, the engine, the store, the outbox and the web server.

    Its parts besides the wiring and the lifecycle here are mixins, one module each: the input path
    (``stream.worker_input``), partitions through rebalances and their recovery
    (``stream.worker_recovery``), and the periodic tick with the catalog reader and the gauges
    (``stream.worker_tick``). They share its attributes, declared once in ``stream.worker_parts``.
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.kafka.bootstrap_servers:
            raise ValueError("Worker needs kafka.bootstrap_servers (the CLI starts the embedded broker)")
        self.settings = settings
        self.topics = settings.topics
        self.changelog = changelog_topic(settings)
        wk = settings.worker
        self.health = Health(
            liveness_timeout=max(30.0, wk.tick_seconds * 10),
            broker_timeout=wk.broker_timeout_seconds,
            loop_timeout=wk.loop_stall_seconds,
            consume_timeout=wk.consume_stall_seconds,
        )
        self.health.set_recovering(True)
        self.store = StateStore(settings.worker.state_dir / settings.worker.app_id)
        self.outbox = Outbox(settings)
        self.committer = BatchCommitter(settings, self.outbox, self.health)
        self.watcher: ModelWatcher[Any] = ModelWatcher(
            settings.model.dir,
            loader=functools.partial(load_scorer, content=settings.model.content),
            interval_seconds=settings.model.reload_check_seconds,
        )
        self.engine: Engine | None = None
        self.lag = LagTracker()
        self.web: WebServer | None = None
        # Ownership of the user-keyed partitions. ``_owned`` follows the latest assignment; each
        # assignment of a partition gets a new epoch, so a recovery started for an older one knows
        # its result is stale. ``_recovering`` maps partition -> the epoch its recovery is for.
        self._inputs = {settings.topics.events, settings.topics.consent}
        self._owned: set[int] = set()
        self._epochs: dict[int, int] = {}
        self._recovering: dict[int, int] = {}
        self._in_recovery: set[int] = set()  # partitions a recovery round is reading now
        self._reloading: set[int] = set()  # partitions re-read from their store after a failure
        self._reloaded = asyncio.Event()  # set while none is
        self._reloaded.set()
        self._ready_partitions: dict[int, asyncio.Event] = {}
        self._rebalancing = False  # between a revoke and the next assignment: no tick writes
        self._revoked_at: float | None = None
        # Created here, not at startup: faust may deliver the first assignment before _on_startup
        # runs (an asyncio.Event binds to the running loop only when first waited on).
        self._recovery_wakeup = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._catalog_inbox: queue.Queue[Inbound] = queue.Queue(maxsize=CATALOG_INBOX_RECORDS)
        self._catalog_backlog: deque[Inbound] = deque()  # drained, waiting for its slice (stream.worker_tick)
        self._catalog_read = threading.Event()  # the reader reached the catalog's end once
        self._catalog_ready: asyncio.Event | None = None  # ... and the engine applied all of it
        self._stop = threading.Event()
        self._failure_logs = LogBudget()
        # End offsets from the broker probe (a thread replaces the whole dict; the loop only reads it).
        self._probed_ends: dict[tuple[str, int], int] = {}
        # Bulk input (stream/bulk_input.py): created at startup, read by one thread of its own.
        self._bulk = settings.worker.input_reader == "bulk"
        self.reader: BulkReader | None = None
        # The whole commit is looked up when it runs (tests replace _commit_or_die on the instance).
        self.commits = CommitPipeline(
            lambda outcome, txn: self._commit_or_die(outcome, txn),
            self.committer,
            self.store,
            stage_from=(
                settings.worker.commit_overlap_min_batch
                if self._bulk and settings.worker.commit_overlap
                else None
            ),
        )
        self._reader_thread = ThreadPoolExecutor(1, thread_name_prefix="kairos-input")
        self._assigned_event = asyncio.Event()  # set while no rebalance is under way
        self._group_committed: dict[tuple[str, int], int] = {}
        self.app = self._build_app()

    # -- wiring ---------------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        s = self.settings
        # With bulk input faust's consumer fetches only its assignor's internal topic: a short wait
        # would make it poll the broker a hundred times a second for nothing (faust's own is 1.5 s).
        patch_fetch_wait(1500 if self._bulk else s.kafka.fetch_max_wait_ms)
        (s.worker.state_dir / "faust").mkdir(parents=True, exist_ok=True)
        app = faust.App(
            s.worker.app_id,
            broker=f"kafka://{s.kafka.bootstrap_servers}",
            broker_credentials=faust_credentials(s.kafka),
            store="memory://",
            datadir=str(s.worker.state_dir / "faust"),
            web_enabled=False,
            topic_partitions=s.topics.partitions,
            topic_allow_declare=False,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.kafka.session_timeout_seconds,
            broker_rebalance_timeout=s.kafka.session_timeout_seconds,
            broker_heartbeat_interval=s.kafka.heartbeat_interval_seconds,
            broker_request_timeout=max(40.0, s.kafka.session_timeout_seconds * 2),
            broker_max_poll_records=max(s.worker.batch_size * 2, 1000),
            broker_commit_interval=1.0,
            # faust's copartitioned assignor keeps events[p] and consent[p] on one member; with
            # standby replicas it is sticky up to ceil(partitions / members) and kept 2+2+0 after a
            # restart. BalancedAssignor runs it without standbys (we have no faust tables), which
            # trims every member to floor(partitions / members) first, so new members get work.
            # table_standby_replicas stays >= 1 only because faust's aiokafka driver otherwise
            # swaps in aiokafka's round-robin assignor, which splits co-partitioned topics.
            PartitionAssignor=BalancedAssignor,
            table_standby_replicas=1,
            stream_buffer_maxsize=max(s.worker.batch_size * 4, 4096),
        )
        if self._bulk:
            # faust still joins the group for the inputs and runs the rebalance callbacks; only the
            # reading moves underneath it (stream/bulk_input.py).
            app.transport.Consumer = holding(self._inputs)  # type: ignore[misc]
        source = app.topic(
            self.topics.events,
            self.topics.consent,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(source, name="kairos.events")(self._consume)
        app.timer(s.worker.tick_seconds, on_leader=False)(self._tick)
        app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        app.task(self._on_startup)
        app.on_before_shutdown.connect(self._on_shutdown)  # type: ignore[arg-type]
        return app

    async def _on_startup(self) -> None:
        wk = self.settings.worker
        gc_tuning.configure(wk.gc_young_threshold)
        self._catalog_ready = asyncio.Event()
        metrics_record.init_labels([self.topics.events, self.topics.consent, self.topics.catalog])
        self._spawn(self._recovery_loop())
        self._spawn(self._loop_probe())
        self._spawn(self._prepare_content_loop())
        self.web = start_web_server(
            wk.web_host,
            wk.web_port,
            self.health,
            max_connections=wk.web_max_connections,
            socket_timeout=wk.web_socket_timeout_seconds,
        )
        log.info("metrics and health on http://%s:%d/metrics", wk.web_host, self.web.port)
        log.info("hot modules: %s", native.status)
        metrics_exposition.worker_started()
        scorer = self.watcher.poll(force=True)
        if scorer is not None:
            self._adopt_model(scorer)
        else:
            log.error("no usable model in %s yet: %s", self.settings.model.dir, self.watcher.last_error)
        threading.Thread(target=self._read_catalog, name="kairos-catalog", daemon=True).start()
        if self._bulk:
            self.reader = BulkReader(self.settings)
            self._spawn(self._bulk_loop())
        threading.Thread(target=self._probe_broker, name="kairos-broker-probe", daemon=True).start()

    def _spawn(self, coro: Any) -> None:
        """Run a background task, keeping a reference (the loop holds tasks only weakly)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _loop_probe(self) -> None:
        """Beat the event loop's heartbeat; /healthz (another thread) sees a blocked loop as its age."""
        interval = 0.5
        while not self._stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(interval)
            late = time.monotonic() - before - interval
            metrics.EVENT_LOOP_LAG_SECONDS.set(max(0.0, late))
            self.health.loop_beat()

    def _probe_broker(self) -> None:
        """Ask the broker for metadata every few seconds (a thread): readiness must not depend on
        traffic, or an idle member with a healthy broker would turn unready."""
        interval = self.settings.worker.broker_probe_seconds
        timeout = max(1.0, min(10.0, interval * 2))
        ends = EndOffsetProbe(self.settings)
        while not self._stop.is_set():
            ok = self.outbox.ping(timeout=timeout)
            if ok:
                self.health.set_broker_ok(True)
                # End offsets learned apart from the fetcher: a consumer whose fetches stall still
                # sees its lag grow, so /healthz reports the stall instead of an idle worker.
                owned = [(t, p) for t in sorted(self._inputs) for p in sorted(self._owned)]
                self._probed_ends = ends.ends(owned, timeout=timeout)
            self._stop.wait(interval)

    async def _on_shutdown(self, app: faust.App, **_: Any) -> None:
        self._stop.set()
        # A recovery or a failure's reload may still read these in a thread; the exit closes them. Taken
        # before the tasks are cancelled: their cleanup forgets them while the threads still run.
        busy = self._in_recovery | self._reloading
        for task in list(self._background):
            task.cancel()
        if self.reader is not None:
            # The reading thread ends within one read's timeout; only then may the consumer close.
            await asyncio.to_thread(self._reader_thread.shutdown, True)
            self.reader.close()
        self.commits.settle()  # the batches in flight are made durable before the outbox closes
        self.outbox.close()
        for p in list(self.store.partitions):
            if p not in busy:
                self.store.close(p)
        metrics_exposition.worker_stopped()
        if self.web is not None:
            self.web.stop()

    def _adopt_model(self, scorer: Any) -> None:
        if self.engine is None:
            self.engine = Engine(self.settings, scorer)
        else:
            self.engine.swap_model(scorer)  # the watcher counts the reload
        self.health.set_model(scorer.version)
        log.info("serving model %s", scorer.version)
        if self._catalog_ready is not None and self._catalog_ready.is_set():
            self._freeze_long_lived()

    def _freeze_long_lived(self) -> None:
        """Leave the objects alive now out of the collector's scans (stream/gc_tuning.py)."""
        frozen = gc_tuning.freeze_long_lived(self.settings.worker.gc_freeze)
        log.info("garbage collector: %d long-lived objects frozen", frozen)

    # -- running --------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT/SIGTERM (faust's worker handles the signals)."""
        worker = faust.Worker(self.app, loglevel=self.settings.log.level.lower(), quiet=True)
        worker.execute_from_commandline()

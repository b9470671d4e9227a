"""The worker's shared attributes, declared once for the mixins that make up :class:`stream.app.Worker`.

The worker is one object in several modules (``stream.app``: wiring and the lifecycle;
``stream.worker_input``: the input path; ``stream.worker_recovery``: assignments and recovery;
``stream.worker_tick``: the periodic tick). Each mixin derives from :class:`WorkerParts`, so what one
part reads of the others is typed in one place. ``stream.app.Worker.__init__`` sets every attribute;
the methods are defined by the part named beside them.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust

from stream.batch_commit import BatchCommitter
from stream.bulk_input import BulkReader
from stream.commit_pipeline import CommitPipeline
from stream.engine import Engine, Inbound, Outcome
from stream.lag import LagTracker
from stream.logs import LogBudget
from stream.model_reload import ModelWatcher
from stream.settings import Settings, TopicsConfig
from stream.store import StateStore, Transaction
from stream.web import Health


class WorkerParts:
    """The attributes and methods the worker's parts share (set and defined by :class:`stream.app.Worker`)."""

    settings: Settings
    topics: TopicsConfig
    app: faust.App
    changelog: str  # the user-state changelog topic
    health: Health
    store: StateStore
    committer: BatchCommitter
    commits: CommitPipeline  # every commit goes through it (stream.commit_pipeline)
    watcher: ModelWatcher[Any]
    engine: Engine | None  # None until a model is served
    lag: LagTracker
    reader: BulkReader | None  # the bulk input reader (worker.input_reader = bulk)
    _bulk: bool  # worker.input_reader = bulk
    _reader_thread: ThreadPoolExecutor  # the one thread the bulk reader reads on
    _inputs: set[str]  # the user-keyed input topics
    _owned: set[int]  # partitions of the latest assignment
    _epochs: dict[int, int]  # each assignment of a partition has a new epoch
    _recovering: dict[int, int]  # partition -> the epoch its recovery is for
    _in_recovery: set[int]  # partitions a recovery round is reading now
    _reloading: set[int]  # partitions reloaded from their store after a failure (stream.worker_input)
    _reloaded: asyncio.Event  # set while no partition is reloaded
    _ready_partitions: dict[int, asyncio.Event]  # set once recovered (or revoked)
    _rebalancing: bool  # between a revocation and the next assignment: no tick writes
    _revoked_at: float | None
    _recovery_wakeup: asyncio.Event
    _assigned_event: asyncio.Event  # set while no rebalance is under way
    _group_committed: dict[tuple[str, int], int]
    _catalog_inbox: queue.Queue[Inbound]  # filled by the catalog reader thread (bounded)
    _catalog_backlog: deque[Inbound]  # drained from the inbox, not applied yet (stream.worker_tick)
    _catalog_read: threading.Event  # the reader reached the catalog's end once
    _catalog_ready: asyncio.Event | None  # ... and the engine applied all of it
    _probed_ends: dict[tuple[str, int], int]
    _stop: threading.Event
    _failure_logs: LogBudget  # tracebacks of records that broke the engine, a few per minute

    _adopt_model: Callable[[Any], None]  # stream.app
    _freeze_long_lived: Callable[[], None]  # stream.app
    _serving: Callable[[int], bool]  # stream.worker_input
    _commit_or_die: Callable[[Outcome, Transaction], None]  # stream.worker_input
    _reload_partitions: Callable[..., Awaitable[None]]  # stream.worker_input: a failure's re-read
    _log_failure: Callable[..., None]  # stream.worker_input: a traceback, within the log budget
    _still_recovering: Callable[[], bool]  # stream.worker_recovery
    _close_if_unused: Callable[[int], None]  # stream.worker_recovery: the rule for closing a store

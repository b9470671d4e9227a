"""What goes into the engine and what comes out of it: one inbound record, and a batch's outcome.

The outcome lists everything the worker must make durable (``stream/batch_commit.py``): pushes to
the pushes topic, audit decisions to the decisions topic, dead letters to the dead-letter topic, and
the counters the metrics observe.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream.contract import ContractError, Decision, Push
from stream.dead_letters import DeadLetter, dead_letter
from stream.feedback import FeedbackOutcome
from stream.settings import Settings


@dataclass(init=False, slots=True)
class Inbound:
    """One record as read from a topic. Read only: not ``frozen``, whose generated ``__init__`` (bytecode,
    an ``object.__setattr__`` per field) cost about 1 µs of every record read (stream/native.py)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def __init__(
        self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value


class ConsumedMessage(Protocol):
    """What :func:`inbound_records` reads of a consumed message (confluent-kafka's ``Message``)."""

    def error(self) -> Any: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


def inbound_records(messages: Sequence[ConsumedMessage]) -> tuple[list[Inbound], list[Any]]:
    """The records among a consumer's messages, in order, and the errors among them (librdkafka hands
    some as messages: a partition's end, a failed fetch). Here, in a compiled module, because the bulk
    reader makes one per event read: six method calls and a constructor."""
    records: list[Inbound] = []
    errors: list[Any] = []
    for msg in messages:
        err = msg.error()
        if err is not None:
            errors.append(err)
            continue
        records.append(
            Inbound(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value())
        )
    return records, errors


def refused(rec: Inbound, error: ContractError, settings: Settings) -> DeadLetter:
    """The dead letter of an inbound record (its original bounded by the settings)."""
    return dead_letter(
        rec.value,
        rec.key,
        error,
        rec.topic,
        rec.partition,
        rec.offset,
        max_original_bytes=settings.worker.dead_letter_max_original_bytes,
    )


# Stages of the hot path, in order, each timed where it runs: the engine (parse .. state_write) and the
# worker (read .. rocksdb). "timers" is the event clock's due timers within a batch (popping them, the
# reminder's discovery pool, their asks), "announce" the catalog changes the partition's clock passed
# (who they reach, their asks); their decisions count in step, score and decide. "engine_other" is
# the rest of Engine.process (clocks, pass 2's bookkeeping, sorting pushes). "produce" and "changelog"
# queue messages (and, for a batch committed whole, wait for their acknowledgements); "commit_wait" is
# the wait for acknowledgements of staged commits (stream.commit_pipeline: only when too many batches
# are in flight, or to complete them before other work). The benchmark reports each as microseconds
# per event.
STAGES: tuple[str, ...] = (
    "read",
    "parse",
    "state_read",
    "bookkeeping",
    "candidates",
    "step",
    "score",
    "decide",
    "timers",
    "announce",
    "state_write",
    "engine_other",
    "produce",
    "changelog",
    "rocksdb",
    "commit_wait",
)


@dataclass
class Outcome:
    """What one batch (or tick) produced."""

    pushes: list[tuple[int, Push]] = field(default_factory=list)  # (partition, push)
    decisions: list[tuple[int, Decision]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: Counter[tuple[str, str]] = field(default_factory=Counter)  # (type, outcome)
    suppressions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (trigger, reason)
    feedback: list[FeedbackOutcome] = field(default_factory=list)
    interest: list[float] = field(default_factory=list)
    consent_updates: int = 0
    catalog_updates: int = 0
    catalog_removals: int = 0
    catalog_late: int = 0  # changes announced on arrival: a partition's clock had passed them
    # Users not asked about a new item: they had heard of new_arrival_asks_per_user_hour this hour.
    arrival_asks_capped: int = 0
    # Categories a discovery pool left out: more items than policy.discovery_max_category_items.
    discovery_categories_left_out: int = 0
    content_items_added: int = 0  # catalogued items the model placed from their content (no history)
    erasures: int = 0
    expired_users: int = 0
    # User records loaded: kept warm since this worker wrote them (stream.warm_users), and read and
    # decoded from the store (new users included).
    users_warm: int = 0
    users_read: int = 0
    # Timers the partition's event-time clock passed between a decision's place in the stream and the
    # decision (a bound of Decider.earliest_timer that did not hold): they fire an input late. Never
    # expected; counted (stream.decider_apply).
    late_timers: int = 0
    # Seconds spent per stage of the hot path (STAGES), for kairos_stage_seconds_total. Wall time
    # is never an input to a decision; it is only measured.
    stage_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

    def extend(self, other: Outcome) -> None:
        """Fold another outcome into this one."""
        self.pushes += other.pushes
        self.decisions += other.decisions
        self.dead_letters += other.dead_letters
        self.events.update(other.events)
        self.suppressions.update(other.suppressions)
        self.feedback += other.feedback
        self.interest += other.interest
        self.consent_updates += other.consent_updates
        self.catalog_updates += other.catalog_updates
        self.catalog_removals += other.catalog_removals
        self.catalog_late += other.catalog_late
        self.arrival_asks_capped += other.arrival_asks_capped
        self.discovery_categories_left_out += other.discovery_categories_left_out
        self.content_items_added += other.content_items_added
        self.erasures += other.erasures
        self.expired_users += other.expired_users
        self.users_warm += other.users_warm
        self.users_read += other.users_read
        self.late_timers += other.late_timers
        for stage, seconds in other.stage_seconds.items():
            self.stage_seconds[stage] += seconds

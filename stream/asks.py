"""The units of work of a batch: the users it touched, the asks it made and the work queued behind steps.

Shared by the engine (``stream.engine``, which builds them in stream order), the scoring
(``stream/scoring.py``) and the decider (``stream/decider.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from stream.engagement import EngagedItem, Engagement
from stream.event_decoder import ValidEvent
from stream.state import UserState
from stream.timers import Timer


@dataclass(init=False)
class BatchUser:
    """A user touched by the current batch: where their state lives and the decoded state."""

    user_id: str
    partition: int
    state: UserState
    engagement: Engagement
    dirty: bool = False

    def __init__(
        self,
        user_id: str,
        partition: int,
        state: UserState,
        engagement: Engagement,
        dirty: bool = False,
    ) -> None:
        self.user_id = user_id
        self.partition = partition
        self.state = state
        self.engagement = engagement
        self.dirty = dirty


@dataclass(frozen=True)
class Ask:
    """A request to score some candidates of one user and decide, with what was true when it was made.

    Candidates, the user's engagement with them and consent are captured when the ask is made (in
    stream order), so the decision is the same however the stream was cut into batches.
    """

    user: BatchUser
    trigger: str
    cause: str
    event_ts: float
    now: float
    items: tuple[str, ...]
    sources: tuple[str, ...]
    engaged: dict[str, EngagedItem]
    session_last_ts: float | None
    consent: bool | None
    previous_price: float | None = None
    seq: int = 0  # order of the asks in the stream (see Decider.apply_interest_updates)
    # The candidates' co-visitation rows as they were (diversity compares with them at decision time).
    covisited: dict[str, dict[str, float]] = field(default_factory=dict)
    # The shopper's engagement hours as they were (send time): later events of the batch come after.
    send_hours: list[float | int] | None = None
    # The items that may be pushed (None: all); the others are scored for the interest index only.
    pushable: frozenset[str] | None = None
    # Content-placed candidates' decayed event counts in the partition as they were (the model's
    # stream warm-up, model.warmup); None when the model has no warm-up or no such candidate.
    placed_counts: dict[str, float] | None = None
    # Per item, the trigger's own interest instead of the model's (stream.triggers.TriggerAsk.priors).
    priors: tuple[float, ...] | None = None
    # A reminder moment's timer, re-armed instead of decided after a recent push (TriggerAsk.rearm).
    rearm: Timer | None = None
    # The partition's event-time clock when the ask was made (a timer its plan schedules at or before
    # it is late in any batching; one after it must be made before the clock passes it).
    clock: float = 0.0


@dataclass(init=False, slots=True)
class Scored:
    """An ask's scored candidates: the best few for the policy, and those for the interest index.

    Read only. Not frozen: one is built per ask, and a frozen ``__init__`` runs as bytecode at about
    three times the cost (``stream.native``)."""

    top: list[tuple[str, str, float, float]]  # (item, source, raw score, calibrated interest)
    indexed: list[tuple[str, float]]  # (item, interest)

    def __init__(self, top: list[tuple[str, str, float, float]], indexed: list[tuple[str, float]]) -> None:
        self.top = top
        self.indexed = indexed


@dataclass(
    init=False, slots=True
)  # not frozen: one is built per event, and a frozen __init__ costs 3x as much
class SeenAt:
    """What pass 1 knew of a user's engagement where a release was queued: pass 2 runs after the
    batch's later events moved the engagement on, and a release must not see them."""

    last_ts: float | None  # the last behaviour event so far (is the shopper on the site?)
    bought: frozenset[str]  # items bought so far (a held push of one is not sent)
    clock: float  # the partition's event-time clock there (as ``Ask.clock``)

    def __init__(
        self,
        last_ts: float | None,
        bought: frozenset[str],
        clock: float,
    ) -> None:
        self.last_ts = last_ts
        self.bought = bought
        self.clock = clock

    @classmethod
    def of(cls, engagement: Engagement, clock: float) -> SeenAt:
        """The engagement facts a release reads, as they are now, at partition clock ``clock``."""
        return cls(engagement.last_ts, engagement.bought(), clock)


@dataclass(
    init=False, slots=True
)  # not frozen: one is built per event, and a frozen __init__ costs 3x as much
class Op:
    """Policy work queued for a user behind their n-th step of the batch, done in the user's order.

    With an ``ask``: a decision. Otherwise, with an ``event``: its feedback, then the release of held
    pushes at the event's time; with neither: the release of held pushes at ``now`` (a due timer).
    A release reads the engagement as it was where it was queued (``seen``).
    """

    step: int
    event: ValidEvent | None = None
    ask: Ask | None = None
    now: float = 0.0
    seq: int = 0  # order in the stream (pushes are emitted in this order)
    seen: SeenAt | None = None

    def __init__(
        self,
        step: int,
        event: ValidEvent | None = None,
        ask: Ask | None = None,
        now: float = 0.0,
        seq: int = 0,
        seen: SeenAt | None = None,
    ) -> None:
        self.step = step
        self.event = event
        self.ask = ask
        self.now = now
        self.seq = seq
        self.seen = seen


@dataclass
class Work:
    """Pass-1 results of a batch awaiting pass 2: users, their queued steps and policy work."""

    users: dict[str, BatchUser] = field(default_factory=dict)
    steps: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    # Per partition, the earliest time a timer that its queued policy work may schedule (a hold's
    # release, a deferred release, a reminder that waits) can fall due: pass 2 must run before the
    # partition's clock reaches it (see Engine.process).
    first_due: dict[int, float] = field(default_factory=dict)
    ops: dict[str, list[Op]] = field(default_factory=dict)
    # Per partition, the items of its queued decisions that the model scores: only their scores can
    # enter the partition's interest index when pass 2 runs (a trigger that values its items itself,
    # discovery, indexes none; stream.scoring).
    indexing: dict[int, set[str]] = field(default_factory=dict)
    # Per partition, the users with a queued reminder moment that may wait: its plan cancels their
    # second reminder moment (stream.decider_apply.ApplyMixin._rearm), which pass 1 may find due first.
    rearming: dict[int, set[str]] = field(default_factory=dict)
    # The users with a decision queued (its plan may add to their pushes and holds).
    asking: set[str] = field(default_factory=set)

    def has_work(self, user_id: str) -> bool:
        """Whether the user has GRU steps or policy work queued for pass 2."""
        return bool(self.ops.get(user_id) or self.steps.get(user_id))

    def steps_of(self, user_id: str) -> list[tuple[str, int]]:
        """The user's queued GRU steps (created empty)."""
        return self.steps.setdefault(user_id, [])

    def ops_of(self, user_id: str) -> list[Op]:
        """The user's queued policy work (created empty)."""
        return self.ops.setdefault(user_id, [])

    def asks_queued(self, user_id: str) -> bool:
        """Whether the user has a decision queued (its plan may add to their pushes and holds)."""
        return user_id in self.asking

    def queue(self, user: BatchUser, op: Op, at: float, timer_due: float | None = None) -> None:
        """Queue policy work for ``user``, made at clock time ``at`` of their partition.

        ``timer_due``, for a decision: the earliest time a timer its plan may schedule can fall due
        (``stream.decider.Decider.earliest_timer``), None when it schedules none.
        """
        self.ops_of(user.user_id).append(op)
        if op.ask is not None:
            self.asking.add(user.user_id)
            if op.ask.priors is None:
                self.indexing.setdefault(user.partition, set()).update(op.ask.items)
            if op.ask.rearm is not None:
                self.rearming.setdefault(user.partition, set()).add(user.user_id)
            if timer_due is None:
                return
        elif user.state.policy.held:
            # A release may defer a held push to a later minute (stream.decider.Decider.plan_release).
            timer_due = next_minute(at)
        else:
            # Feedback, and a release with nothing held: pass 2 schedules no timer for it. (A hold that a
            # decision queued before it makes comes from that decision, whose bound counts; it cannot
            # be released before that bound, which the clock has not reached.)
            return
        if timer_due < self.first_due.get(user.partition, math.inf):
            self.first_due[user.partition] = timer_due


def next_minute(ts: float) -> float:
    """The first whole minute of the clock after ``ts``: the earliest a plan made at ``ts`` may
    schedule a timer (``stream.plan.on_minute``, ``stream.decider_apply``)."""
    return (ts // 60.0 + 1.0) * 60.0

"""What a decision does before it is done: a :class:`Plan` of :class:`Step` s.

``stream.decider`` builds plans (``Decider.plan``, ``Decider.plan_release``) and
``stream.decider_apply`` carries them out; the timers a plan schedules are due on whole minutes
(:func:`on_minute`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from stream.asks import BatchUser
from stream.contract import Push
from stream.timers import Timer

RELEASE_KIND = "release_held"  # the timer kind that brings held pushes back


def on_minute(ts: float) -> float:
    """``ts`` rounded up to a whole minute of the clock.

    Every timer a plan schedules (a hold's release, a deferral) is due on a whole minute. Plans are
    applied in the engine's second pass, after the first pass moved the partition's clock through the
    rest of the batch; the engine closes the second pass before the clock reaches the earliest time a
    timer of its pending work may fall due (``stream.asks.Work.first_due``), so such a timer exists
    before the clock can pass it, and fires at the same input whatever the batching.
    """
    return math.ceil(ts / 60.0) * 60.0


# What a plan does with one candidate or held push ("wait": a reminder moment re-armed, nothing decided).
Action = Literal["emit", "hold", "suppress", "ghost", "defer", "wait"]


@dataclass(init=False, slots=True)
class Step:
    """One entry of a plan: an emit, a hold, a suppression (with its reason), a holdout user's ghost
    push (remembered as the no-push baseline, never sent), or a held push deferred to ``release_at``.

    Not frozen (a plan builds one per candidate, and a frozen init costs about three times as much);
    only :meth:`stream.decider_apply.ApplyMixin.apply` reads it, nothing changes it.
    """

    action: Action
    trigger: str
    item_id: str
    reason: str  # "ok" for emits and ghosts, else the suppression or hold code
    score: float = 0.0  # the calibrated interest (audit)
    threshold: float | None = None
    push: Push | None = None  # emit, hold, ghost; the held push for a defer
    release_at: float | None = None  # hold, defer
    context: str = ""  # the outcome estimates' context (stream.response_estimates)
    audit: bool = True  # whether the decisions topic gets a record of it
    timer: Timer | None = None  # wait: the moment's timer, re-armed for release_at

    def __init__(
        self,
        action: Action,
        trigger: str,
        item_id: str,
        reason: str,
        score: float = 0.0,
        threshold: float | None = None,
        push: Push | None = None,
        release_at: float | None = None,
        context: str = "",
        audit: bool = True,
        timer: Timer | None = None,
    ) -> None:
        self.action = action
        self.trigger = trigger
        self.item_id = item_id
        self.reason = reason
        self.score = score
        self.threshold = threshold
        self.push = push
        self.release_at = release_at
        self.context = context
        self.audit = audit
        self.timer = timer


def duplicate_step(push: Push, context: str) -> Step:
    """A decision whose push already exists (a redelivered input): suppressed; ``ApplyMixin.apply``
    completes the push's record if it was recovered after a crash."""
    return Step("suppress", push.trigger, push.item_id, "duplicate", push=push, context=context, audit=False)


@dataclass(init=False)
class Plan:
    """Everything one decision does, before it is done: ``Decider.apply`` (``stream.decider_apply``)
    carries it out.

    ``steps`` in the order they are applied; ``interest`` and ``index_rows`` for the metrics and the
    item -> interested users index; ``released_until``: held pushes due by then leave the state (a
    release plan).
    """

    user: BatchUser
    now: float
    seq: int  # the stream order of what caused it (pushes go out in this order)
    steps: list[Step] = field(default_factory=list)
    interest: list[float] = field(default_factory=list)
    index_rows: list[tuple[str, float]] = field(default_factory=list)
    released_until: float | None = None
    # The partition's clock where the decision was queued (``Ask.clock``, ``SeenAt.clock``): a timer
    # the plan schedules after it and at or before the clock at apply time is late (counted).
    clock: float = math.inf

    def __init__(
        self,
        user: BatchUser,
        now: float,
        seq: int,
        steps: list[Step] | None = None,
        interest: list[float] | None = None,
        index_rows: list[tuple[str, float]] | None = None,
        released_until: float | None = None,
        clock: float = math.inf,
    ) -> None:
        self.user = user
        self.now = now
        self.seq = seq
        self.steps = [] if steps is None else steps
        self.interest = [] if interest is None else interest
        self.index_rows = [] if index_rows is None else index_rows
        self.released_until = released_until
        self.clock = clock

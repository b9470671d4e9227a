"""The policy lab's second moment: a reminder for the shopper who stays away, and discovery when
nothing was abandoned.

* :class:`ReminderPusher`: :class:`benchmarks.lab_pushers.SessionEndPusher`, plus, ``reminder_seconds``
  after a shopper's last activity, if they have not come back, their next abandoned item not pushed in
  the repeat window (the engine's ``reminder`` trigger, ``stream/triggers.py``). Any return re-arms it.
* :class:`AbandonedOrDiscoveryPusher`: the same two moments; the abandoned items first, and when there
  are none, :class:`benchmarks.lab_pushers.ValueDiscoveryPusher`'s unengaged items.
* :class:`CartThenDiscoveryPusher`: the session end pushes only a carted item; the reminder an abandoned
  item (carted or viewed twice), else discovery (the engine's ``reminder`` and ``discovery`` triggers,
  with browse abandonment held to the reminder).
* :class:`CartThenDiscoveryFirstPusher`: the same session end; the reminder discovery first, the
  abandoned items only when the shopper's discovery pool is empty (the engine with
  ``session_end_browse`` off and ``reminder_discovery_first`` on).
* :class:`ReturningShopperPusher`: the same, but a shopper whose visit began less than
  ``returning_seconds`` (12 h) after their previous one gets nothing at its end: they are likely back
  soon and check out their cart on their own (the engine's ``returning_visit_seconds``).
* :class:`ReminderAgainPusher`: the same, and the reminder moment once more ``again_seconds`` (the
  engine's default ``reminder_again_seconds``, 8 h) after it if the shopper is still away.
* :class:`ReminderGapPusher`: the same, and a first reminder moment less than ``gap_seconds`` (a day)
  after the shopper's last push waits until a day after it (the engine's ``reminder_push_gap_seconds``,
  off by default: in the engine it added nothing).

Why a reminder: a push mostly moves forward a purchase the shopper would make at their next visit
(carts stay and are checked out later), so its incremental value is highest for shoppers who do not
come back soon. Staying away for a day is the observable sign of that. Pure and deterministic, like
the other lab pushers.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from datetime import date
from typing import Any

from benchmarks.lab_pushers import LabCandidate, SessionEndPusher, ValueDiscoveryPusher
from stream.contract import Event, Push
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.simulator import DAY
from stream.timers import ACTIVITY_TYPES


class ReminderPusher(SessionEndPusher):
    """Session-end pushes, and one reminder ``reminder_seconds`` after the last activity (module doc)."""

    def __init__(self, holdout: Callable[[str], bool], reminder_seconds: float = DAY, **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.reminder = reminder_seconds
        self._reminders: list[tuple[float, str]] = []
        self._reminder_armed: dict[str, float] = {}  # user -> the live reminder's due time
        self.reminders_sent = 0

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        if event.type in ACTIVITY_TYPES and self.reminder > 0:
            due = event.ts + self.reminder
            self._reminder_armed[event.user_id] = due
            heapq.heappush(self._reminders, (due, event.user_id))

    def due(self, now: float) -> list[Push]:
        out = super().due(now)
        for at, u, day in self.moments(self._reminders, self._reminder_armed, now):
            best = self.best(u, now, self.reminder_candidates(u, now))
            if best is not None:
                self.reminders_sent += 1
                out.append(self.send(u, day, best, "reminder", f"reminder@{at:.0f}", now))
        return out

    def reminder_candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        """What a reminder may push: the shopper's abandoned items (as at a session end)."""
        return SessionEndPusher.candidates(self, user_id, now)


class AbandonedOrDiscoveryPusher(ReminderPusher, ValueDiscoveryPusher):
    """:class:`ReminderPusher`, with :class:`ValueDiscoveryPusher`'s items when nothing was abandoned."""

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        abandoned = SessionEndPusher.candidates(self, user_id, now)
        return abandoned or ValueDiscoveryPusher.candidates(self, user_id, now)

    def reminder_candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        return self.candidates(user_id, now)


class CartThenDiscoveryPusher(AbandonedOrDiscoveryPusher):
    """The session end pushes a carted item only; the reminder an abandoned item, else discovery.

    Why (scratch regression of the per-user effects of ``abandoned_or_discovery`` on the push kinds,
    eight worlds): a browse-abandonment push at the session end and a discovery push at the session end
    add about nothing, a discovery push at the reminder the most of any kind (about 0.1 purchase per
    push to shoppers who visit less than once a day).
    """

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        return [c for c in SessionEndPusher.candidates(self, user_id, now) if c.trigger == "cart_abandonment"]

    def reminder_candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        return AbandonedOrDiscoveryPusher.candidates(self, user_id, now)


class CartThenDiscoveryFirstPusher(CartThenDiscoveryPusher):
    """The session end pushes a carted item only; the reminder discovery first, else an abandoned item.

    Why: at the reminder a discovery push was worth about four times a browse reminder (+107 against
    +24 purchases per 1,000 pushes to shoppers who visit less than once a day, same regression), so the
    pool goes first and a viewed item is the fallback.
    """

    def reminder_candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        discovery = ValueDiscoveryPusher.candidates(self, user_id, now)
        return discovery or SessionEndPusher.candidates(self, user_id, now)


class ReturningShopperPusher(CartThenDiscoveryFirstPusher):
    """:class:`CartThenDiscoveryFirstPusher` without session-end pushes to shoppers back within
    ``returning_seconds`` (module doc); visits are counted by the engine's own rule
    (:meth:`stream.engagement.Engagement.observe_visit`)."""

    returning_seconds = 12 * 3600.0
    visit_gap = 1800.0

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.visits: dict[str, Engagement] = {}  # user -> their visits (only those are used)

    def observe_event(self, event: Event) -> None:
        if event.type in ACTIVITY_TYPES:
            self.visits.setdefault(event.user_id, Engagement(0)).observe_visit(event.ts, self.visit_gap)
        super().observe_event(event)

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        visits = self.visits.get(user_id)
        if visits is not None and visits.returns_soon(self.returning_seconds):
            return []
        return super().candidates(user_id, now)


class ReminderAgainPusher(ReturningShopperPusher):
    """:class:`ReturningShopperPusher`, with a second reminder moment ``again_seconds`` after the first
    while the shopper stays away (any activity cancels it; the engine's ``reminder_again_seconds``)."""

    again_seconds = PolicyConfig().reminder_again_seconds

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self._again_left: set[str] = set()  # users whose reminder may still come once more

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        if event.type in ACTIVITY_TYPES:
            self._again_left.add(event.user_id)

    def due(self, now: float) -> list[Push]:
        armed = self._reminder_armed
        firing = [u for at, u in self._reminders if at <= now and armed.get(u) == at]
        out = super().due(now)
        for u in firing:
            # Re-armed for the end of quiet hours (the moment is not over), or this was the second moment.
            if u in armed or u not in self._again_left:
                continue
            self._again_left.discard(u)
            due = now + self.again_seconds
            armed[u] = due
            heapq.heappush(self._reminders, (due, u))
        return out


class ReminderGapPusher(ReminderAgainPusher):
    """:class:`ReminderAgainPusher`, whose first reminder moment waits until ``gap_seconds`` after the
    shopper's last push (the engine's ``reminder_push_gap_seconds``): a push within a day of another is
    opened less and opted out of more, and a shopper away for a day is not in a hurry. The second moment
    comes ``again_seconds`` after the first fired, without waiting (as in the engine). A return in
    between re-arms the reminder from the return, as before."""

    gap_seconds = DAY  # the engine's reminder_push_gap_seconds (a day by default)

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.last_push: dict[str, float] = {}

    def send(self, user_id: str, day: date, best: LabCandidate, trigger: str, cause: str, now: float) -> Push:
        self.last_push[user_id] = now
        return super().send(user_id, day, best, trigger, cause, now)

    def moments(
        self, queue: list[tuple[float, str]], armed: dict[str, float], now: float
    ) -> list[tuple[float, str, date]]:
        if queue is self._reminders:
            due: list[tuple[float, str]] = []
            while queue and queue[0][0] <= now:
                at, u = heapq.heappop(queue)
                last = self.last_push.get(u)
                first = u in self._again_left  # the second moment is armed only once the first fired
                if armed.get(u) == at and first and last is not None and now - last < self.gap_seconds:
                    at = armed[u] = last + self.gap_seconds  # the same moment, later
                due.append((at, u))  # the rest is decided (or dropped as stale) by the guards
            for entry in due:
                heapq.heappush(queue, entry)
        return super().moments(queue, armed, now)

"""Timers: a bounded due-queue keyed by (user, kind, item) for the time-driven triggers.

* ``cart_abandonment``: scheduled on add_to_cart for ``now + cart_abandonment_delay_seconds``
  (a new add_to_cart of the same item pushes it back), cancelled on purchase or remove_from_cart.
* ``session_end``: one per user (item ``""``), re-armed by every behaviour event for
  ``ts + session_end_seconds``; it fires once the user has been away that long, and the user's
  carted and repeatedly viewed items are then considered (the browse/cart-abandonment moment).
* ``reminder``: one per user (item ``""``), re-armed by every behaviour event for
  ``ts + reminder_seconds``; it fires only when the shopper has not come back for that long, and
  their abandoned items not pushed yet are considered again (a second reminder goes only to those who
  stay away: a shopper who returns soon would see the cart anyway, so pushing them adds little).
* the reminder again (``reminder`` with item :data:`REMINDER_AGAIN`): armed when the reminder fires,
  ``reminder_again_seconds`` after its due time (:func:`reminder_again`); any return cancels it.
* ``promotion_ending``: scheduled for users with interest in (or the item in their cart) when a
  promotion is known, due at ``ends_at - promotion_ending_lead_seconds`` (at once when that is past
  but the promotion still runs), cancelled on purchase.

Time is event time: the worker passes its watermark as ``now`` to :meth:`TimerQueue.pop_due`. A
timer's ``cause`` (the add_to_cart event id, the promotion id) makes the resulting push id
deterministic, so a replayed input yields the same push.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from stream.contract import Promotion
from stream.policy_config import PolicyConfig

TimerKind = Literal["cart_abandonment", "promotion_ending", "session_end", "reminder"]
TIMER_KINDS: tuple[str, ...] = ("cart_abandonment", "promotion_ending", "session_end", "reminder")
# Events that show the shopper on the site: they end nothing, they (re)start the session clock.
ACTIVITY_TYPES = frozenset({"view", "add_to_cart", "remove_from_cart", "purchase", "search"})

TimerKey = tuple[str, str, str]
# The item of the reminder's second moment: a timer key of its own, so a return that re-arms the
# reminder does not replace it (the return cancels it instead).
REMINDER_AGAIN = "again"


@dataclass(init=False, slots=True)
class Timer:
    """One pending timer; ``kind`` is also the trigger of the push it may cause.

    Read only outside :class:`TimerQueue`, and not kept: the queue hands out the objects it holds, and
    re-arms a pending timer in place (:meth:`TimerQueue.rearm`). Not ``frozen`` because a frozen
    dataclass costs four times as much to build.
    """

    due_at: float
    user_id: str
    kind: str
    item_id: str
    cause: str
    created_at: float

    def __init__(
        self,
        due_at: float,
        user_id: str,
        kind: str,
        item_id: str,
        cause: str,
        created_at: float,
    ) -> None:
        self.due_at = due_at
        self.user_id = user_id
        self.kind = kind
        self.item_id = item_id
        self.cause = cause
        self.created_at = created_at

    @property
    def key(self) -> TimerKey:
        """(user, kind, item): at most one timer per key."""
        return (self.user_id, self.kind, self.item_id)

    def to_list(self) -> list[Any]:
        """Compact JSON-able form."""
        return [self.due_at, self.user_id, self.kind, self.item_id, self.cause, self.created_at]

    @classmethod
    def from_list(cls, row: list[Any]) -> Timer:
        """Inverse of :meth:`to_list`."""
        due_at, user_id, kind, item_id, cause, created_at = row
        return cls(float(due_at), str(user_id), str(kind), str(item_id), str(cause), float(created_at))


class TimerQueue:
    """Pending timers in due order: O(log n) schedule / cancel / pop, bounded in total and per user.

    Beyond ``max_timers`` a new timer is refused (``schedule`` returns False and ``refused`` counts it):
    under overload we keep what we promised rather than evict at random. Beyond ``max_per_user`` the
    user's latest-due timer goes (it is the least urgent).
    """

    def __init__(self, max_timers: int = 500_000, max_per_user: int = 20) -> None:
        self.max_timers = max_timers
        self.max_per_user = max_per_user
        self.refused = 0
        # (due_at, key, seq): timers due at the same time pop in key order, never in insertion order,
        # so a queue rebuilt from stored state after a restart fires exactly like the original.
        self._heap: list[tuple[float, TimerKey, int]] = []
        self._live: dict[TimerKey, tuple[Timer, int]] = {}
        self._by_user: dict[str, set[TimerKey]] = {}
        self._seq = 0

    @classmethod
    def from_config(cls, config: PolicyConfig) -> TimerQueue:
        """An empty queue sized by the policy settings."""
        return cls(config.max_timers, config.max_timers_per_user)

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, timer: Timer) -> bool:
        """Add a timer, replacing the one with the same key. False when refused (queue full)."""
        key = timer.key
        live = self._live.get(key)
        if live is not None and timer.due_at >= live[0].due_at:
            # Pushed back (session_end and reminder are, by every event of the shopper): its heap
            # entry stays where it is and is moved to the new time when it reaches the top
            # (:meth:`_settle`), so a re-arm costs no heap push and leaves no stale entry.
            self._live[key] = (timer, live[1])
            return True
        return self._insert(timer, key, live)

    def rearm(
        self, user_id: str, kind: str, item_id: str, due_at: float, cause: str, created_at: float
    ) -> bool:
        """:meth:`schedule` of ``Timer(due_at, user_id, kind, item_id, cause, created_at)``; a pending
        timer of the key pushed back is updated in place, with no timer built (every behaviour event
        re-arms two). False when refused (queue full)."""
        key = (user_id, kind, item_id)
        live = self._live.get(key)
        if live is not None:
            timer = live[0]
            if due_at >= timer.due_at:
                timer.due_at = due_at
                timer.cause = cause
                timer.created_at = created_at
                return True
        return self._insert(Timer(due_at, user_id, kind, item_id, cause, created_at), key, live)

    def _insert(self, timer: Timer, key: TimerKey, live: tuple[Timer, int] | None) -> bool:
        """A new timer, or one due sooner than the ``live`` one it replaces: a heap entry of its own."""
        if live is None and len(self._live) >= self.max_timers:
            self.refused += 1
            return False
        self._seq += 1
        self._live[key] = (timer, self._seq)
        heapq.heappush(self._heap, (timer.due_at, key, self._seq))
        keys = self._by_user.setdefault(timer.user_id, set())
        keys.add(key)
        if len(keys) > self.max_per_user:
            self._remove_latest(keys)
        self._maybe_compact()
        return key in self._live

    def _remove_latest(self, keys: set[TimerKey]) -> None:
        # Its own method: a lambda in schedule() made mypyc build a closure environment on every call.
        latest = max(keys, key=lambda k: (self._live[k][0].due_at, k))
        self._remove(latest)

    def cancel(self, user_id: str, kind: str, item_id: str) -> bool:
        """Cancel one timer; True when there was one."""
        key = (user_id, kind, item_id)
        if key not in self._live:
            return False
        self._remove(key)
        self._maybe_compact()
        return True

    def users(self) -> list[str]:
        """Users with a pending timer."""
        return list(self._by_user)

    def cancel_user(self, user_id: str) -> int:
        """Cancel all of a user's timers (e.g. on opt-out); how many there were."""
        keys = list(self._by_user.get(user_id, ()))
        for key in keys:
            self._remove(key)
        self._maybe_compact()
        return len(keys)

    def get(self, user_id: str, kind: str, item_id: str) -> Timer | None:
        """The pending timer of a key, if any."""
        live = self._live.get((user_id, kind, item_id))
        return None if live is None else live[0]

    def timers_for(self, user_id: str) -> list[Timer]:
        """A user's pending timers, soonest first (to store with the user's state)."""
        keys = self._by_user.get(user_id)
        if not keys:
            return []
        live = self._live
        if len(keys) == 1:
            return [live[k][0] for k in keys]
        # Sorted as (due_at, kind, item_id) tuples, compared in C with no key call per timer; a user's
        # timers differ in (kind, item_id), so the timer itself is never compared.
        order: list[tuple[float, str, str, Timer]] = []
        for key in keys:
            timer = live[key][0]
            order.append((timer.due_at, timer.kind, timer.item_id, timer))
        order.sort()
        return [entry[3] for entry in order]

    def may_be_due(self, now: float) -> bool:
        """False when no timer can be due at ``now`` (a cheap check, run at every event): every live timer
        has a heap entry at or before its due time (one pushed back keeps its earlier entry)."""
        return bool(self._heap) and self._heap[0][0] <= now

    def next_due(self) -> float | None:
        """Due time of the soonest pending timer."""
        while self._heap:
            if self._settle():
                return self._heap[0][0]
        return None

    def _settle(self) -> bool:
        """Make the heap's top entry current: True when it is a live timer at its due time.

        A stale entry (cancelled or rescheduled earlier) is dropped; the entry of a timer pushed back
        since it was pushed moves to the timer's due time. Either way the caller looks again.
        """
        due_at, key, seq = self._heap[0]
        live = self._live.get(key)
        if live is None or live[1] != seq:
            heapq.heappop(self._heap)
            return False
        if live[0].due_at != due_at:
            heapq.heapreplace(self._heap, (live[0].due_at, key, seq))
            return False
        return True

    def pop_due(self, now: float, limit: int | None = None) -> list[Timer]:
        """Remove and return the timers with ``due_at <= now`` (soonest first, at most ``limit``)."""
        out: list[Timer] = []
        while self._heap and (limit is None or len(out) < limit):
            if not self._settle():
                continue
            due_at, key, _ = self._heap[0]
            if due_at > now:
                break
            heapq.heappop(self._heap)
            out.append(self._live[key][0])
            self._remove(key)
        return out

    def _remove(self, key: TimerKey) -> None:
        self._live.pop(key, None)
        keys = self._by_user.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_user[key[0]]

    def _maybe_compact(self) -> None:
        # Lazy deletion leaves stale heap entries; rebuild when they outnumber the live ones.
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [(t.due_at, k, seq) for k, (t, seq) in self._live.items()]
            heapq.heapify(self._heap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able snapshot: ``{"timers": [[due_at, user, kind, item, cause, created_at], ...]}``."""
        timers = sorted((t for t, _ in self._live.values()), key=lambda t: (t.due_at, t.key))
        return {
            "max_timers": self.max_timers,
            "max_per_user": self.max_per_user,
            "timers": [t.to_list() for t in timers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimerQueue:
        """Rebuild from :meth:`to_dict`."""
        queue = cls(int(data["max_timers"]), int(data["max_per_user"]))
        queue.extend(Timer.from_list(row) for row in data["timers"])
        return queue

    def extend(self, timers: Iterable[Timer]) -> None:
        """Schedule many timers (e.g. the per-user lists restored from the state store on recovery)."""
        for timer in timers:
            self.schedule(timer)


def on_behaviour(
    queue: TimerQueue,
    user_id: str,
    event_type: str,
    item_id: str | None,
    event_id: str,
    ts: float,
    config: PolicyConfig,
) -> None:
    """Arm or disarm the user's timers for one behaviour event.

    Every behaviour event re-arms session_end and reminder (cause: the event id) when they are
    enabled and cancels the reminder's second moment; add_to_cart arms cart_abandonment (cause: the
    event id); remove_from_cart disarms it; purchase disarms both cart_abandonment and promotion_ending
    for the item.
    """
    if event_type in ACTIVITY_TYPES:
        if config.session_end_seconds > 0:
            queue.rearm(user_id, "session_end", "", ts + config.session_end_seconds, event_id, ts)
        if config.reminder_seconds > 0:
            queue.rearm(user_id, "reminder", "", ts + config.reminder_seconds, event_id, ts)
        queue.cancel(user_id, "reminder", REMINDER_AGAIN)  # they came back
    if item_id is None:
        return
    if event_type == "add_to_cart":
        queue.rearm(
            user_id, "cart_abandonment", item_id, ts + config.cart_abandonment_delay_seconds, event_id, ts
        )
    elif event_type == "remove_from_cart":
        queue.cancel(user_id, "cart_abandonment", item_id)
    elif event_type == "purchase":
        queue.cancel(user_id, "cart_abandonment", item_id)
        queue.cancel(user_id, "promotion_ending", item_id)


def reminder_again(timer: Timer, config: PolicyConfig) -> Timer | None:
    """The second reminder moment, armed when the first (``timer``) fires: ``reminder_again_seconds``
    after its due time, with its cause and creation time (the push's ``event_ts`` stays the shopper's
    last activity). None for a second moment (there is no third) or when it is off."""
    if timer.kind != "reminder" or timer.item_id != "" or config.reminder_again_seconds <= 0:
        return None
    due_at = timer.due_at + config.reminder_again_seconds
    return Timer(due_at, timer.user_id, "reminder", REMINDER_AGAIN, timer.cause, timer.created_at)


def schedule_promotion_ending(
    queue: TimerQueue,
    user_ids: Iterable[str],
    item_id: str,
    promotion: Promotion,
    now: float,
    config: PolicyConfig,
) -> int:
    """Arm promotion_ending for these users (those with interest in or the item in their cart).

    Due at ``ends_at - promotion_ending_lead_seconds``, or at ``now`` when that is past but the promotion
    still runs; nothing when it has ended. The cause is the promotion id. Returns how many were armed.
    """
    if promotion.ends_at <= now:
        return 0
    due_at = max(promotion.ends_at - config.promotion_ending_lead_seconds, now)
    armed = 0
    for user_id in user_ids:
        if queue.schedule(Timer(due_at, user_id, "promotion_ending", item_id, promotion.promotion_id, now)):
            armed += 1
    return armed

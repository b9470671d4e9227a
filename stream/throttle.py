"""A global throttle on pushes: at most ``max_pushes_per_minute`` leave the fleet, excess pushes wait.

The budget is split evenly over the partitions of the user-keyed topics and kept per partition, in
event time, as a token bucket (refilled continuously, holding at most a minute's worth): one worker
that owns every partition sends at most the setting, and a fleet of workers sends at most the
setting in total, whoever owns which partition. A push over budget is not dropped but queued (FIFO,
bounded) and goes out at a later minute of the partition's clock when tokens are back, unless it
would expire first (then it is dropped and counted), never in its user's quiet hours and never while
its user is on the site: each waits with its user's time zone (the one they are in now: an event from
another zone moves it, :meth:`PushThrottle.rezone`) and their last event's time (:meth:`PushThrottle.touch`);
one whose user is in quiet hours when budget is back waits on (or, with ``quiet_hours_action`` "drop",
is dropped and counted), as does one whose user had an event within ``active_window_seconds``, while
those behind it go. The user's state counts it as sent from its decision on (caps, gap, repeats), and
from when it goes out once it has (the engine moves its record, as for a held push), so no push
decided meanwhile reaches the user at the same time; because the engine admits pushes in stream order
and releases only when the partition's clock enters a new minute, a replay throttles and releases
exactly the same pushes.

The throttle keeps its own copy of each waiting push's zone and of its user's last event's time
instead of reading the user's record at release: the expiry sweep may remove that record while the
push waits (a timer's push can wait past its user's TTL, overnight in quiet hours), and what a release
decides must not depend on whether the sweep ran yet.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

from stream.contract import Push
from stream.encoding import compact_json

THROTTLE_ROW = b"\x00h"
# The queue is stored, and sent to the changelog, as one row, which must fit a broker's message
# whatever the pushes: a contract-valid push reaches about 5 KB (catalog text escaped six bytes a
# character, 128-character ids), so 1,000 of them made a 4.6 MB row, which the changelog producer
# refuses (MSG_SIZE_TOO_LARGE: the batch cannot commit). Kafka's default limit is 1,000,000 bytes.
MAX_QUEUE_BYTES = 512 * 1024


def _encoded_size(push: Push) -> int:
    """The bytes a push takes in the stored row."""
    return len(compact_json(push.model_dump(mode="json", exclude_none=True)))


# Whether a push may not go out at a time: its user's quiet hours (the zone as stored with the user,
# None when unknown: the configured default).
QuietAt = Callable[[str | None, float], bool]


class Released(NamedTuple):
    """What one release took out of the queue."""

    pushes: list[Push]  # going out now, oldest first
    expired: list[Push]  # would expire before reaching the user
    quiet: list[Push]  # in their user's quiet hours, dropped (``quiet_hours_action`` "drop")
    sent: list[Push]  # went out before a crash (read back, decided again): their budget taken now


class _Waiting(NamedTuple):
    """A push waiting for budget, with its user's time zone (None: unknown) and its stored size (the
    user's last event is kept per user: :attr:`PushThrottle.last_seen`). ``sent``: it went out before a
    crash, at the release that the run without the crash makes again (:meth:`PushThrottle.enqueue`)."""

    push: Push
    zone: str | None
    size: int
    sent: bool = False


class PushThrottle:
    """One partition's token bucket and queue of pushes waiting for budget."""

    def __init__(self, per_minute: float, max_queued: int = 1000) -> None:
        self.rate = per_minute / 60.0  # tokens per second of event time
        self.capacity = max(1.0, per_minute)
        self.max_queued = max_queued
        self.tokens = self.capacity
        self.at: float | None = None
        self._waiting: list[_Waiting] = []
        # The queue's first pushes that the last release left for their users' sake (quiet hours, on
        # the site): they do not hold up new pushes (admit), which would otherwise all wait for the
        # next minute all night.
        self.held = 0
        self._users: set[str] = set()  # those with a push waiting
        # The time of the last event of each user with a push waiting (the active rule at release).
        self.last_seen: dict[str, float] = {}
        self._bytes = 0  # the queue's pushes as stored (MAX_QUEUE_BYTES)
        self._dirty = False

    @property
    def queue(self) -> list[Push]:
        """The pushes waiting, oldest first."""
        return [w.push for w in self._waiting]

    @property
    def zones(self) -> list[str | None]:
        """Their users' time zones (None: unknown), in the same order."""
        return [w.zone for w in self._waiting]

    @property
    def enabled(self) -> bool:
        """Whether there is a limit at all (``per_minute`` > 0)."""
        return self.rate > 0

    def _refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        if self.at is None or now > self.at:
            self.at = now

    def admit(self, now: float) -> bool:
        """Take a token for a push going out at ``now``; False when the budget is spent."""
        if not self.enabled:
            return True
        self._refill(now)
        self._dirty = True
        if self.tokens >= 1.0 and len(self._waiting) == self.held:  # waiting pushes go first
            self.tokens -= 1.0
            return True
        return False

    def enqueue(
        self, push: Push, zone: str | None = None, last_seen: float | None = None, sent: bool = False
    ) -> bool:
        """Queue a push over budget, with its user's time zone and the time of their last event (None:
        none known); False (dropped) when the queue is full: ``max_queued`` pushes, or
        :data:`MAX_QUEUE_BYTES` of them as stored.

        ``sent``: a push read back after a crash whose decision, made again, waits here as it did then;
        it takes its budget when it reaches the front as then, and is released in :attr:`Released.sent`,
        not sent again."""
        size = _encoded_size(push)
        if len(self._waiting) >= self.max_queued or self._bytes + size > MAX_QUEUE_BYTES:
            return False
        user_id = push.user_id
        self._waiting.append(_Waiting(push, zone, size, sent))
        self._bytes += size
        self._users.add(user_id)
        if last_seen is not None:
            self.touch(user_id, last_seen)
        self._dirty = True
        return True

    def touch(self, user_id: str, ts: float) -> None:
        """The user had an event at ``ts``: their waiting pushes do not go out while that is within the
        active window (:meth:`release`). Nothing to do for a user with none waiting (most events)."""
        if user_id in self._users:
            seen = self.last_seen.get(user_id)
            if seen is None or ts > seen:
                self.last_seen[user_id] = ts
                self._dirty = True

    def rezone(self, user_id: str, zone: str | None) -> None:
        """The user is now in ``zone``: their waiting pushes go out outside that zone's quiet hours, not
        those of the zone they were decided in (a release reads the zone kept with each push)."""
        if user_id not in self._users:
            return
        waiting = self._waiting
        for i in range(len(waiting)):
            entry = waiting[i]
            if entry.push.user_id == user_id and entry.zone != zone:
                waiting[i] = entry._replace(zone=zone)
                self._dirty = True

    def release(
        self,
        now: float,
        min_lifetime: float,
        quiet: QuietAt | None = None,
        drop_quiet: bool = False,
        active_window: float = 0.0,
    ) -> Released:
        """Take out what may go out at ``now`` while the budget allows (oldest first), what expired
        while waiting, and, with ``drop_quiet``, what reached the front in its user's quiet hours
        (``quiet``; None: no quiet hours); without it such a push waits on and those behind it go. A
        push whose user had an event within ``active_window`` (0: no such rule) waits on the same way."""
        released = Released([], [], [], [])
        if not self._waiting:
            return released
        self._refill(now)
        self._dirty = True
        kept: list[_Waiting] = []
        held = 0
        last_seen = self.last_seen
        for i, waiting in enumerate(self._waiting):
            push = waiting.push
            if push.expires_at <= now + min_lifetime:
                released.expired.append(push)
            elif self.tokens < 1.0:
                kept += self._waiting[i:]
                break
            elif quiet is not None and quiet(waiting.zone, now):
                if drop_quiet:
                    released.quiet.append(push)
                else:
                    kept.append(waiting)
                    held += 1  # kept ahead of any left for budget: a prefix of the queue
            elif active_window > 0 and now - last_seen.get(push.user_id, -math.inf) < active_window:
                kept.append(waiting)  # the user is on the site
                held += 1
            else:
                self.tokens -= 1.0
                gone = released.sent if waiting.sent else released.pushes
                gone.append(push.model_copy(update={"created_at": now}))
        self._keep(kept)
        self.held = held
        return released

    def mark_sent(self, push_id: str) -> bool:
        """A waiting push read back from the pushes topic at recovery: released after the state's last
        changelog write, so out already. It stays where it waits, marked ``sent``: the redelivered
        input releases it again where it was released then, taking the budget it took then, and
        :attr:`Released.sent` keeps it from going out twice. False when it is not waiting."""
        for i, waiting in enumerate(self._waiting):
            if waiting.push.push_id == push_id:
                if not waiting.sent:
                    self._waiting[i] = waiting._replace(sent=True)
                    self._dirty = True
                return True
        return False

    def drop_user(self, user_id: str) -> list[Push]:
        """Forget the waiting pushes of an erased or opted-out user (they never go out); returns them."""
        dropped = [w.push for w in self._waiting if w.push.user_id == user_id]
        if dropped:
            self.held -= sum(1 for w in self._waiting[: self.held] if w.push.user_id == user_id)
            self._keep([w for w in self._waiting if w.push.user_id != user_id])
            self._dirty = True
        return dropped

    def _keep(self, waiting: list[_Waiting]) -> None:
        self._waiting = waiting
        self._bytes = sum(w.size for w in waiting)
        users = {w.push.user_id for w in waiting}
        self._users = users
        self.last_seen = {u: ts for u, ts in self.last_seen.items() if u in users}

    # -- persistence ----------------------------------------------------------------------------

    def drain(self) -> dict[bytes, bytes | None]:
        """The throttle's row when it changed since the last drain."""
        if not self._dirty:
            return {}
        self._dirty = False
        row: dict[str, object] = {
            "t": self.tokens,
            "at": self.at,
            "q": [w.push.model_dump(mode="json", exclude_none=True) for w in self._waiting],
            "z": self.zones,
            "h": self.held,
            "s": dict(sorted(self.last_seen.items())),  # by id: the same bytes however the stream was cut
        }
        sent = [w.push.push_id for w in self._waiting if w.sent]
        if sent:  # only after a crash: the row is otherwise the same as without one
            row["o"] = sent
        return {THROTTLE_ROW: compact_json(row)}

    def load(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Restore from the stored row, if any."""
        for key, raw in rows:
            if key == THROTTLE_ROW:
                row = json.loads(raw)
                self.tokens = float(row["t"])
                self.at = None if row["at"] is None else float(row["at"])
                queue = [Push.model_validate(p, strict=False) for p in row["q"]]
                # A row from before zones were kept (or a damaged one): no zone known, the default's.
                zones = [None if z is None else str(z) for z in row.get("z") or []]
                zones = (zones + [None] * len(queue))[: len(queue)]
                # A row from before the users' last events were kept: none known (as before).
                self.last_seen = {str(u): float(ts) for u, ts in (row.get("s") or {}).items()}
                sent = set(row.get("o") or [])
                self._keep(
                    [
                        _Waiting(p, z, _encoded_size(p), p.push_id in sent)
                        for p, z in zip(queue, zones, strict=True)
                    ]
                )
                self.held = min(max(int(row.get("h") or 0), 0), len(queue))
        self._dirty = False

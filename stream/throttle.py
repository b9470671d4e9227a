"""A global throttle on pushes: at most ``max_pushes_per_minute`` leave the fleet, excess pushes wait.

The budget is split evenly over the partitions of the user-keyed topics and kept per partition, in
event time, as a token bucket (refilled continuously, holding at most a minute's worth): one worker
that owns every partition sends at most the setting, and a fleet of workers sends at most the
setting in total, whoever owns which partition. A push over budget is not dropped but queued (FIFO,
bounded) and goes out at a later minute of the partition's clock when tokens are back, unless it
would expire first (then it is dropped and counted). The user's state already counts it as sent
(caps, gap, repeats), so throttling never changes a later decision, and because the engine admits
pushes in stream order and releases only when the partition's clock enters a new minute, a replay
throttles and releases exactly the same pushes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

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


class PushThrottle:
    """One partition's token bucket and queue of pushes waiting for budget."""

    def __init__(self, per_minute: float, max_queued: int = 1000) -> None:
        self.rate = per_minute / 60.0  # tokens per second of event time
        self.capacity = max(1.0, per_minute)
        self.max_queued = max_queued
        self.tokens = self.capacity
        self.at: float | None = None
        self.queue: list[Push] = []
        self._bytes = 0  # the queue's pushes as stored (MAX_QUEUE_BYTES)
        self._dirty = False

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
        if self.tokens >= 1.0 and not self.queue:  # waiting pushes go first
            self.tokens -= 1.0
            return True
        return False

    def enqueue(self, push: Push) -> bool:
        """Queue a push over budget; False (dropped) when the queue is full: ``max_queued`` pushes, or
        :data:`MAX_QUEUE_BYTES` of them as stored."""
        size = _encoded_size(push)
        if len(self.queue) >= self.max_queued or self._bytes + size > MAX_QUEUE_BYTES:
            return False
        self.queue.append(push)
        self._bytes += size
        self._dirty = True
        return True

    def release(self, now: float, min_lifetime: float) -> tuple[list[Push], list[Push]]:
        """Pushes that may go out at ``now`` (oldest first), and those that expired while waiting."""
        if not self.queue:
            return [], []
        self._refill(now)
        self._dirty = True
        out: list[Push] = []
        expired: list[Push] = []
        while self.queue:
            push = self.queue[0]
            if push.expires_at <= now + min_lifetime:
                expired.append(self.queue.pop(0))
                self._bytes -= _encoded_size(push)
                continue
            if self.tokens < 1.0:
                break
            self.tokens -= 1.0
            out.append(self.queue.pop(0).model_copy(update={"created_at": now}))
            self._bytes -= _encoded_size(push)
        return out, expired

    def drop_user(self, user_id: str) -> list[Push]:
        """Forget the waiting pushes of an erased or opted-out user (they never go out); returns them."""
        dropped = [push for push in self.queue if push.user_id == user_id]
        if dropped:
            self.queue = [push for push in self.queue if push.user_id != user_id]
            self._bytes -= sum(_encoded_size(push) for push in dropped)
            self._dirty = True
        return dropped

    # -- persistence ----------------------------------------------------------------------------

    def drain(self) -> dict[bytes, bytes | None]:
        """The throttle's row when it changed since the last drain."""
        if not self._dirty:
            return {}
        self._dirty = False
        row = {
            "t": self.tokens,
            "at": self.at,
            "q": [p.model_dump(mode="json", exclude_none=True) for p in self.queue],
        }
        return {THROTTLE_ROW: compact_json(row)}

    def load(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Restore from the stored row, if any."""
        for key, raw in rows:
            if key == THROTTLE_ROW:
                row = json.loads(raw)
                self.tokens = float(row["t"])
                self.at = None if row["at"] is None else float(row["at"])
                self.queue = [Push.model_validate(p, strict=False) for p in row["q"]]
                self._bytes = sum(_encoded_size(push) for push in self.queue)
        self._dirty = False

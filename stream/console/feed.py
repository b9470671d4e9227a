"""What the console shows, computed from the topics: a bounded recent window and running aggregates.

Pure logic, no Kafka and no HTTP: :class:`ConsoleFeed` is fed decoded messages (``on_push``,
``on_decision``, ``on_event``, ``on_dead_letter``) and answers :meth:`ConsoleFeed.delta`, the JSON the
page renders. It is thread-safe (the topic reader writes, the web server's threads read).

What it keeps, all bounded:

- the last ``window`` pushes (with their outcome so far), decisions and dead letters: the only
  place user ids are held;
- an attribution index of the last ``attribution_pushes`` pushes, keyed by push id and by a digest of
  (user, item), never the ids themselves: it attributes opens, clicks, dismissals (they carry the
  ``push_id``) and purchases (the most recent push of the same item to the same user at most
  ``attribution_window_seconds`` before, not yet credited), the same rules as ``stream/feedback.py``;
- per-trigger counters (pushes, opens, clicks, dismissals, purchases, revenue) and per
  (outcome, trigger, reason) decision counters (reasons are a bounded set; past ``MAX_REASON_KEYS``
  keys the rest count as "other");
- the latest event time seen, leaving out times further ahead of the wall clock than
  ``max_future_skew_seconds`` (the workers' own bound, ``worker.max_future_skew_seconds``: they
  dead-letter such events, but the events topic still holds them);
- for the holdout comparison, per group (holdout / treated, by ``stream.policy.in_holdout``): events,
  purchases, revenue, pushes, and two HyperLogLog sketches (users seen, purchasers) that count
  distinct users in a fixed 16 KiB each without keeping any user id.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream.console.totals import GroupTotals, TriggerTotals
from stream.contract import MAX_PRICE, MAX_QUANTITY, TRIGGERS
from stream.user_facts import in_holdout

# Distinct (outcome, trigger, reason) decision keys counted one by one; more (a bug or a foreign
# producer) fold into reason "other", so a hostile topic cannot grow the console's memory.
MAX_REASON_KEYS = 256
# Distinct trigger names counted; unknown ones past the known triggers fold into "other".
MAX_TRIGGER_KEYS = 32
OUTCOME_KINDS: tuple[str, ...] = ("open", "click", "dismiss", "purchase")


@dataclass
class _Tracked:
    """One push in the attribution index: what attribution needs, no ids."""

    trigger: str
    pair: bytes  # digest of (user, item)
    created_at: float
    opened: bool = False
    clicked: bool = False
    dismissed: bool = False
    purchased: bool = False


def _pair(user_id: str, item_id: str) -> bytes:
    return hashlib.blake2b(f"{user_id}\x1f{item_id}".encode(), digest_size=12).digest()


def _number(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    try:
        number = float(value)
    except OverflowError:  # a JSON integer past a float's range (1 and 400 zeros)
        return default
    return number if math.isfinite(number) else default


def _text(value: Any, limit: int = 256) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


class ConsoleFeed:
    """The console's state: bounded recent window plus running aggregates (see the module docstring)."""

    def __init__(
        self,
        window: int = 500,
        attribution_pushes: int = 20_000,
        attribution_window_seconds: float = 86400.0,
        holdout_share: float = 0.05,
        holdout_salt: str = "kairos-holdout-v1",
        max_future_skew_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.attribution_pushes = attribution_pushes
        self.attribution_window_seconds = attribution_window_seconds
        self.holdout_share = holdout_share
        self.holdout_salt = holdout_salt
        self.max_future_skew_seconds = max_future_skew_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.seq = 0  # bumped by every change the page should see
        self.started_at = time.time()
        # push_id -> row shown on the page (includes the user id); the oldest go first.
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._decisions: deque[tuple[int, dict[str, Any]]] = deque(maxlen=window)
        self._dead_letters: deque[tuple[int, dict[str, Any]]] = deque(maxlen=window)
        self._tracked: OrderedDict[str, _Tracked] = OrderedDict()
        self._by_pair: dict[bytes, list[str]] = {}
        self.triggers: dict[str, TriggerTotals] = {t: TriggerTotals() for t in TRIGGERS}
        self.decision_counts: dict[tuple[str, str, str], int] = {}
        self.dead_letter_counts: dict[str, int] = {}
        self.groups: dict[str, GroupTotals] = {"treated": GroupTotals(), "holdout": GroupTotals()}
        self.read: dict[str, int] = {"pushes": 0, "decisions": 0, "events": 0, "dead_letters": 0}
        self.skipped = 0  # messages that were not JSON objects of the expected shape
        self.unattributed = 0  # feedback naming a push the index does not hold (or no longer)
        self.duplicates = 0  # pushes seen twice (same push_id): redeliveries, counted once
        # The latest event time seen, but none further ahead of the wall clock than the workers admit
        # (worker.max_future_skew_seconds): the events topic still holds the ones they refused, and one
        # from years ahead would be "the latest" for good.
        self.last_event_ts: float | None = None

    # -- input -----------------------------------------------------------------------------------

    def skip(self) -> None:
        """Count a message that could not be read (not a JSON object)."""
        with self._lock:
            self.skipped += 1

    def _group(self, user_id: str) -> GroupTotals:
        held = in_holdout(user_id, self.holdout_share, self.holdout_salt)
        return self.groups["holdout" if held else "treated"]

    def _trigger(self, name: str) -> TriggerTotals:
        totals = self.triggers.get(name)
        if totals is None:
            key = name if len(self.triggers) < MAX_TRIGGER_KEYS else "other"
            totals = self.triggers.setdefault(key, TriggerTotals())
        return totals

    def on_push(self, push: dict[str, Any]) -> bool:
        """A message of the pushes topic; returns whether it was counted (a repeat is not)."""
        push_id, user_id, item_id = (
            _text(push.get("push_id")),
            _text(push.get("user_id")),
            _text(push.get("item_id")),
        )
        trigger = _text(push.get("trigger"), 64)
        if push_id is None or user_id is None or item_id is None or trigger is None:
            with self._lock:
                self.skipped += 1
            return False
        created = _number(push.get("created_at"))
        with self._lock:
            self.read["pushes"] += 1
            if push_id in self._tracked or push_id in self._recent:
                self.duplicates += 1
                return False
            self.seq += 1
            self._trigger(trigger).pushes += 1
            self._group(user_id).pushes += 1
            pair = _pair(user_id, item_id)
            self._tracked[push_id] = _Tracked(trigger, pair, created)
            self._by_pair.setdefault(pair, []).append(push_id)
            while len(self._tracked) > self.attribution_pushes:
                old_id, old = self._tracked.popitem(last=False)
                ids = self._by_pair.get(old.pair)
                if ids is not None:
                    if old_id in ids:
                        ids.remove(old_id)
                    if not ids:
                        del self._by_pair[old.pair]
            self._recent[push_id] = {
                "seq": self.seq,
                "order": self.seq,  # arrival order; "seq" moves on when an outcome comes in
                "push_id": push_id,
                "user_id": user_id,
                "item_id": item_id,
                "title": _text(push.get("title")),
                "category": _text(push.get("category"), 128),
                "price": _number(push.get("price"), -1.0),
                "trigger": trigger,
                "reason": _text(push.get("reason"), 512) or "",
                "score": _number(push.get("score")),
                "threshold": _number(push.get("threshold")),
                "created_at": created,
                "expires_at": _number(push.get("expires_at")),
                "model_version": _text(push.get("model_version"), 128),
                "status": [],
            }
            while len(self._recent) > self.window:
                self._recent.popitem(last=False)
        return True

    def on_decision(self, decision: dict[str, Any]) -> None:
        """A message of the push-decisions audit topic (emitted, held or suppressed, with its reason)."""
        outcome, trigger = _text(decision.get("outcome"), 16), _text(decision.get("trigger"), 64)
        reason = _text(decision.get("reason"), 64)
        user_id, item_id = _text(decision.get("user_id")), _text(decision.get("item_id"))
        if outcome is None or trigger is None or reason is None or user_id is None or item_id is None:
            with self._lock:
                self.skipped += 1
            return
        with self._lock:
            self.read["decisions"] += 1
            self.seq += 1
            key = (outcome, trigger, reason)
            if key not in self.decision_counts and len(self.decision_counts) >= MAX_REASON_KEYS:
                key = (outcome, trigger, "other")
            self.decision_counts[key] = self.decision_counts.get(key, 0) + 1
            if outcome != "emitted":  # emitted ones are on the pushes list already
                row = {
                    "seq": self.seq,
                    "user_id": user_id,
                    "item_id": item_id,
                    "trigger": trigger,
                    "outcome": outcome,
                    "reason": reason,
                    "score": _number(decision.get("score")),
                    "threshold": _number(decision.get("threshold")),
                    "ts": _number(decision.get("ts")),
                }
                self._decisions.append((self.seq, row))

    def on_dead_letter(self, letter: dict[str, Any]) -> None:
        """A message of the dead-letters topic: counted by reason, its reason and error kept in the window."""
        reason = _text(letter.get("reason"), 64) or "unknown"
        with self._lock:
            self.read["dead_letters"] += 1
            self.seq += 1
            if reason not in self.dead_letter_counts and len(self.dead_letter_counts) >= MAX_REASON_KEYS:
                reason = "other"
            self.dead_letter_counts[reason] = self.dead_letter_counts.get(reason, 0) + 1
            row = {
                "seq": self.seq,
                "reason": reason,
                "error": (_text(letter.get("error"), 200) or ""),
                "source_topic": _text(letter.get("source_topic"), 249),
                "received_at": _number(letter.get("received_at")),
            }
            self._dead_letters.append((self.seq, row))

    def on_event(self, event: dict[str, Any]) -> str | None:
        """A message of the events topic: feeds the holdout comparison and attributes feedback.

        Returns the outcome kind attributed ("open", "click", "dismiss", "purchase") or None.
        """
        user_id, kind = _text(event.get("user_id")), _text(event.get("type"), 32)
        ts = _number(event.get("ts"), -1.0)
        if user_id is None or kind is None or ts < 0:
            with self._lock:
                self.skipped += 1
            return None
        with self._lock:
            self.read["events"] += 1
            if ts - self._clock() <= self.max_future_skew_seconds:
                self.last_event_ts = ts if self.last_event_ts is None else max(self.last_event_ts, ts)
            group = self._group(user_id)
            group.events += 1
            group.users.add(user_id)
            attributed: str | None = None
            if kind == "purchase":
                price, quantity = _number(event.get("price")), _number(event.get("quantity"), 1.0)
                # Within the contract's bounds only (the workers refuse the rest): a hostile 1e308
                # made the sums infinite or NaN, which is not JSON, and the page stopped updating.
                in_bounds = 0.0 <= price <= MAX_PRICE and 1.0 <= quantity <= MAX_QUANTITY
                revenue = price * quantity if in_bounds else 0.0
                group.purchases += 1
                group.revenue += revenue
                group.purchasers.add(user_id)
                item_id = _text(event.get("item_id"))
                if item_id is not None:
                    attributed = self._attribute_purchase(user_id, item_id, ts, revenue)
            elif kind in ("push_open", "push_click", "push_dismiss"):
                push_id = _text(event.get("push_id"))
                if push_id is not None:
                    attributed = self._attribute_answer(push_id, kind[5:])
            if attributed is not None:
                self.seq += 1
            return attributed

    # -- attribution (the rules of stream/feedback.py) --------------------------------------------

    def _mark(self, push_id: str, status: str) -> None:
        row = self._recent.get(push_id)
        if row is not None and status not in row["status"]:
            row["status"].append(status)
            row["seq"] = self.seq + 1  # the caller bumps seq after attributing
            self._recent.move_to_end(push_id)  # changed rows sort last: the delta scan stops early

    def _attribute_answer(self, push_id: str, kind: str) -> str | None:
        tracked = self._tracked.get(push_id)
        if tracked is None:
            self.unattributed += 1
            return None
        totals = self._trigger(tracked.trigger)
        if kind == "open":
            if tracked.opened:
                return None
            tracked.opened = True
            totals.opens += 1
        elif kind == "click":
            if tracked.clicked:
                return None
            tracked.clicked = True
            totals.clicks += 1
            if not tracked.opened:  # a click means it was seen: count the open too, as the worker does
                tracked.opened = True
                totals.opens += 1
                self._mark(push_id, "open")
        else:
            if tracked.dismissed:
                return None
            tracked.dismissed = True
            totals.dismisses += 1
        self._mark(push_id, kind)
        return kind

    def _attribute_purchase(self, user_id: str, item_id: str, ts: float, revenue: float) -> str | None:
        for push_id in reversed(self._by_pair.get(_pair(user_id, item_id), [])):
            tracked = self._tracked[push_id]
            if not tracked.purchased and 0.0 <= ts - tracked.created_at <= self.attribution_window_seconds:
                tracked.purchased = True
                totals = self._trigger(tracked.trigger)
                totals.purchases += 1
                totals.revenue += revenue
                self._mark(push_id, "purchase")
                return "purchase"
        return None

    # -- output ----------------------------------------------------------------------------------

    def delta(self, after: int = 0) -> dict[str, Any]:
        """What changed since ``after`` (a ``seq`` the page got before; 0: everything in the window).

        Pushes come whole whenever they are new or their outcome changed (the page replaces them by
        ``push_id``); decisions and dead letters are appended. Aggregates always come whole (small).
        """
        with self._lock:
            pushes: list[dict[str, Any]] = []
            # Rows are kept in order of their last change, so the scan stops at the first old one.
            for row in reversed(self._recent.values()):
                if row["seq"] <= after:
                    break
                pushes.append({**row, "status": list(row["status"])})
            pushes.reverse()
            decisions = [row for seq, row in self._decisions if seq > after]
            dead = [row for seq, row in self._dead_letters if seq > after]
            return {
                "seq": self.seq,
                "reset": after == 0,
                "window": self.window,
                "pushes": pushes,
                "decisions": decisions,
                "dead_letters": dead,
                "triggers": {
                    name: t.as_dict() for name, t in self.triggers.items() if t.pushes or name in TRIGGERS
                },
                "decision_counts": [
                    {"outcome": o, "trigger": t, "reason": r, "count": n}
                    for (o, t, r), n in sorted(self.decision_counts.items())
                ],
                "dead_letter_counts": dict(sorted(self.dead_letter_counts.items())),
                "holdout": self._holdout(),
                "read": dict(self.read),
                "skipped": self.skipped,
                "unattributed": self.unattributed,
                "duplicates": self.duplicates,
                "last_event_ts": self.last_event_ts,
                "started_at": self.started_at,
                "attribution_window_seconds": self.attribution_window_seconds,
            }

    def _holdout(self) -> dict[str, Any]:
        treated, holdout = self.groups["treated"].as_dict(), self.groups["holdout"].as_dict()
        lift: float | None = None
        if holdout["purchases_per_user"] > 0:
            lift = treated["purchases_per_user"] / holdout["purchases_per_user"] - 1.0
        return {"share": self.holdout_share, "treated": treated, "holdout": holdout, "lift": lift}

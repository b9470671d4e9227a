"""Baseline pushers for the push-outcomes benchmark: what a shop does without Kairos.

* :class:`PopularPromotionPusher` - once a day at a fixed UTC hour, every known user gets the most
  popular item currently on promotion (popularity: decayed views, carts and purchases of everyone).
* :class:`CartAbandonmentPusher` - every ``add_to_cart`` not followed by a purchase (or removal) of
  the item within an hour gets a push, however many that makes.

They ignore Kairos's policy on purpose (no caps, no quiet hours, no interest, no repeat rule). They
do honour two things every sender must: the user's consent (opted-out users get nothing) and the
holdout group, chosen with the same :func:`stream.policy.in_holdout` rule as Kairos so that lift is
measured on the same split. The logic classes are pure (``now`` is an argument); :class:`BrokerPusher`
is the Kafka edge that feeds them from the broker and produces their pushes to the pushes topic.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.contract import CatalogUpdate, ConsentUpdate, Event, Push, push_id, to_json_bytes
from stream.settings import Settings

MODEL_VERSION = "baseline"
DAY = 86_400.0


@dataclass
class Audience:
    """Who may receive a baseline push: consent (default opt-in, like Kairos's demo) and holdout."""

    holdout: Callable[[str], bool]
    opted_in: dict[str, bool] = field(default_factory=dict)
    _holdout_cache: dict[str, bool] = field(default_factory=dict)

    def consent(self, update: ConsentUpdate) -> None:
        self.opted_in[update.user_id] = update.opted_in

    def reachable(self, user_id: str) -> bool:
        held = self._holdout_cache.get(user_id)
        if held is None:
            held = self._holdout_cache[user_id] = bool(self.holdout(user_id))
        return not held and self.opted_in.get(user_id, True)


class BaselinePusher:
    """What every baseline keeps: who may be reached, and each item's current catalog entry."""

    def __init__(self, holdout: Callable[[str], bool]) -> None:
        self.audience = Audience(holdout)
        self.catalog: dict[str, CatalogUpdate] = {}

    def observe_catalog(self, update: CatalogUpdate) -> None:
        """Keep the item's current state (title, category, price, stock, promotion)."""
        self.catalog[update.item_id] = update

    def observe_consent(self, update: ConsentUpdate) -> None:
        """Record consent."""
        self.audience.consent(update)


class PopularPromotionPusher(BaselinePusher):
    """Daily broadcast of the most popular promoted, in-stock item to every known user.

    Popularity counts views 1, carts 3 and purchases 5, halving every ``half_life`` seconds of event
    time (the same weights as Kairos's trending counter, so the baseline is not handicapped there).
    Users are known from the consent topic and from their events.
    """

    def __init__(
        self,
        holdout: Callable[[str], bool],
        hour_utc: float = 18.0,
        ttl_seconds: float = 3600.0,
        half_life: float = DAY,
    ) -> None:
        super().__init__(holdout)
        self.hour_utc = hour_utc
        self.ttl = ttl_seconds
        self.half_life = half_life
        self.users: dict[str, None] = {}  # insertion-ordered set
        self.popularity: dict[str, tuple[float, float]] = {}  # item -> (score, at)
        self.next_blast: float | None = None

    def observe_event(self, event: Event) -> None:
        """Fold a behaviour event into popularity and the known users."""
        self.users.setdefault(event.user_id, None)
        weight = {"view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}.get(event.type)
        if weight is None or event.item_id is None:
            return
        score, at = self.popularity.get(event.item_id, (0.0, event.ts))
        score = score * 0.5 ** (max(0.0, event.ts - at) / self.half_life) + weight
        self.popularity[event.item_id] = (score, max(at, event.ts))

    def observe_consent(self, update: ConsentUpdate) -> None:
        """Record consent; the user becomes known."""
        self.users.setdefault(update.user_id, None)
        super().observe_consent(update)

    def most_popular_promoted(self, now: float) -> CatalogUpdate | None:
        """The promoted, in-stock item with the highest decayed popularity at ``now`` (ties: item id)."""
        best: tuple[float, str] | None = None
        for item_id, entry in self.catalog.items():
            if entry.promotion is None or not entry.promotion.active_at(now) or entry.stock <= 0:
                continue
            score, at = self.popularity.get(item_id, (0.0, now))
            value = score * 0.5 ** (max(0.0, now - at) / self.half_life)
            if best is None or (value, item_id) > best:
                best = (value, item_id)
        return None if best is None else self.catalog[best[1]]

    def due(self, now: float) -> list[Push]:
        """The broadcast's pushes when the daily hour was reached since the last call."""
        if self.next_blast is None:
            first = math.floor(now / DAY) * DAY + self.hour_utc * 3600.0
            self.next_blast = first if first >= now else first + DAY
        if now < self.next_blast:
            return []
        sent_at = self.next_blast
        self.next_blast += DAY
        item = self.most_popular_promoted(now)
        if item is None:
            return []
        cause = f"blast@{sent_at:.0f}"
        return [
            baseline_push(user, item, "promotion_start", cause, now, self.ttl, "Today's most popular deal")
            for user in self.users
            if self.audience.reachable(user)
        ]


@dataclass(order=True)
class _CartTimer:
    due_at: float
    user_id: str
    item_id: str
    cause: str  # the add_to_cart event id: a new add re-arms


class CartAbandonmentPusher(BaselinePusher):
    """A push for every carted item not bought or removed within ``delay_seconds``."""

    def __init__(
        self, holdout: Callable[[str], bool], delay_seconds: float = 3600.0, ttl_seconds: float = 3600.0
    ) -> None:
        super().__init__(holdout)
        self.delay = delay_seconds
        self.ttl = ttl_seconds
        self._heap: list[_CartTimer] = []
        self._armed: dict[tuple[str, str], str] = {}  # (user, item) -> live cause

    def observe_event(self, event: Event) -> None:
        """Arm on add_to_cart, disarm on purchase or remove_from_cart of the same item."""
        if event.item_id is None:
            return
        key = (event.user_id, event.item_id)
        if event.type == "add_to_cart":
            self._armed[key] = event.event_id
            heapq.heappush(
                self._heap, _CartTimer(event.ts + self.delay, event.user_id, event.item_id, event.event_id)
            )
        elif event.type in ("purchase", "remove_from_cart"):
            self._armed.pop(key, None)

    def due(self, now: float) -> list[Push]:
        """Pushes for every armed timer due at ``now`` (inclusive)."""
        out: list[Push] = []
        while self._heap and self._heap[0].due_at <= now:
            timer = heapq.heappop(self._heap)
            key = (timer.user_id, timer.item_id)
            if self._armed.get(key) != timer.cause:
                continue  # bought, removed or re-armed since
            del self._armed[key]
            item = self.catalog.get(timer.item_id)
            if item is None or not self.audience.reachable(timer.user_id):
                continue
            out.append(
                baseline_push(
                    timer.user_id, item, "cart_abandonment", timer.cause, now, self.ttl, "Still in your cart"
                )
            )
        return out

    def pending(self) -> int:
        """Armed timers (for tests)."""
        return len(self._armed)


def baseline_push(
    user_id: str, item: CatalogUpdate, trigger: str, cause: str, now: float, ttl: float, reason: str
) -> Push:
    promo = item.promotion if item.promotion is not None and item.promotion.active_at(now) else None
    return Push(
        push_id=push_id(user_id, item.item_id, trigger, cause),
        user_id=user_id,
        item_id=item.item_id,
        trigger=trigger,  # type: ignore[arg-type]
        reason=reason,
        score=0.0,
        threshold=0.0,
        model_version=MODEL_VERSION,
        event_ts=now,
        created_at=now,
        expires_at=now + ttl,
        promotion_id=promo.promotion_id if promo is not None else None,
        title=item.title,
        category=item.category,
        price=item.effective_price(now),
    )


class Baseline(Protocol):
    """What :class:`BrokerPusher` drives: a pure pusher fed from the topics, asked what is due."""

    def observe_event(self, event: Event) -> None: ...
    def observe_catalog(self, update: CatalogUpdate) -> None: ...
    def observe_consent(self, update: ConsentUpdate) -> None: ...
    def due(self, now: float) -> list[Push]: ...


class BrokerPusher:
    """Feeds a baseline from the events, catalog and consent topics and produces its pushes.

    The benchmark drives it in lock step: :meth:`sync` reads until the expected number of messages
    per topic has arrived, :meth:`emit` produces what is due at the step's simulated time.
    """

    def __init__(self, settings: Settings, logic: Baseline) -> None:
        self.settings = settings
        self.logic = logic
        t = settings.topics
        self.topics = (t.events, t.catalog, t.consent)
        self.seen = {name: 0 for name in self.topics}
        self.consumer = Consumer(
            {
                **settings.kafka.confluent_config(),
                "group.id": f"baseline-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,
            }
        )
        assignment = []
        for name in self.topics:
            meta = self.consumer.list_topics(name, timeout=10)
            assignment += [TopicPartition(name, p, 0) for p in meta.topics[name].partitions]
        self.consumer.assign(assignment)
        self.producer = Producer(
            {**settings.kafka.confluent_config(), "partitioner": "murmur2_random", "linger.ms": 2}
        )

    def sync(self, expected: dict[str, int], timeout: float = 60.0) -> None:
        """Consume until ``expected[topic]`` messages of each topic have been read."""
        t = self.settings.topics
        deadline = time.monotonic() + timeout
        while any(self.seen[name] < expected.get(name, 0) for name in self.topics):
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline saw {self.seen}, expected {expected}")
            for msg in self.consumer.consume(2000, timeout=0.05):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"baseline consumer: {err}")
                    continue
                topic, value = msg.topic() or "", msg.value() or b""
                self.seen[topic] += 1
                if topic == t.events:
                    self.logic.observe_event(Event.model_validate_json(value, strict=False))
                elif topic == t.catalog:
                    self.logic.observe_catalog(CatalogUpdate.model_validate_json(value, strict=False))
                else:
                    self.logic.observe_consent(ConsentUpdate.model_validate_json(value, strict=False))

    def emit(self, now: float) -> int:
        """Produce the pushes due at ``now`` (keyed by user) and wait for them; returns the count."""
        pushes = self.logic.due(now)
        for push in pushes:
            self.producer.produce(self.settings.topics.pushes, to_json_bytes(push), push.user_id.encode())
        if pushes:
            left = self.producer.flush(30)
            if left:
                raise RuntimeError(f"{left} baseline pushes not delivered")
        return len(pushes)

    def close(self) -> None:
        """Close the consumer and flush the producer."""
        self.producer.flush(10)
        self.consumer.close()
        del self.producer

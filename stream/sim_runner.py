"""The Kafka edge of the simulated shop: the in-process :class:`ShopSimulator` and :func:`replay_to_kafka`.

The simulator produces the world's events, catalog and consent updates with confluent-kafka and
consumes the ``pushes`` topic (its own consumer group), handing every push to
:meth:`World.deliver_push` so the feedback loop closes. A replay sends a real dataset with compressed
timing. The ``kairos simulate`` command line over both is ``stream.sim_cli``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from stream.contract import CatalogUpdate, ConsentUpdate, Event, Push, to_json_bytes
from stream.replay import replay
from stream.settings import Settings
from stream.simulator import DAY, SimConfig, World
from stream.topics import ensure_topics

log = logging.getLogger(__name__)


def producer_config(settings: Settings) -> dict[str, str | int | float]:
    """librdkafka producer settings: the connection from the settings plus a short linger for batching."""
    conf = settings.kafka.confluent_config()
    # murmur2_random: the Java default partitioner, which the worker assumes for user keys.
    conf.update(
        {
            "linger.ms": 5,
            "queue.buffering.max.messages": 500_000,
            "client.id": "kairos-simulator",
            "partitioner": "murmur2_random",
        }
    )
    return conf


class _Publisher:
    """Routes contract messages to their topics, keyed by user (events, consent) or item (catalog)."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.topics
        self.producer = Producer(producer_config(settings))
        self.counts: dict[str, int] = {"events": 0, "catalog": 0, "consent": 0, "delivery_errors": 0}

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.counts["delivery_errors"] += 1
            if self.counts["delivery_errors"] <= 5:
                log.error("delivery failed: %s", err)

    def publish(self, message: Event | CatalogUpdate | ConsentUpdate) -> None:
        """Queue one message (blocks briefly when the local queue is full)."""
        if isinstance(message, Event):
            topic, key, kind = self.topics.events, message.user_id, "events"
        elif isinstance(message, ConsentUpdate):
            topic, key, kind = self.topics.consent, message.user_id, "consent"
        else:
            topic, key, kind = self.topics.catalog, message.item_id, "catalog"
        value = to_json_bytes(message)
        while True:
            try:
                self.producer.produce(topic, value=value, key=key.encode(), on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.counts[kind] += 1

    def publish_all(self, messages: Iterable[Event | CatalogUpdate | ConsentUpdate]) -> None:
        """Queue many messages and serve delivery callbacks."""
        for m in messages:
            self.publish(m)
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for outstanding deliveries; returns how many are still queued."""
        return int(self.producer.flush(timeout))


class ShopSimulator:
    """Runs a :class:`World` against a broker in a background thread (for the demo and the benchmarks).

    Pacing: ``rate`` (events per second) when given, otherwise ``speed`` simulated seconds per real
    second (``config.events_per_second`` / ``config.speed`` are the defaults). With ``start_now`` the
    simulated clock starts at the wall clock, so event times look current.
    """

    def __init__(
        self,
        settings: Settings,
        config: SimConfig,
        *,
        rate: float | None = None,
        speed: float | None = None,
        consume_pushes: bool = True,
        group_id: str | None = None,
        start_now: bool = True,
        create_topics: bool = True,
        tick_seconds: float = 0.02,
    ) -> None:
        if start_now:
            config = config.model_copy(update={"start_time": float(int(time.time()))})
        self.settings = settings
        self.config = config
        self.world = World(config)
        self.rate = rate if rate is not None else config.events_per_second
        self.speed = speed if speed is not None else (None if self.rate else config.speed)
        self.consume_pushes = consume_pushes
        self.group_id = group_id or f"{settings.worker.app_id}-simulator"
        self.create_topics = create_topics
        self.tick_seconds = tick_seconds
        self.pushes_received = 0
        self.pushes_invalid = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._publisher: _Publisher | None = None

    def start(self) -> None:
        """Start producing (and consuming pushes) in a daemon thread; returns once the catalog is sent."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run_guarded, name="kairos-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30.0)
        if self.error is not None:
            raise RuntimeError(f"simulator failed to start: {self.error}") from self.error

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the thread, flush the producer and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` or until the simulator stops."""
        self._stop.wait(seconds)

    def summary(self, holdout: Callable[[str], bool] | None = None) -> dict[str, float]:
        """The world's ground truth (see :meth:`World.summary`) plus what was produced and consumed."""
        with self._lock:
            out = self.world.summary(holdout)
        produced = self._publisher.counts if self._publisher is not None else {}
        for name, value in produced.items():
            out[f"produced.{name}"] = float(value)
        out["pushes_consumed"] = float(self.pushes_received)
        out["pushes_invalid"] = float(self.pushes_invalid)
        return out

    def _run_guarded(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced through .error and start()
            self.error = exc
            log.exception("simulator stopped on an error")
        finally:
            self._ready.set()

    def _make_consumer(self) -> KafkaConsumer:
        k = self.settings.kafka
        conf: dict[str, Any] = dict(k.confluent_config())
        session_ms = int(k.session_timeout_seconds * 1000)
        conf.update(
            {
                "group.id": self.group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "fetch.wait.max.ms": k.fetch_max_wait_ms,
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": int(k.heartbeat_interval_seconds * 1000),
                # librdkafka refuses a session longer than max.poll.interval.ms (300 s by default);
                # the settings accept sessions up to 3600 s.
                "max.poll.interval.ms": max(300_000, session_ms),
            }
        )
        consumer = KafkaConsumer(conf)
        consumer.subscribe([self.settings.topics.pushes])
        return consumer

    def _deliver(self, messages: list[Message]) -> None:
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("pushes consumer: %s", err)
                continue
            try:
                push = Push.model_validate_json(m.value() or b"")
            except ValidationError:
                self.pushes_invalid += 1
                continue
            self.pushes_received += 1
            self.world.deliver_push(push, self.world.now)

    def _run(self) -> None:
        if self.create_topics:
            ensure_topics(self.settings)
        pub = self._publisher = _Publisher(self.settings)
        with self._lock:
            pub.publish_all(self.world.initial_catalog())
            pub.publish_all(self.world.initial_consent())
        consumer = self._make_consumer() if self.consume_pushes else None
        self._ready.set()
        wall0, sim0, sent = time.monotonic(), self.world.now, 0
        try:
            while not self._stop.is_set():
                if consumer is not None:
                    polled = consumer.consume(num_messages=1000, timeout=0)
                    if polled:
                        with self._lock:
                            self._deliver(polled)
                elapsed = time.monotonic() - wall0
                until = sim0 + elapsed * self.speed if self.speed else self.world.now + 30 * DAY
                quota = None
                if self.rate:
                    quota = int(self.rate * elapsed) - sent
                    if quota <= 0:
                        time.sleep(self.tick_seconds)
                        continue
                    quota = min(quota, max(1000, int(self.rate * 0.1)))
                with self._lock:
                    out = self.world.advance(until, quota)
                pub.publish_all(out)
                sent += sum(1 for m in out if isinstance(m, Event))
                if quota is None or len(out) < quota:
                    time.sleep(self.tick_seconds)
        finally:
            left = pub.flush(10.0)
            if left:
                log.warning("%d messages were not delivered", left)
            if consumer is not None:
                consumer.close()


def replay_to_kafka(
    settings: Settings,
    dataset: str,
    compress: float,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    create_topics: bool = True,
) -> dict[str, int]:
    """Send a dataset to the broker with timing compressed by ``compress``; returns the counts produced."""
    messages = replay(dataset, settings.data_dir, compress)
    if create_topics:
        ensure_topics(settings)
    pub = _Publisher(settings)
    stop = stop or threading.Event()
    start = time.monotonic()
    for item in messages:
        if stop.is_set() or (seconds is not None and time.monotonic() - start >= seconds):
            break
        delay = item.due - (time.monotonic() - start)
        if delay > 0.005:
            pub.producer.poll(0)
            if stop.wait(
                delay if seconds is None else min(delay, max(0.0, start + seconds - time.monotonic()))
            ):
                break
            if seconds is not None and time.monotonic() - start >= seconds:
                break
        pub.publish(item.message)
    pub.flush(10.0)
    return dict(pub.counts)

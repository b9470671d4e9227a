"""Kafka I/O at the edge of the worker: the outbound producer and partition replays.

Outbound messages (pushes, dead letters, decisions, changelog records) go through one
confluent-kafka producer, which is far faster than faust's Python producer. It uses the
``murmur2_random`` partitioner, the Java client's default, so a user key lands on the same partition
number as faust/aiokafka and Kafka's Java clients put it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from stream.settings import Settings

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge an outbound message."""


@dataclass
class Outbox:
    """The worker's producer: produce, then :meth:`flush` to know every message is durable.

    :meth:`flush` returns the highest acknowledged offset per (topic, partition) since the previous
    flush (the changelog's offsets that a commit records).
    """

    settings: Settings
    client_id: str = "kairos-worker"
    _producer: Producer = field(init=False)
    _errors: list[str] = field(default_factory=list, init=False)
    acked: dict[tuple[str, int], int] = field(default_factory=dict, init=False)
    # Per (topic, partition) named by the caller: its delivery callback and the highest offset it saw
    # since the last flush (-1: none).
    _trackers: dict[tuple[str, int], Callable[[KafkaError | None, Message], None]] = field(
        default_factory=dict, init=False
    )
    _highest: dict[tuple[str, int], list[int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        conf: dict[str, Any] = {
            **self.settings.kafka.confluent_config(),
            "client.id": self.client_id,
            "partitioner": "murmur2_random",
            "linger.ms": 2,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
        }
        self._producer = Producer(conf)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # The callback of a message whose partition the partitioner picks (only the report names it).
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return
        if offset > self.acked.get((topic, partition), -1):
            self.acked[(topic, partition)] = offset

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> None:
        """Queue one message; blocks briefly (serving delivery reports) when the local queue is full."""
        self._queue(topic, value, key, -1 if partition is None else partition)  # -1: the partitioner's

    def produce_rows(self, topic: str, rows: dict[bytes, bytes | None], partition: int) -> None:
        """Queue key/value rows to one partition (the changelog's hot path)."""
        for key, value in rows.items():
            self._queue(topic, value, key, partition)

    def _queue(self, topic: str, value: bytes | None, key: bytes | None, partition: int) -> None:
        # Positional arguments: this runs about once per event, and kwargs cost a dict each.
        on_delivery = self._trackers.get((topic, partition))
        if on_delivery is None:
            on_delivery = self._tracker(topic, partition)
        while True:
            try:
                self._producer.produce(topic, value, key, partition, on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _tracker(self, topic: str, partition: int) -> Callable[[KafkaError | None, Message], None]:
        """The delivery callback of the messages queued to ``partition`` of ``topic`` (-1: the
        partitioner's choice, which only the report names). A partition's own callback knows its topic
        and partition and keeps its highest offset in a one-item list: one call per message
        acknowledged, so its cost counts (about 0.6 µs less per message than reading the report's topic
        and partition and updating a dict, measured on the embedded broker)."""
        if partition < 0:
            return self._on_delivery
        highest = self._highest[(topic, partition)] = [-1]

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                self._errors.append(f"{topic}[{partition}]: {err}")
                return
            offset = msg.offset()
            if offset is not None and offset > highest[0]:
                highest[0] = offset

        self._trackers[(topic, partition)] = on_delivery
        return on_delivery

    def acknowledged(self) -> bool:
        """Whether the broker has acknowledged every message queued (serving the delivery reports that
        arrived, without waiting): a :meth:`flush` now returns at once."""
        self._producer.poll(0)
        return len(self._producer) == 0  # librdkafka counts a message until its report is served

    def flush(self, timeout: float = 30.0) -> dict[tuple[str, int], int]:
        """Wait until every queued message is acknowledged; return and reset the acked offsets."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages not delivered within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError("; ".join(errors[:5]))
        acked, self.acked = self.acked, {}
        for key, highest in self._highest.items():
            if highest[0] >= 0:
                acked[key] = max(highest[0], acked.get(key, -1))
                highest[0] = -1
        return acked

    def ping(self, timeout: float = 5.0) -> bool:
        """Whether the broker answers a metadata request within ``timeout`` (thread-safe)."""
        try:
            metadata = self._producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return bool(metadata.brokers)

    def close(self) -> None:
        """Deliver what is queued and release the producer."""
        try:
            self._producer.flush(10)
        except KafkaException:
            log.exception("flushing the outbox on close failed")


class EndOffsetProbe:
    """Asks the broker (ListOffsets, one request) for the end offsets of some partitions; thread-safe.

    The consumer learns high-watermarks only from fetch responses, so a fetcher that stops getting
    answers also stops learning that work is waiting, and a stalled worker would look idle. This
    probe is independent of the fetcher. On the embedded broker the answer is a lower bound (it reports
    the last batch's base offset + 1), which can only under-report waiting work, never invent it.
    """

    def __init__(self, settings: Settings) -> None:
        self._admin = AdminClient(settings.kafka.confluent_config())

    def ends(self, partitions: list[tuple[str, int]], timeout: float = 5.0) -> dict[tuple[str, int], int]:
        """End offset per partition; partitions the broker did not answer for are left out."""
        if not partitions:
            return {}
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        try:
            futures = self._admin.list_offsets(request, request_timeout=timeout)
        except KafkaException:
            return {}
        out: dict[tuple[str, int], int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = int(future.result(timeout=timeout).offset)
            except Exception:  # noqa: BLE001 - one partition's error must not hide the others
                continue
        return out


def replay_partitions(
    settings: Settings, topic: str, starts: dict[int, int], batch: int = 5_000, timeout: float = 60.0
) -> Iterator[tuple[int, list[Message]]]:
    """Read ``topic``'s partitions from the given offsets up to their current ends, in batches.

    Yields (partition, messages). The end is found from the fetch responses (partition EOF), never
    from ListOffsets, which the embedded broker answers wrongly. One consumer serves every partition.
    """
    if not starts:
        return
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"{settings.worker.app_id}-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,  # at least 10 (settings)
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, max(start, 0)) for p, start in starts.items()])
        pending = set(starts)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of {topic}{sorted(pending)} within {timeout}s")
            records: dict[int, list[Message]] = {}
            for msg in consumer.consume(batch, timeout=0.2):
                err = msg.error()
                if err is None:
                    records.setdefault(msg.partition() or 0, []).append(msg)
                elif err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART):
                    pending.discard(msg.partition())
                else:
                    raise KafkaException(err)
            if records:
                deadline = time.monotonic() + timeout
            yield from records.items()
    finally:
        consumer.close()


def consume_forever(
    settings: Settings,
    topic: str,
    on_message: Callable[[Message], None],
    stop: Callable[[], bool],
    on_caught_up: Callable[[], None] | None = None,
) -> None:
    """Read every partition of ``topic`` from the beginning and keep following it (no group).

    Used for the catalog, which every worker needs whole whatever partitions it owns.
    ``on_caught_up`` is called once, when every partition has been read to its end the first time.
    """
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"{settings.worker.app_id}-catalog-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        behind = set(partitions)
        while not stop():
            for msg in consumer.consume(1_000, timeout=0.5):
                err = msg.error()
                if err is None:
                    on_message(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    if behind:
                        behind.discard(msg.partition())
                        if not behind and on_caught_up is not None:
                            on_caught_up()
                else:
                    log.warning("%s reader: %s", topic, err)
    finally:
        consumer.close()

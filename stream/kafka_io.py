"""Kafka I/O at the edge of the worker: the outbound producer and partition replays.

Outbound messages (pushes, dead letters, decisions, changelog records) go through one
confluent-kafka producer, which is far faster than faust's Python producer. It uses the
``murmur2_random`` partitioner, the Java client's default, so a user key lands on the same partition
number as faust/aiokafka and Kafka's Java clients put it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream.settings import Settings

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """The broker did not acknowledge an outbound message."""


@dataclass
class Outbox:
    """The worker's producer: produce, then :meth:`flush` to know every message is durable.

    After a flush, :attr:`acked` holds the highest acknowledged offset per (topic, partition)
    since the previous flush.
    """

    settings: Settings
    client_id: str = "kairos-worker"
    _producer: Producer = field(init=False)
    _errors: list[str] = field(default_factory=list, init=False)
    acked: dict[tuple[str, int], int] = field(default_factory=dict, init=False)

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
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        if offset is not None and offset > self.acked.get(tp, -1):
            self.acked[tp] = offset

    def produce(
        self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None
    ) -> None:
        """Queue one message; blocks briefly (serving delivery reports) when the local queue is full."""
        kwargs: dict[str, Any] = {"value": value, "key": key, "on_delivery": self._on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self, timeout: float = 30.0) -> dict[tuple[str, int], int]:
        """Wait until every queued message is acknowledged; return and reset the acked offsets."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages not delivered within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError("; ".join(errors[:5]))
        acked, self.acked = self.acked, {}
        return acked

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self._producer.poll(0)

    def close(self) -> None:
        """Deliver what is queued and release the producer."""
        try:
            self._producer.flush(10)
        except KafkaException:
            log.exception("flushing the outbox on close failed")


def replay_partition(
    settings: Settings, topic: str, partition: int, start: int, batch: int = 5_000, timeout: float = 60.0
) -> Iterator[list[Message]]:
    """Read ``topic[partition]`` from offset ``start`` up to its current end, in batches.

    The end is found from the fetch responses (partition EOF), never from ListOffsets, which the
    embedded broker answers wrongly.
    """
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"{settings.worker.app_id}-replay",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": max(settings.kafka.fetch_max_wait_ms, 10),
        }
    )
    try:
        consumer.assign([TopicPartition(topic, partition, max(start, 0))])
        idle_polls = 0
        while True:
            messages = consumer.consume(batch, timeout=1.0)
            if not messages:
                idle_polls += 1
                if idle_polls * 1.0 > timeout:
                    raise TimeoutError(f"no end of {topic}[{partition}] within {timeout}s")
                continue
            idle_polls = 0
            records = []
            at_end = False
            for msg in messages:
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    at_end = True  # nothing was ever written
                else:
                    raise KafkaException(err)
            if records:
                yield records
            if at_end:
                return
    finally:
        consumer.close()


def consume_forever(
    settings: Settings,
    topic: str,
    on_message: Callable[[Message], None],
    stop: Callable[[], bool],
) -> None:
    """Read every partition of ``topic`` from the beginning and keep following it (no group).

    Used for the catalog, which every worker needs whole whatever partitions it owns.
    """
    consumer = Consumer(
        {
            **settings.kafka.confluent_config(),
            "group.id": f"{settings.worker.app_id}-catalog-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        while not stop():
            for msg in consumer.consume(1_000, timeout=0.5):
                if msg.error() is None:
                    on_message(msg)
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("catalog reader: %s", msg.error())
    finally:
        consumer.close()

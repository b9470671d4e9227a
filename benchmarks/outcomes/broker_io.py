"""The push-outcomes benchmark's broker I/O: :class:`Publisher` produces the world's messages keyed
as the simulator does and counts them per topic; :class:`PushReader` reads the pushes topic a step at
a time, to its current end.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from stream.contract import ConsentUpdate, Event, Push, to_json_bytes
from stream.settings import Settings


class PushReader:
    """Reads the pushes topic from the start, a step at a time (to its current end)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.pushes
        self.consumer = Consumer(
            {
                **settings.kafka.confluent_config(),
                "group.id": f"bench-push-reader-{time.monotonic_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.kafka.fetch_max_wait_ms,
            }
        )
        meta = self.consumer.list_topics(self.topic, timeout=10)
        self.partitions = sorted(meta.topics[self.topic].partitions)
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in self.partitions])
        self.next = dict.fromkeys(self.partitions, 0)

    def drain(self, timeout: float = 30.0) -> list[Push]:
        """Every push produced since the last call (up to the partitions' current ends)."""
        high = {
            p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self.partitions
        }
        out: list[Push] = []
        deadline = time.monotonic() + timeout
        while any(self.next[p] < high[p] for p in self.partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("pushes topic not read to its end")
            for msg in self.consumer.consume(2000, timeout=0.05):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"push reader: {err}")
                    continue
                self.next[msg.partition() or 0] = (msg.offset() or 0) + 1
                out.append(Push.model_validate_json(msg.value() or b"", strict=False))
        return out

    def close(self) -> None:
        """Close the consumer."""
        self.consumer.close()


class Publisher:
    """Produces the world's messages, keyed like the simulator does, and counts them per topic."""

    def __init__(self, settings: Settings) -> None:
        self.topics = settings.topics
        self.producer = Producer(
            {
                **settings.kafka.confluent_config(),
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "queue.buffering.max.messages": 500_000,
            }
        )
        self.counts = {self.topics.events: 0, self.topics.catalog: 0, self.topics.consent: 0}

    def send(self, messages: list[Any]) -> None:
        """Produce and wait for the acks."""
        for m in messages:
            if isinstance(m, Event):
                topic, key = self.topics.events, m.user_id
            elif isinstance(m, ConsentUpdate):
                topic, key = self.topics.consent, m.user_id
            else:
                topic, key = self.topics.catalog, m.item_id
            while True:
                try:
                    self.producer.produce(topic, to_json_bytes(m), key.encode())
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.counts[topic] += 1
        if messages and self.producer.flush(30):
            raise RuntimeError("messages not delivered to the broker")

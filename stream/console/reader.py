"""Follows Kairos's topics with confluent-kafka and feeds :class:`stream.console.feed.ConsoleFeed`.

One consumer, partitions assigned directly (no consumer group: nothing to join, nothing committed,
any number of consoles can read side by side without taking partitions from the workers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

from stream.console.feed import ConsoleFeed
from stream.contract import has_lone_surrogate
from stream.logs import LogBudget
from stream.settings import Settings

log = logging.getLogger("kairos.console")

MISSING_TOPIC_RETRY_SECONDS = 10.0  # a topic not there yet is looked for again this often


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    """A message as a JSON object, or None (skipped): not JSON, not an object, or holding a lone
    surrogate (``"\\ud800"``), which the feed could not hash or show (it stopped the reader)."""
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8")  # the contract's encoding (json.loads would also guess UTF-16 and -32)
        value = json.loads(text)
    except (ValueError, RecursionError):  # includes UnicodeDecodeError
        return None
    if not isinstance(value, dict) or ("\\u" in text and has_lone_surrogate(value)):
        return None
    return value


class TopicReader(threading.Thread):
    """A daemon thread reading pushes, push-decisions, events and dead-letters into a feed."""

    def __init__(self, settings: Settings, feed: ConsoleFeed) -> None:
        super().__init__(name="kairos-console-reader", daemon=True)
        self.settings = settings
        self.feed = feed
        self.stop_event = threading.Event()
        self.assigned = threading.Event()  # set once the partitions are assigned
        self.error: str | None = None  # the last consumer error, shown on the page
        self.missing_topics: list[str] = []  # topics not found (yet), shown on the page
        self._failure_logs = LogBudget()
        t = settings.topics
        self.handlers: dict[str, Callable[[dict[str, Any]], object]] = {
            t.pushes: feed.on_push,
            t.decisions: feed.on_decision,
            t.events: feed.on_event,
        }
        if settings.console.dead_letters:
            self.handlers[t.dead_letters] = feed.on_dead_letter

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.settings.kafka.confluent_config(),
                "group.id": "kairos-console",  # librdkafka wants one; never joined (partitions are assigned)
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": max(self.settings.kafka.fetch_max_wait_ms, 50),
                "client.id": "kairos-console",
            }
        )

    def _assign(self, consumer: Consumer, topics: set[str]) -> set[str]:
        """Add ``topics``' partitions to the assignment; returns the topics not found (tried again later)."""
        start = OFFSET_BEGINNING if self.settings.console.start == "earliest" else OFFSET_END
        partitions: list[TopicPartition] = []
        missing: set[str] = set()
        for topic in sorted(topics):
            metadata = consumer.list_topics(topic, timeout=15)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                missing.add(topic)
                continue
            partitions += [TopicPartition(topic, p, start) for p in sorted(found.partitions)]
        if partitions:
            consumer.incremental_assign(partitions)
        return missing

    def run(self) -> None:
        """Read until :attr:`stop_event` is set."""
        consumer = self._consumer()
        try:
            missing = self._assign(consumer, set(self.handlers))
            self.assigned.set()
            retry_at = time.monotonic() + MISSING_TOPIC_RETRY_SECONDS
            while not self.stop_event.is_set():
                if missing and time.monotonic() >= retry_at:  # created after the console started
                    missing = self._assign(consumer, missing)
                    retry_at = time.monotonic() + MISSING_TOPIC_RETRY_SECONDS
                self.missing_topics = sorted(missing)
                for msg in consumer.consume(1_000, timeout=0.2):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.error = str(err)
                            log.warning("console reader: %s", err)
                        continue
                    handler = self.handlers.get(msg.topic() or "")
                    value = _decode(msg.value())
                    if handler is None:
                        continue
                    if value is None:
                        self.feed.skip()
                        continue
                    self._apply(handler, value, msg.topic() or "")
        except Exception as exc:  # shown on the page; the server keeps serving what it has
            self.error = f"reader stopped: {exc}"
            log.exception("console reader stopped")
        finally:
            consumer.close()

    def _apply(self, handler: Callable[[dict[str, Any]], object], value: dict[str, Any], topic: str) -> None:
        """Feed one message; one the feed fails on is skipped, counted and logged (within a budget).

        Every hostile value found so far that stopped the reader (a lone surrogate, a price of 1e308,
        an integer past a float's range) is refused where it is read, but the next one must not stop
        the page for good either: a console that shows a little less is better than a frozen one.
        """
        try:
            handler(value)
        except Exception as exc:  # noqa: BLE001 - one message must not stop the reader
            self.feed.skip()
            self.error = f"a message on {topic} was skipped: {type(exc).__name__}"
            held = self._failure_logs.take()
            if held is not None:
                log.exception(
                    "console reader: a message on %s was skipped (%d such lines held back before this one)",
                    topic,
                    held,
                )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading and wait for the thread."""
        self.stop_event.set()
        self.join(timeout)

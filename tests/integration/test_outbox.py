"""The worker's producer on the real broker: a flush reports the highest offset acknowledged in each
partition since the previous flush (what a commit records for the changelog), for messages sent to a
partition the caller names and to the one the partitioner picks; a failed delivery fails the flush."""

from __future__ import annotations

from typing import cast

import pytest
from confluent_kafka import KafkaError, Message

from stream.kafka_io import DeliveryError, Outbox
from stream.partitioning import partition_for
from tests.support.worker import settings_for


def test_a_flush_reports_each_partitions_highest_acknowledged_offset_since_the_last(own_broker: str) -> None:
    settings = settings_for(own_broker)
    topic, partitions = settings.topics.decisions, settings.topics.partitions
    outbox = Outbox(settings)
    sent = dict.fromkeys(range(partitions), 0)
    for i in range(40):
        outbox.produce(topic, b"v%d" % i, b"named-%d" % i, i % 3)  # partitions 0-2 named, none to 3
        sent[i % 3] += 1
    keys = [b"picked-%d" % i for i in range(12)]
    for key in keys:
        outbox.produce(topic, b"v", key)  # the partitioner picks (murmur2, as partition_for)
        sent[partition_for(key, partitions)] += 1
    assert outbox.flush() == {(topic, p): n - 1 for p, n in sent.items() if n}

    outbox.produce(topic, b"again", b"k", 1)
    assert outbox.flush() == {(topic, 1): sent[1]}  # only what was acknowledged since
    assert outbox.flush() == {}


def test_a_failed_delivery_fails_the_flush_and_names_its_partition(own_broker: str) -> None:
    settings = settings_for(own_broker)
    topic = settings.topics.decisions
    outbox = Outbox(settings)
    outbox.produce(topic, b"v", b"k", 2)
    assert outbox.flush() == {(topic, 2): 0}
    # A report with an error, as librdkafka hands it to the partition's callback (a message that timed
    # out): the next flush raises, naming where.
    outbox._trackers[(topic, 2)](KafkaError(KafkaError._MSG_TIMED_OUT), cast(Message, None))
    with pytest.raises(DeliveryError, match=rf"{topic}\[2\]"):
        outbox.flush()

"""The end-offset probe that keeps /healthz truthful when the fetcher stalls, against the real broker."""

from __future__ import annotations

from confluent_kafka import Producer

from stream.kafka_io import EndOffsetProbe
from tests.support.worker import settings_for


def test_probe_sees_waiting_records_without_any_fetch(own_broker: str) -> None:
    settings = settings_for(own_broker)
    producer = Producer({"bootstrap.servers": own_broker})
    for _ in range(5):
        producer.produce(settings.topics.events, key=b"u", value=b"{}", partition=1)
        producer.flush(10)
    ends = EndOffsetProbe(settings).ends([(settings.topics.events, 0), (settings.topics.events, 1)])
    assert ends[(settings.topics.events, 0)] == 0
    # A lower bound on the embedded broker (see EndOffsetProbe), exact on Kafka: work is seen waiting.
    assert 1 <= ends[(settings.topics.events, 1)] <= 5


def test_probe_of_nothing_or_of_an_unknown_topic_answers_without_raising(own_broker: str) -> None:
    probe = EndOffsetProbe(settings_for(own_broker))
    assert probe.ends([]) == {}
    assert ("no-such-topic", 0) not in probe.ends([("no-such-topic", 0)], timeout=2.0)

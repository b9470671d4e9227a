"""The console's topic reader on a real broker: it follows the topics and finds one created later."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stream.broker import EmbeddedBroker
from stream.console import reader as reader_module
from stream.console.feed import ConsoleFeed
from stream.console.reader import TopicReader
from tests.support.worker import produce, settings_for, wait_for

pytestmark = pytest.mark.integration

T0 = 1_780_315_200.0


@pytest.fixture
def bare_broker() -> Iterator[str]:
    """A broker with only the pushes and events topics (no push-decisions, no dead-letters yet)."""
    with EmbeddedBroker() as b:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for future in admin.create_topics([NewTopic("pushes", 2, 1), NewTopic("events", 2, 1)]).values():
            future.result(15)
        yield b.bootstrap


def test_reader_follows_the_topics_and_picks_up_a_topic_created_later(
    bare_broker: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(reader_module, "MISSING_TOPIC_RETRY_SECONDS", 0.5)
    settings = settings_for(bare_broker)
    settings.console.start = "earliest"
    feed = ConsoleFeed(holdout_share=0.0)
    reader = TopicReader(settings, feed)
    reader.start()
    try:
        push = {"push_id": "p1", "user_id": "u1", "item_id": "i1", "trigger": "in_session", "reason": "r",
                "score": 0.5, "threshold": 0.2, "created_at": T0, "expires_at": T0 + 60}  # fmt: skip
        produce(bare_broker, "pushes", [(b"u1", json.dumps(push).encode())])
        lone = b'{"user_id": "\\ud800", "type": "view", "ts": 1780315200}'  # once stopped the reader
        produce(bare_broker, "events", [(b"u1", b"{not json"), (b"u1", lone)])
        wait_for(lambda: feed.read["pushes"] == 1 and feed.skipped == 2, 20, what="push and bad events")
        assert sorted(reader.missing_topics) == ["dead-letters", "push-decisions"]

        admin = AdminClient({"bootstrap.servers": bare_broker})
        admin.create_topics([NewTopic("push-decisions", 2, 1)])["push-decisions"].result(15)
        decision = {"user_id": "u1", "item_id": "i2", "trigger": "in_session", "outcome": "held",
                    "reason": "quiet_hours", "score": 0.4, "threshold": 0.2, "ts": T0}  # fmt: skip
        produce(bare_broker, "push-decisions", [(b"u1", json.dumps(decision).encode())])
        wait_for(lambda: feed.read["decisions"] == 1, 20, what="the decision from the new topic")
        assert reader.missing_topics == ["dead-letters"]
        assert reader.error is None and reader.is_alive()
    finally:
        reader.stop()

"""The console's aggregation logic (no Kafka): attribution, bounds, deltas, the holdout comparison."""

from __future__ import annotations

import json
import random

import pytest

from stream.console.feed import MAX_REASON_KEYS, ConsoleFeed
from stream.console.reader import _decode
from stream.console.totals import HyperLogLog
from stream.policy import in_holdout

T0 = 1_780_315_200.0


def _push(n: int, user: str = "u1", item: str = "i1", trigger: str = "in_session", at: float = T0) -> dict:
    return {
        "push_id": f"p{n}",
        "user_id": user,
        "item_id": item,
        "trigger": trigger,
        "reason": "viewed it twice",
        "score": 0.7,
        "threshold": 0.4,
        "created_at": at,
        "expires_at": at + 3600,
        "title": "Jacket",
    }


def _event(kind: str, user: str = "u1", ts: float = T0 + 10, **extra: object) -> dict:
    return {"event_id": f"e{random.random()}", "user_id": user, "type": kind, "ts": ts, **extra}


def test_answers_are_attributed_by_push_id_once_each_and_a_click_counts_the_open():
    feed = ConsoleFeed(holdout_share=0.0)
    assert feed.on_push(_push(1, trigger="price_drop"))
    assert feed.on_event(_event("push_click", push_id="p1")) == "click"
    assert feed.on_event(_event("push_open", push_id="p1")) is None  # already opened by the click
    assert feed.on_event(_event("push_click", push_id="p1")) is None  # redelivered
    assert feed.on_event(_event("push_dismiss", push_id="p1")) == "dismiss"
    assert feed.on_event(_event("push_open", push_id="never-sent")) is None
    t = feed.delta()["triggers"]["price_drop"]
    assert (t["pushes"], t["opens"], t["clicks"], t["dismisses"]) == (1, 1, 1, 1)
    assert t["open_rate"] == 1.0 and t["click_rate"] == 1.0
    assert feed.unattributed == 1
    row = feed.delta()["pushes"][0]
    assert row["status"] == ["open", "click", "dismiss"]


def test_a_purchase_goes_to_the_latest_push_of_that_item_within_the_window():
    feed = ConsoleFeed(attribution_window_seconds=3600.0, holdout_share=0.0)
    feed.on_push(_push(1, item="i1", trigger="in_session", at=T0))
    feed.on_push(_push(2, item="i1", trigger="price_drop", at=T0 + 100))
    feed.on_push(_push(3, item="i2", trigger="back_in_stock", at=T0 + 100))
    feed.on_push(_push(4, user="u2", item="i1", trigger="promotion_start", at=T0 + 100))
    buy = {"item_id": "i1", "price": 10.0, "quantity": 2}
    assert feed.on_event(_event("purchase", ts=T0 + 200, **buy)) == "purchase"
    assert feed.on_event(_event("purchase", ts=T0 + 300, **buy)) == "purchase"  # the older push
    assert feed.on_event(_event("purchase", ts=T0 + 400, **buy)) is None  # both credited already
    feed.on_push(_push(5, item="i1", trigger="cart_abandonment", at=T0))
    assert feed.on_event(_event("purchase", ts=T0 + 3601, **buy)) is None  # past the window
    triggers = feed.delta()["triggers"]
    assert triggers["price_drop"]["purchases"] == 1 and triggers["price_drop"]["revenue"] == 20.0
    assert triggers["in_session"]["purchases"] == 1
    assert triggers["price_drop"]["conversion"] == 1.0
    assert triggers["back_in_stock"]["purchases"] == 0 and triggers["promotion_start"]["purchases"] == 0
    assert triggers["cart_abandonment"]["purchases"] == 0
    # a purchase before the push is not caused by it
    feed.on_push(_push(6, user="u3", item="i9", trigger="in_session", at=T0 + 1000))
    assert feed.on_event(_event("purchase", user="u3", ts=T0 + 999, item_id="i9", price=1.0)) is None


def test_a_redelivered_push_counts_once():
    feed = ConsoleFeed()
    assert feed.on_push(_push(1))
    assert not feed.on_push(_push(1))
    assert feed.delta()["triggers"]["in_session"]["pushes"] == 1
    assert feed.duplicates == 1


def test_memory_is_bounded_and_the_attribution_index_holds_no_ids():
    feed = ConsoleFeed(window=50, attribution_pushes=200, holdout_share=0.0)
    for n in range(5_000):
        feed.on_push(_push(n, user=f"user-{n}", item=f"item-{n % 7}"))
        feed.on_decision(
            {"user_id": f"user-{n}", "item_id": "i", "trigger": "in_session", "outcome": "suppressed",
             "reason": f"reason-{n}", "score": 0.1, "threshold": 0.4, "ts": T0}
        )  # fmt: skip
    assert len(feed._recent) == 50
    assert len(feed._decisions) == 50
    assert len(feed._tracked) == 200
    assert sum(len(ids) for ids in feed._by_pair.values()) == 200
    assert all(isinstance(k, bytes) for k in feed._by_pair)
    assert len(feed.decision_counts) == MAX_REASON_KEYS + 1  # the first reasons, then "other"
    assert feed.decision_counts[("suppressed", "in_session", "other")] == 5_000 - MAX_REASON_KEYS
    # The oldest push is forgotten: its answers are counted as unattributed, not wrongly.
    assert feed.on_event(_event("push_open", user="user-0", push_id="p0")) is None
    assert feed.on_event(_event("push_open", user="user-4999", push_id="p4999")) == "open"
    delta = feed.delta()
    assert len(delta["pushes"]) == 50 and len(delta["decisions"]) == 50


def test_delta_sends_only_what_changed_and_updated_pushes_again():
    feed = ConsoleFeed(holdout_share=0.0)
    feed.on_push(_push(1))
    feed.on_push(_push(2, item="i2"))
    first = feed.delta(0)
    assert first["reset"] and [p["push_id"] for p in first["pushes"]] == ["p1", "p2"]
    assert feed.delta(first["seq"])["pushes"] == []
    feed.on_event(_event("push_open", push_id="p1"))
    feed.on_push(_push(3, item="i3"))
    second = feed.delta(first["seq"])
    assert not second["reset"]
    assert [(p["push_id"], p["status"]) for p in second["pushes"]] == [("p1", ["open"]), ("p3", [])]
    # the page sorts by arrival ("order"), not by last change ("seq")
    assert second["pushes"][0]["order"] == first["pushes"][0]["order"]
    assert second["pushes"][1]["order"] > first["pushes"][1]["order"]
    json.dumps(second)  # what the page receives is JSON


def test_decisions_keep_held_and_suppressed_rows_and_count_every_outcome():
    feed = ConsoleFeed()
    base = {"user_id": "u1", "item_id": "i1", "trigger": "cart_abandonment", "score": 0.5, "threshold": 0.4,
            "ts": T0}  # fmt: skip
    feed.on_decision({**base, "outcome": "emitted", "reason": "ok"})
    feed.on_decision({**base, "outcome": "held", "reason": "quiet_hours"})
    feed.on_decision({**base, "outcome": "suppressed", "reason": "daily_cap"})
    feed.on_decision({"outcome": "held"})  # incomplete: skipped
    delta = feed.delta()
    assert [(d["outcome"], d["reason"]) for d in delta["decisions"]] == [
        ("held", "quiet_hours"), ("suppressed", "daily_cap")
    ]  # fmt: skip
    counts = {(c["outcome"], c["reason"]): c["count"] for c in delta["decision_counts"]}
    assert counts == {("emitted", "ok"): 1, ("held", "quiet_hours"): 1, ("suppressed", "daily_cap"): 1}
    assert feed.skipped == 1


def test_holdout_comparison_uses_the_workers_rule_and_counts_purchases_per_user():
    share, salt = 0.5, "kairos-holdout-v1"
    feed = ConsoleFeed(holdout_share=share, holdout_salt=salt)
    users = [f"user-{n}" for n in range(400)]
    held = [u for u in users if in_holdout(u, share, salt)]
    treated = [u for u in users if not in_holdout(u, share, salt)]
    for u in users:
        feed.on_event(_event("view", user=u, item_id="i1"))
        feed.on_event(_event("view", user=u, item_id="i2"))
    for u in treated[:40]:
        feed.on_event(_event("purchase", user=u, item_id="i1", price=5.0))
    for u in held[:10]:
        feed.on_event(_event("purchase", user=u, item_id="i1", price=5.0))
    h = feed.delta()["holdout"]
    assert h["treated"]["users"] == pytest.approx(len(treated), rel=0.02)
    assert h["holdout"]["users"] == pytest.approx(len(held), rel=0.02)
    assert h["treated"]["purchases"] == 40 and h["holdout"]["purchases"] == 10
    assert h["treated"]["events"] == 2 * len(treated) + 40
    ppu_t = 40 / h["treated"]["users"]
    ppu_h = 10 / h["holdout"]["users"]
    assert h["treated"]["purchases_per_user"] == pytest.approx(ppu_t)
    assert h["lift"] == pytest.approx(ppu_t / ppu_h - 1.0)
    assert h["treated"]["conversion"] == pytest.approx(40 / h["treated"]["users"], rel=0.05)


def test_no_holdout_means_no_lift_and_every_user_is_treated():
    feed = ConsoleFeed(holdout_share=0.0)
    feed.on_event(_event("purchase", item_id="i1", price=3.0))
    h = feed.delta()["holdout"]
    assert h["lift"] is None and h["holdout"]["users"] == 0 and h["treated"]["users"] == 1


def test_one_event_from_far_ahead_does_not_pin_the_latest_event_time():
    now = [T0]
    feed = ConsoleFeed(holdout_share=0.0, max_future_skew_seconds=300.0, clock=lambda: now[0])
    feed.on_event(_event("view", ts=T0 - 60))
    assert feed.delta()["last_event_ts"] == T0 - 60
    # Years ahead (the workers dead-letter it as future_timestamp, but it is on the events topic).
    feed.on_event(_event("view", ts=T0 + 5 * 365 * 86400))
    feed.on_event(_event("view", ts=T0 + 301))  # just past the skew
    assert feed.last_event_ts == T0 - 60 and feed.read["events"] == 3  # still read and counted
    feed.on_event(_event("view", ts=T0 + 300))  # within the workers' skew: the latest
    assert feed.last_event_ts == T0 + 300
    feed.on_event(_event("view", ts=T0 + 10))  # older than the latest: changes nothing
    assert feed.last_event_ts == T0 + 300
    now[0] = T0 + 3600  # later events move it on, as they would not past a pinned far-future time
    feed.on_event(_event("view", ts=T0 + 3500))
    assert feed.delta()["last_event_ts"] == T0 + 3500


def test_garbage_is_skipped_not_raised():
    feed = ConsoleFeed()
    assert not feed.on_push({"push_id": 3})
    assert feed.on_event({"user_id": "u", "type": "view", "ts": "yesterday"}) is None
    assert feed.on_event({"user_id": "u", "type": "purchase", "ts": T0, "price": float("nan")}) is None
    feed.on_dead_letter({"reason": "bad_json", "error": "x" * 1000, "source_topic": "events"})
    delta = feed.delta()
    assert feed.skipped == 2
    assert delta["dead_letter_counts"] == {"bad_json": 1} and len(delta["dead_letters"][0]["error"]) == 200
    json.dumps(delta)


def test_prices_and_quantities_past_the_contract_add_no_revenue_and_the_json_stays_valid():
    feed = ConsoleFeed(holdout_share=0.0)
    assert feed.on_push(_push(1))
    hostile = [(1e308, 10), (-1e308, 10), (1e300, 1e300), (5.0, 0.5), (5.0, 20_000)]
    for n, (price, quantity) in enumerate(hostile):
        feed.on_event(_event("purchase", item_id="i1", ts=T0 + n, price=price, quantity=quantity))
    feed.on_event(_event("purchase", item_id="i2", price=1e9, quantity=10_000))  # the contract's largest
    delta = feed.delta()
    json.loads(json.dumps(delta, allow_nan=False))  # strict JSON: what the page's JSON.parse reads
    assert delta["holdout"]["treated"]["purchases"] == 6 and delta["holdout"]["treated"]["revenue"] == 1e13
    assert (
        delta["triggers"]["in_session"]["purchases"] == 1 and delta["triggers"]["in_session"]["revenue"] == 0
    )


def test_integers_past_a_floats_range_are_no_number_and_do_not_stop_the_reader():
    # JSON integers are unbounded: a purchase priced 1 followed by 400 zeros raised OverflowError in the
    # feed, which stopped the topic reader for good. Such a number is no number, like NaN or a string.
    huge = "1" + "0" * 400
    feed = ConsoleFeed(holdout_share=0.0)
    assert feed.on_push(_push(1))
    purchase = _decode(
        f'{{"user_id": "u1", "type": "purchase", "item_id": "i1", "ts": {T0 + 10}, '
        f'"price": {huge}, "quantity": {huge}}}'.encode()
    )
    assert purchase is not None
    feed.on_event(purchase)
    feed.on_event(_decode(f'{{"user_id": "u1", "type": "view", "ts": {huge}}}'.encode()) or {})
    feed.on_dead_letter({"reason": "bad_json", "error": "e", "received_at": int(huge)})
    feed.on_decision(
        {"user_id": "u1", "item_id": "i1", "trigger": "in_session", "outcome": "held", "reason": "quiet",
         "score": int(huge), "threshold": -int(huge), "ts": int(huge)}
    )  # fmt: skip
    delta = feed.delta()
    json.loads(json.dumps(delta, allow_nan=False))
    assert delta["holdout"]["treated"]["purchases"] == 1 and delta["holdout"]["treated"]["revenue"] == 0
    assert feed.skipped == 1  # the view without a usable time


def test_a_message_holding_a_lone_surrogate_is_skipped_before_the_feed_hashes_it():
    # "\\ud800" decodes to a string that cannot be encoded again: hashing the user for the holdout
    # raised, and the exception stopped the topic reader for good.
    lone = [
        b'{"user_id": "\\ud800", "type": "view", "ts": 1780315200}',
        b'{"push_id": "p", "user_id": "u\\udc00", "item_id": "i", "trigger": "in_session"}',
        b'{"user_id": "u", "type": "view", "ts": 1780315200, "\\udbff": 1}',
        '{"user_id": "\\ud800", "type": "view", "ts": 1780315200}'.encode("utf-16"),  # not UTF-8 anyway
    ]
    assert [_decode(raw) for raw in lone] == [None] * 4
    assert _decode(b'{"user_id": "\\ud83d\\ude00"}') == {"user_id": "\U0001f600"}  # a pair: one character
    with pytest.raises(UnicodeEncodeError):  # what the feed would have been given
        ConsoleFeed().on_event(json.loads(lone[0]))


@pytest.mark.parametrize("n", [0, 1, 7, 100, 3_000, 50_000])
def test_hyperloglog_counts_distinct_values_closely(n: int):
    sketch = HyperLogLog()
    for i in range(n):
        sketch.add(f"user-{i}")
        sketch.add(f"user-{i}")  # repeats do not count
    if n <= 100:
        assert sketch.count() == n
    else:
        assert sketch.count() == pytest.approx(n, rel=0.03)
    assert len(sketch.registers) == 16_384


def test_a_message_the_feed_fails_on_is_skipped_and_the_reader_goes_on() -> None:
    from stream.console.reader import TopicReader
    from stream.settings import Settings

    feed = ConsoleFeed(holdout_share=0.0)
    reader = TopicReader(Settings(), feed)

    def broken(value: dict) -> None:
        raise OverflowError("a value the feed cannot hold")

    for _ in range(3):
        reader._apply(broken, {"user_id": "u1"}, "events")  # does not raise
    reader._apply(feed.on_event, _event("view"), "events")
    assert feed.skipped == 3
    assert reader.error == "a message on events was skipped: OverflowError"
    assert feed.read["events"] == 1  # the next good message is read

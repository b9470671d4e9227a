"""The engine's bookkeeping, driven with a dict-backed store and a deterministic fake scorer."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest

from stream.asks import Work
from stream.contract import Push, push_id, to_json_bytes
from stream.engine import TYPE_INDEX, Engine, Inbound, Outcome
from stream.partition_state import META_ROW, PartitionState
from stream.partitioning import partition_for
from stream.policy_state import UNMET_RECOVERED_SECONDS, unmet
from tests.stream.fakes import (
    ITEMS,
    PARTITIONS,
    T0,
    DictState,
    FakeScorer,
    catalog_entry,
    catalog_record,
    consent,
    ev,
    event_bytes,
    make_engine,
    make_settings,
    record,
)

VIEW, CART, REMOVE, BUY = (TYPE_INDEX[t] for t in ("view", "add_to_cart", "remove_from_cart", "purchase"))


def run(engine: Engine, records: list[Inbound], store: DictState, batch: int) -> Outcome:
    """Process ``records`` in batches of ``batch``; the outcomes folded into one."""
    out = Outcome()
    for start in range(0, len(records), batch):
        out.extend(engine.process(records[start : start + batch], store))
    return out


def part_of(engine: Engine, user_id: str) -> PartitionState:
    """The shared state of the user's partition."""
    return engine.part(partition_for(user_id, PARTITIONS))


def neighbour_of(user_id: str) -> str:
    """Another user on the same partition (their events move the same event-time clock)."""
    mine = partition_for(user_id, PARTITIONS)
    return next(u for i in range(1000) if (u := f"n{i}") != user_id and partition_for(u, PARTITIONS) == mine)


def only(counter: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The non-zero entries of a counter."""
    return {k: v for k, v in counter.items() if v}


# -- one step per event ---------------------------------------------------------------------------


def test_one_gru_step_per_item_event() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    records = [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "add_to_cart", "i2", T0 + 10),
        ev("e3", "u1", "search", None, T0 + 20, query="socks"),  # no item: no step
        ev("e4", "u1", "remove_from_cart", "i2", T0 + 30),
        ev("e5", "u1", "view", "i3", T0 + 40),
        ev("e6", "u1", "purchase", "i3", T0 + 50, price=9.5, quantity=1),
    ]
    out = engine.process(records, store)
    state = store.user("u1")
    expected = scorer.fold([("i1", VIEW), ("i2", CART), ("i2", REMOVE), ("i3", VIEW), ("i3", BUY)])
    assert state.hidden is not None
    np.testing.assert_array_equal(state.hidden, expected)
    assert state.hidden[-1] == 5  # exactly five steps
    assert scorer.rows == 5
    assert state.model_version == "fake-1"
    assert state.n_events == 6
    assert [r.item_id for r in state.recent] == ["i1", "i2", "i2", "i3", "i3"]
    assert only(out.events) == {
        ("view", "processed"): 2,
        ("add_to_cart", "processed"): 1,
        ("search", "processed"): 1,
        ("remove_from_cart", "processed"): 1,
        ("purchase", "processed"): 1,
    }


def test_steps_continue_across_batches_from_the_stored_state() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    engine.process([ev("e1", "u1", "view", "i1", T0)], store)
    engine.process([ev("e2", "u1", "view", "i2", T0 + 5)], store)
    engine.process([ev("e3", "u1", "push_open", "i2", T0 + 6, push_id="nope")], store)  # no step
    hidden = store.user("u1").hidden
    assert hidden is not None
    np.testing.assert_array_equal(hidden, scorer.fold([("i1", VIEW), ("i2", VIEW)]))


def test_users_are_stepped_independently_in_one_batch() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    engine.process(
        [
            ev("a1", "alice", "view", "i1", T0),
            ev("b1", "bob", "view", "i2", T0 + 1),
            ev("a2", "alice", "view", "i3", T0 + 2),
            ev("b2", "bob", "add_to_cart", "i2", T0 + 3),
            ev("a3", "alice", "view", "i1", T0 + 4),
        ],
        store,
    )
    alice, bob = store.user("alice").hidden, store.user("bob").hidden
    assert alice is not None and bob is not None
    np.testing.assert_array_equal(alice, scorer.fold([("i1", VIEW), ("i3", VIEW), ("i1", VIEW)]))
    np.testing.assert_array_equal(bob, scorer.fold([("i2", VIEW), ("i2", CART)]))
    # Rounds: each user's r-th event goes into the r-th batched step.
    assert scorer.calls == 3 and scorer.rows == 5


# -- redeliveries, unknown items, malformed input --------------------------------------------------


def test_redelivery_in_the_same_batch_changes_nothing() -> None:
    events = [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "add_to_cart", "i1", T0 + 10),
    ]
    clean = DictState()
    make_engine().process(events, clean)

    store = DictState()
    out = make_engine().process([events[0], events[1], events[0], events[1]], store)
    assert store.data == clean.data  # byte for byte the state without the redeliveries
    assert out.events[("view", "duplicate")] == 1
    assert out.events[("add_to_cart", "duplicate")] == 1
    assert out.events[("view", "processed")] == 1


def test_redelivery_in_a_later_batch_changes_nothing() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    first = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
    out1 = engine.process(first, store)
    assert len(out1.pushes) == 1  # the second view crosses the threshold
    before, puts, rows = dict(store.data), store.puts, scorer.rows
    out2 = engine.process(first, store)
    assert store.data == before and store.puts == puts  # nothing rewritten
    assert scorer.rows == rows  # no step
    assert out2.pushes == [] and out2.events == Counter({("view", "duplicate"): 2})


def test_dedupe_window_is_the_configured_size() -> None:
    engine = make_engine(make_settings(worker={"dedupe_event_ids": 2}))
    store = DictState()
    engine.process([ev(f"e{i}", "u1", "search", None, T0 + i, query="q") for i in range(3)], store)
    assert list(store.user("u1").event_ids) == ["e1", "e2"]
    out = engine.process([ev("e0", "u1", "search", None, T0 + 0, query="q")], store)
    assert out.events[("search", "processed")] == 1  # e0 fell out of the window


def test_unknown_item_is_counted_without_a_step() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    out = engine.process(
        [
            ev("e1", "u1", "view", "i1", T0),
            ev("e2", "u1", "view", "never-seen", T0 + 1),
            ev("e3", "u1", "view", "i2", T0 + 2),
        ],
        store,
    )
    assert only(out.events) == {("view", "processed"): 2, ("view", "unknown_item"): 1}
    hidden = store.user("u1").hidden
    assert hidden is not None
    np.testing.assert_array_equal(hidden, scorer.fold([("i1", VIEW), ("i2", VIEW)]))
    assert hidden[-1] == 2


def test_malformed_records_become_dead_letters_and_the_batch_goes_on() -> None:
    engine = make_engine()
    store = DictState()
    bad_json = record(b'{"event_id": "e2", ', "u1")
    no_item = record(event_bytes("e3", "u1", "view", None, T0 + 2), "u1")
    binary = record(b"\xff\x00\x01", "u1")
    records = [
        ev("e1", "u1", "view", "i1", T0),
        bad_json,
        no_item,
        binary,
        ev("e4", "u1", "view", "i2", T0 + 3),
    ]
    out = engine.process(records, store)
    assert [d.reason for d in out.dead_letters] == ["bad_json", "invalid_field", "not_utf8"]
    for letter, rec in zip(out.dead_letters, (bad_json, no_item, binary), strict=True):
        assert letter.original_bytes() == rec.value
        assert (letter.source_topic, letter.partition, letter.offset) == ("events", rec.partition, rec.offset)
        assert letter.original_key == "u1"
    assert "needs an item_id" in out.dead_letters[1].error
    assert out.events[("unknown", "dead_letter")] == 3
    assert out.events[("view", "processed")] == 2
    assert store.user("u1").n_events == 2


def test_record_keyed_by_another_user_is_a_key_mismatch() -> None:
    engine = make_engine()
    store = DictState()
    wrong = record(event_bytes("e1", "u1", "view", "i1", T0), "u1", key=b"u2")
    out = engine.process([wrong], store)
    assert [d.reason for d in out.dead_letters] == ["key_mismatch"]
    assert out.dead_letters[0].original_key == "u2"
    # Neither user's state was touched (only the partition's applied offsets, see stream.partition_state).
    assert set(store.data) == {(wrong.partition, META_ROW)}
    consent = record(b'{"user_id": "u1", "opted_in": false, "ts": 1717236000.0}', "u1", "consent", b"u3")
    out = engine.process([consent], store)
    assert [(d.reason, d.source_topic) for d in out.dead_letters] == [("key_mismatch", "consent")]
    assert out.consent_updates == 0 and set(store.data) == {(wrong.partition, META_ROW)}


# -- consent and the threshold ---------------------------------------------------------------------


def test_push_when_interest_crosses_the_threshold() -> None:
    engine = make_engine(make_settings(worker={"audit_decisions": True}))
    store = DictState()
    # One view: interest 0.5 < 0.55. A second view two minutes later: 0.5 * 1 + 1 = 1.5 -> 0.6.
    out1 = engine.process([ev("e1", "u1", "view", "i1", T0)], store)
    assert out1.pushes == []
    assert out1.suppressions[("in_session", "below_threshold")] == 1
    assert [(d.outcome, d.reason, d.item_id) for _, d in out1.decisions] == [
        ("suppressed", "below_threshold", "i1")
    ]
    assert out1.decisions[0][1].score == pytest.approx(0.5)

    out2 = engine.process([ev("e2", "u1", "view", "i1", T0 + 120)], store)
    assert len(out2.pushes) == 1
    partition, push = out2.pushes[0]
    assert partition == partition_for("u1", PARTITIONS)
    assert push.push_id == push_id("u1", "i1", "in_session", "e2")
    assert (push.user_id, push.item_id, push.trigger) == ("u1", "i1", "in_session")
    assert push.score == pytest.approx(0.6) and push.threshold == pytest.approx(0.55)
    assert push.model_version == "fake-1"
    assert push.event_ts == T0 + 120 and push.created_at == T0 + 120  # event-time clock
    assert push.expires_at == T0 + 120 + 3600
    assert (push.title, push.category, push.price) == ("Item i1", "cat-i1", 100.0)
    assert push.reason == "You viewed this 2 times"
    assert [(d.outcome, d.reason) for _, d in out2.decisions] == [("emitted", "ok")]
    assert [r.push_id for r in store.user("u1").policy.pushes] == [push.push_id]


def test_push_ids_are_deterministic_across_engines() -> None:
    records = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
    a = make_engine().process(records, DictState())
    b = make_engine().process(records, DictState())
    assert [p for _, p in a.pushes] == [p for _, p in b.pushes] and len(a.pushes) == 1


def test_minimum_gap_suppresses_the_next_push() -> None:
    engine = make_engine()
    store = DictState()
    records = [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "view", "i1", T0 + 120),  # push for i1
        ev("e3", "u1", "view", "i2", T0 + 240),
        ev("e4", "u1", "view", "i2", T0 + 360),  # i2 at 0.6, but within the gap
        ev("e5", "u1", "view", "i2", T0 + 1500),
        ev("e6", "u1", "view", "i2", T0 + 2700),
        ev("e7", "u1", "view", "i2", T0 + 120 + 3600),  # exactly min_gap after the first push
    ]
    out = run(engine, records, store, batch=1)
    assert [(p.item_id, p.push_id) for _, p in out.pushes] == [
        ("i1", push_id("u1", "i1", "in_session", "e2")),
        ("i2", push_id("u1", "i2", "in_session", "e7")),
    ]
    assert out.suppressions[("in_session", "min_gap")] == 4  # e3..e6


def test_consent_opt_out_means_no_push() -> None:
    engine = make_engine()
    store = DictState()
    out = engine.process(
        [
            consent("u1", False, T0 - 10),
            ev("e1", "u1", "view", "i1", T0),
            ev("e2", "u1", "view", "i1", T0 + 120),
        ],
        store,
    )
    assert out.consent_updates == 1
    assert out.pushes == []
    assert out.suppressions[("in_session", "no_consent")] == 2
    assert store.user("u1").policy.opted_in is False
    # Opting back in (a newer record) lets the next crossing through.
    out = engine.process([consent("u1", True, T0 + 130), ev("e3", "u1", "view", "i1", T0 + 240)], store)
    assert [p.push_id for _, p in out.pushes] == [push_id("u1", "i1", "in_session", "e3")]


def test_stale_consent_is_ignored_and_opt_out_cancels_timers() -> None:
    engine = make_engine()
    store = DictState()
    engine.process([consent("u1", True, T0), ev("e1", "u1", "add_to_cart", "i1", T0 + 1)], store)
    assert [t[2] for t in store.user("u1").timers] == ["cart_abandonment"]
    out = engine.process([consent("u1", False, T0 - 100)], store)  # older than the applied one
    assert out.consent_updates == 1 and store.user("u1").policy.opted_in is True
    engine.process([consent("u1", False, T0 + 2)], store)
    assert store.user("u1").policy.opted_in is False
    assert store.user("u1").timers == [] and part_of(engine, "u1").timers.timers_for("u1") == []


# -- batch boundaries --------------------------------------------------------------------------------


def shop_stream(n: int, seed: int) -> list[Inbound]:
    """A deterministic interleaved stream of four users, with one redelivery and one bad record."""
    rng = random.Random(seed)
    users = ["alice", "bob", "carol", "dave"]
    kinds = ["view"] * 6 + ["add_to_cart", "add_to_cart", "remove_from_cart", "purchase", "search"]
    records: list[Inbound] = []
    ts = T0
    for i in range(n):
        ts += rng.choice([5.0, 40.0, 90.0, 300.0])
        user = rng.choice(users)
        kind = rng.choice(kinds)
        item = None if kind == "search" else rng.choice(ITEMS[:3])
        records.append(
            ev(f"e{i}", user, kind, item, ts, session_id=None, query="q" if item is None else None)
        )
    records.insert(20, records[10])  # a redelivery
    records.insert(30, record(b"[1, 2]", "bob"))  # a malformed record
    return records


def test_decisions_do_not_depend_on_batch_boundaries() -> None:
    records = shop_stream(60, seed=3)
    results = []
    for batch in (1, 7, 64):
        store = DictState()
        engine = make_engine(make_settings(worker={"audit_decisions": True}))
        out = run(engine, records, store, batch)
        results.append((store.data, list(out.pushes), only(out.events), list(out.decisions)))
    assert results[0][1], "the stream should produce some pushes"
    assert results[0][2][("unknown", "dead_letter")] == 1
    assert sum(v for (_, o), v in results[0][2].items() if o == "duplicate") == 1
    for other in results[1:]:
        assert other[0] == results[0][0]  # the same states, byte for byte
        assert other[1] == results[0][1]  # the same pushes, in the same order
        assert other[2] == results[0][2]
        assert other[3] == results[0][3]  # the same audit decisions, in stream order
    # Suppression counts are not compared: see the two xfail tests below.


def test_audit_decisions_come_out_in_stream_order_whatever_the_batching() -> None:
    """Pass 2 decides round by round (each user's first event, then their second ...): in one batch
    Alice's second decision is made after Bob's first; the decisions topic still gets stream order."""
    records = [
        ev("a1", "alice", "view", "i1", T0),
        ev("a2", "alice", "add_to_cart", "i2", T0 + 5),  # decided whatever the decision interval
        ev("b1", "bob", "view", "i3", T0 + 9),
    ]
    orders = []
    for batch in (1, 3):
        engine = make_engine(make_settings(worker={"audit_decisions": True}))
        out = run(engine, records, DictState(), batch)
        orders.append([(d.user_id, d.ts) for _, d in out.decisions])
    assert {user for user, _ in orders[0]} == {"alice", "bob"}
    assert orders[0] == sorted(orders[0], key=lambda decided: decided[1])  # stream order
    assert orders[1] == orders[0]


def test_candidates_do_not_see_later_events_of_other_users() -> None:
    # i5 is popular with everyone (interest 0.6 with no history). Bob searches before anyone viewed
    # i5, so nothing is trending yet and he has no candidate; Alice views i5 a second later.
    records = [
        ev("b1", "bob", "search", None, T0, query="q"),
        ev("a1", "alice", "view", "i5", T0 + 1),
    ]
    pushes = []
    for batch in (1, 2):
        engine = make_engine(scorer=FakeScorer(prior={"i5": 1.5}))
        out = run(engine, records, DictState(), batch)
        pushes.append(sorted((p.user_id, p.item_id) for _, p in out.pushes))
    assert pushes[0] == [("alice", "i5")]
    assert pushes[1] == pushes[0]  # in one batch Bob is also pushed i5, "trending" after his search


def test_suppression_counts_do_not_depend_on_batching() -> None:
    settings = make_settings(quota_trending=0)  # no trending: Bob's search has no candidate at all
    records = [ev("b1", "bob", "search", None, T0, query="q"), ev("a1", "alice", "view", "i1", T0)]
    counts = []
    for batch in (1, 2):
        out = run(make_engine(settings), records, DictState(), batch)
        counts.append(only(out.suppressions))
    assert counts[0] == {("in_session", "below_threshold"): 1}  # Alice's 0.5
    assert counts[1] == counts[0]  # batched, Bob's empty ask is counted too


# -- sessions --------------------------------------------------------------------------------------


def test_new_session_id_resets_the_hidden_state() -> None:
    scorer = FakeScorer()
    engine = make_engine(scorer=scorer)
    store = DictState()
    engine.process(
        [
            ev("e1", "u1", "view", "i1", T0, session_id="s1"),
            ev("e2", "u1", "view", "i2", T0 + 10, session_id="s1"),
            ev("e3", "u1", "view", "i3", T0 + 20, session_id="s2"),
        ],
        store,
    )
    state = store.user("u1")
    assert state.hidden is not None and state.session_id == "s2"
    np.testing.assert_array_equal(state.hidden, scorer.fold([("i3", VIEW)]))
    assert state.n_events == 3  # the dedupe window and counters are kept


def test_inactivity_gap_resets_the_hidden_state() -> None:
    scorer = FakeScorer()
    engine = make_engine(make_settings(worker={"session_gap_seconds": 600}), scorer=scorer)
    store = DictState()
    engine.process(
        [
            ev("e1", "u1", "view", "i1", T0, session_id=None),
            ev("e2", "u1", "view", "i2", T0 + 600, session_id=None),
        ],
        store,
    )
    state = store.user("u1")
    assert state.session_id == f"u1@{T0:.0f}"
    assert state.hidden is not None and state.hidden[-1] == 2  # a gap of exactly 600 s is the same session
    engine.process([ev("e3", "u1", "view", "i3", T0 + 1201, session_id=None)], store)
    state = store.user("u1")
    assert state.session_id == f"u1@{T0 + 1201:.0f}"
    assert state.hidden is not None
    np.testing.assert_array_equal(state.hidden, scorer.fold([("i3", VIEW)]))


# -- catalog triggers --------------------------------------------------------------------------------


def price_drop_engine(owned: set[int] | None = None) -> tuple[Engine, DictState]:
    engine = make_engine(make_settings(trigger_thresholds={"price_drop": 0.3}))
    if owned is not None:
        engine.owned = owned
    store = DictState()
    out = engine.process([ev("e1", "u1", "view", "i1", T0)], store)  # interest 0.5: indexed, no push
    assert out.pushes == [] and part_of(engine, "u1").interest.users_for("i1", T0, 0.2)[0][0] == "u1"
    return engine, store


def test_price_drop_reaches_the_interested_user() -> None:
    engine, store = price_drop_engine()
    update = catalog_entry("i1", price=80.0, updated_at=T0 + 300)
    out = engine.apply_catalog([catalog_record(update)], store)
    # The partition's clock is at T0: the change waits until the stream reaches its time.
    assert out.catalog_updates == 1 and out.pushes == [] and out.catalog_late == 0
    out = engine.process([ev("n1", neighbour_of("u1"), "view", "i2", T0 + 400)], store)
    assert len(out.pushes) == 1
    partition, push = out.pushes[0]
    assert partition == partition_for("u1", PARTITIONS)
    assert push.trigger == "price_drop" and push.item_id == "i1" and push.user_id == "u1"
    assert push.push_id == push_id("u1", "i1", "price_drop", f"i1@{T0 + 300:.3f}")
    assert push.price == 80.0 and push.features["previous_price"] == 100.0
    assert push.event_ts == T0 + 300
    assert push.reason == "You viewed this; the price dropped from 100.00 to 80.00"
    assert engine.catalog.latest("i1") == update
    assert [r.push_id for r in store.user("u1").policy.pushes] == [push.push_id]
    # The same update redelivered is no price change: nothing more.
    again = engine.apply_catalog([catalog_record(update)], store)
    assert again.pushes == [] and again.catalog_updates == 1


def _counting_resolves(engine: Engine) -> list[int]:
    """Count the engine's closes of pass 2 (``Engine._resolve``); the list grows by one per close."""
    closes: list[int] = []
    resolve = engine._resolve

    def counted(work: Any, out: Outcome, carry: bool = False) -> Any:
        closes.append(1)
        return resolve(work, out, carry)

    engine._resolve = counted  # type: ignore[method-assign]
    return closes


def test_a_catalog_change_that_reaches_no_one_does_not_close_the_batch() -> None:
    """The clock passing a catalog change closes pass 2 only when the change may ask someone (its asks
    read the interest index, which queued decisions update): a drop of an item nobody cares about
    leaves the batch open, and the pushes and states are those of a batch cut at every event."""
    # Within one minute of the clock, so that no other rule closes the batch between the events.
    updates = [
        catalog_entry("i2", price=50.0, updated_at=T0 + 330),  # nobody is interested in i2
        catalog_entry("i1", price=80.0, updated_at=T0 + 350),  # u1 is, in i1
    ]
    # Events that step the GRU and ask nothing (a view would queue an in-session decision, and a
    # pending decision may feed the interest index: the batch would rightly close).
    n = neighbour_of("u1")
    stream = [ev(f"n{k}", n, "remove_from_cart", "i3", T0 + ts) for k, ts in enumerate((310, 340, 355))]
    results = []
    for batch in (len(stream), 1):
        engine, store = price_drop_engine()
        engine.apply_catalog([catalog_record(u) for u in updates], store)
        part = part_of(engine, "u1")
        asks = engine.catalog_asks
        assert not asks.reaches_anyone(part, T0 + 330, catalog_entry("i2"), updates[0])
        assert asks.reaches_anyone(part, T0 + 350, catalog_entry("i1"), updates[1])
        closes = _counting_resolves(engine)
        out = run(engine, stream, store, batch)
        pushes = [(p, push.trigger, push.user_id, push.push_id) for p, push in out.pushes]
        # Every stored row but the partition's meta row, which holds the input offsets (the fakes
        # number records across the whole test session).
        rows = sorted((k, v) for k, v in store.data.items() if k[1] != META_ROW)
        results.append((pushes, rows, len(closes)))
    (pushes, states, closes_in_one), (pushes_1, states_1, _) = results
    assert [(t, u) for _, t, u, _ in pushes if t == "price_drop"] == [("price_drop", "u1")]
    assert pushes == pushes_1 and states == states_1
    assert closes_in_one == 2  # at the drop of i1 (it reaches u1) and at the end: not at i2's


def test_a_queued_decision_closes_the_batch_only_for_a_change_of_an_item_it_scores() -> None:
    """A queued decision feeds the interest index only with the items it scores (``Work.indexing``):
    a change of another item that reaches no one leaves the batch open; a change of an item it scores
    closes it, and then reaches the shopper that decision indexed, as with a batch cut at every event."""
    n = neighbour_of("u1")
    updates = [
        catalog_entry("i2", price=50.0, updated_at=T0 + 330),  # nobody is interested in i2
        catalog_entry("i3", price=80.0, updated_at=T0 + 350),  # n's queued decision scores i3
    ]
    other = neighbour_of(n)
    stream = [
        ev("q1", n, "view", "i3", T0 + 310),  # an in-session decision (interest 0.5, no push)
        ev("q2", other, "remove_from_cart", "i5", T0 + 340),  # the clock passes i2's drop
        ev("q3", other, "remove_from_cart", "i5", T0 + 355),  # and i3's
    ]
    results = []
    for batch in (len(stream), 1):
        engine, store = price_drop_engine()
        engine.apply_catalog([catalog_record(u) for u in updates], store)
        closes = _counting_resolves(engine)
        out = run(engine, stream, store, batch)
        pushes = [(p, push.trigger, push.user_id, push.item_id, push.push_id) for p, push in out.pushes]
        rows = sorted((k, v) for k, v in store.data.items() if k[1] != META_ROW)
        results.append((pushes, rows, len(closes)))
    (pushes, states, closes_in_one), (pushes_1, states_1, _) = results
    assert [(t, u, i) for _, t, u, i, _ in pushes] == [("price_drop", n, "i3")]
    assert pushes == pushes_1 and states == states_1
    assert closes_in_one == 2  # at i3's drop (n's decision may index i3) and at the end: not at i2's


def test_the_clock_closes_the_batch_only_where_a_timer_of_the_queued_work_may_fall_due() -> None:
    """Pass 2 schedules timers (a hold's release, a reminder that waits; on whole minutes) only from a
    decision, or from a release when something is held, and a decision's timer cannot fall due before
    ``Decider.earliest_timer``: events that queue neither, and a daytime decision for a new shopper
    (no quiet hours, no learned send time, no recent push), leave the batch open across minutes."""
    n = neighbour_of("u1")
    stream = [ev(f"m{k}", n, "remove_from_cart", "i3", T0 + 10 + 60 * k) for k in range(4)]
    engine, store = price_drop_engine()
    closes = _counting_resolves(engine)
    run(engine, stream, store, len(stream))
    assert len(closes) == 1  # at the end only (every minute before)
    engine, store = price_drop_engine()
    closes = _counting_resolves(engine)
    out = run(engine, [ev("v0", n, "view", "i3", T0 + 10), *stream[1:]], store, len(stream))
    assert out.decisions or out.suppressions  # the view was decided
    assert len(closes) == 1


NIGHT = T0 + 13 * 3600  # 2024-06-01 23:00 UTC
MORNING = T0 + 22 * 3600  # 2024-06-02 08:00 UTC
# Two views at night: the second's in-session push is held until quiet hours end.
NIGHT_VIEWS = (ev("e1", "u1", "view", "i1", NIGHT), ev("e2", "u1", "view", "i1", NIGHT + 120))


def night_engine() -> Engine:
    """Quiet hours 22:00-08:00, pushes that outlive the night, and no learning epoch inside it (its
    close would run pass 2 as well)."""
    settings = make_settings(
        quiet_hours_start="22:00",
        quiet_hours_end="08:00",
        push_ttl_seconds=12 * 3600,
        learning_epoch_seconds=1e6,
    )
    engine = make_engine(settings)
    engine.apply_catalog([catalog_record(catalog_entry(i)) for i in ITEMS], DictState())
    return engine


def test_a_decision_in_quiet_hours_keeps_the_batch_open_until_they_end() -> None:
    """A push decided in quiet hours is held until they end: the batch stays open through the night's
    minutes, closes as the clock reaches their end (the hold's release must exist before the clock
    passes it), and the pushes and states are those of a batch cut at every event."""
    other = neighbour_of("u1")
    stream = [*NIGHT_VIEWS]
    stream += [ev(f"x{k}", other, "remove_from_cart", "i3", NIGHT + 600 + 1800 * k) for k in range(18)]
    stream += [ev("y1", other, "remove_from_cart", "i3", MORNING + 30)]
    results = []
    for batch in (len(stream), 1):
        engine = night_engine()
        store = DictState()
        closes = _counting_resolves(engine)
        out = run(engine, stream, store, batch)
        assert out.late_timers == 0
        pushes = [(p, push.push_id, push.created_at) for p, push in out.pushes]
        rows = sorted((k, v) for k, v in store.data.items() if k[1] != META_ROW)
        results.append((pushes, rows, len(closes)))
    (pushes, rows, closes_in_one), (pushes_1, rows_1, _) = results
    # Released at the clock that passed 08:00 (the next event's time).
    assert [(i, at) for _, i, at in pushes] == [(push_id("u1", "i1", "in_session", "e2"), MORNING + 30)]
    assert pushes == pushes_1 and rows == rows_1
    assert closes_in_one == 2  # as the clock reaches 08:00, and at the end: none in the 9 hours before


def test_a_timer_scheduled_after_the_clock_passed_it_is_counted() -> None:
    """The guard behind ``Decider.earliest_timer``: were its bound wrong (here: no timer at all), the
    night's batch would stay open past 08:00, the hold's release would be made after the clock passed
    it and fire an input late. ``Outcome.late_timers`` counts it (``kairos_late_timers_total``)."""
    stream = [*NIGHT_VIEWS, ev("y1", neighbour_of("u1"), "remove_from_cart", "i3", MORNING + 30)]
    engine = night_engine()
    engine.decider.earliest_timer = lambda ask, pushes_may_change: None  # type: ignore[method-assign]
    out = run(engine, stream, DictState(), len(stream))
    assert out.pushes == [] and out.late_timers == 1


def _counting_steps(engine: Engine) -> list[int]:
    """Record the rows of each of the engine's GRU step calls."""
    calls: list[int] = []
    step = engine.scoring.step

    def counted(states: np.ndarray, items: np.ndarray, types: np.ndarray) -> np.ndarray:
        calls.append(len(states))
        return step(states, items, types)

    engine.scoring.step = counted  # type: ignore[method-assign]
    return calls


def _running_every_step(engine: Engine) -> None:
    """Make every close of pass 2 run every queued step (no steps carried to later work)."""

    def close(work: Work, out: Outcome) -> Work:
        engine._resolve(work, out)
        return Work(work.users)

    engine._close = close  # type: ignore[method-assign]


def test_steps_of_users_without_a_decision_wait_for_one_wide_call() -> None:
    """A close of pass 2 for the clock's sake runs only the steps a queued decision needs; a browsing
    neighbour's steps are carried to later work, run in fewer, wider calls, with the same states and
    pushes as running every step at every close."""
    mine = partition_for("u1", PARTITIONS)
    same = [u for u in (f"s{i}" for i in range(400)) if partition_for(u, PARTITIONS) == mine]
    carters, shoppers = same[:8], same[8:12]
    # A cart timer falls due every minute while four shoppers' events step the model and ask nothing
    # (a removal is no moment to push); a learning epoch of a minute closes pass 2 every minute.
    stream = [
        ev(f"c{k}", u, "add_to_cart", ITEMS[k % len(ITEMS)], T0 + 60 * k) for k, u in enumerate(carters)
    ]
    stream += [
        ev(f"r{k}", shoppers[k % 4], "remove_from_cart", ITEMS[k % len(ITEMS)], T0 + 1790 + 20 * k)
        for k in range(40)
    ]
    results = []
    for carry in (True, False):
        engine, store = cart_engine(learning_epoch_seconds=60.0)
        if not carry:
            _running_every_step(engine)
        calls = _counting_steps(engine)
        out = run(engine, stream, store, len(stream))
        results.append((store.data, [p.push_id for _, p in out.pushes], sum(calls), len(calls)))
    carried, every = results
    assert len(carried[1]) == 8, "every cart timer should push"
    assert carried[:3] == every[:3]  # the same states, pushes and rows stepped
    assert carried[3] < every[3]  # in fewer calls


def test_price_drop_skips_users_of_partitions_not_owned() -> None:
    mine = partition_for("u1", PARTITIONS)
    engine, store = price_drop_engine(owned={p for p in range(PARTITIONS) if p != mine})
    out = engine.apply_catalog([catalog_record(catalog_entry("i1", price=80.0, updated_at=T0 + 300))], store)
    assert out.pushes == [] and out.catalog_updates == 1
    assert engine.tick(store).pushes == []


def test_price_rise_and_bad_catalog_records_push_nothing() -> None:
    engine, store = price_drop_engine()
    out = engine.apply_catalog([catalog_record(catalog_entry("i1", price=120.0, updated_at=T0 + 300))], store)
    assert out.pushes == []
    wrong_key = Inbound("catalog", 0, 5, b"i2", to_json_bytes(catalog_entry("i1", price=10.0)))
    out = engine.apply_catalog([wrong_key, Inbound("catalog", 0, 6, b"i1", b"{}")], store)
    assert [d.reason for d in out.dead_letters] == ["key_mismatch", "invalid_field"]
    latest = engine.catalog.latest("i1")
    assert out.pushes == [] and latest is not None and latest.price == 120.0


# -- timers -------------------------------------------------------------------------------------------


def cart_engine(**policy: Any) -> tuple[Engine, DictState]:
    # In-session threshold out of reach, so the add_to_cart itself sends nothing.
    engine = make_engine(make_settings(threshold=0.9, trigger_thresholds={"cart_abandonment": 0.3}, **policy))
    return engine, DictState()


def test_cart_abandonment_fires_after_the_delay_at_event_time() -> None:
    engine, store = cart_engine()
    out = engine.process([ev("c1", "u1", "add_to_cart", "i1", T0)], store)
    assert out.pushes == []
    assert engine.tick(store).pushes == []
    other = neighbour_of("u1")
    # Another partition's clock does not move this one's timers.
    stranger = next(
        u
        for u in ("a", "b", "c", "d", "e", "f")
        if partition_for(u, PARTITIONS) != partition_for("u1", PARTITIONS)
    )
    assert engine.process([ev("y1", stranger, "search", None, T0 + 9999, query="q")], store).pushes == []
    out = engine.process([ev("x1", other, "search", None, T0 + 1799, query="q")], store)  # moves the clock
    assert out.pushes == [] and engine.tick(store).pushes == []  # not due yet
    out = engine.process([ev("x2", other, "search", None, T0 + 1800, query="q")], store)
    assert len(out.pushes) == 1
    push = out.pushes[0][1]
    assert (push.user_id, push.item_id, push.trigger) == ("u1", "i1", "cart_abandonment")
    assert push.push_id == push_id("u1", "i1", "cart_abandonment", "cart_abandonment:c1")
    assert push.created_at == T0 + 1800 and push.event_ts == T0
    assert push.reason == "You left this in your cart 30 minutes ago"
    assert store.user("u1").timers == []  # fired timers are gone from the stored state
    again = engine.process([ev("x3", other, "search", None, T0 + 4000, query="q")], store)
    assert again.pushes == [] and engine.tick(store).pushes == []  # and fire once


def test_purchase_cancels_cart_abandonment() -> None:
    engine, store = cart_engine()
    engine.process(
        [ev("c1", "u1", "add_to_cart", "i1", T0), ev("c2", "u1", "purchase", "i1", T0 + 60, price=5.0)], store
    )
    assert part_of(engine, "u1").timers.get("u1", "cart_abandonment", "i1") is None
    assert store.user("u1").timers == []
    assert (
        engine.process([ev("x1", neighbour_of("u1"), "search", None, T0 + 4000, query="q")], store).pushes
        == []
    )


def test_wall_clock_fires_timers_without_events() -> None:
    settings = make_settings(
        worker={"clock": "wall"}, threshold=0.9, trigger_thresholds={"cart_abandonment": 0.3}
    )
    wall = [T0]
    engine = Engine(settings, FakeScorer(), clock=lambda: wall[0])
    engine.owned = set(range(PARTITIONS))
    engine.apply_catalog([catalog_record(catalog_entry("i1"))], DictState())
    store = DictState()
    engine.process([ev("c1", "u1", "add_to_cart", "i1", T0)], store)
    wall[0] = T0 + 1799
    assert engine.tick(store).pushes == []
    wall[0] = T0 + 1800
    assert [p.trigger for _, p in engine.tick(store).pushes] == ["cart_abandonment"]


# -- recovery and model swaps ---------------------------------------------------------------------------


def test_recovered_pushes_are_not_emitted_again() -> None:
    # Gap, item-repeat and category rules off, so only the push-id check can stop the re-emission.
    settings = make_settings(
        min_gap_seconds=0, item_repeat_window_seconds=0, max_per_category_per_local_day=0
    )
    records = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
    first = make_engine(settings).process(records, DictState())
    assert len(first.pushes) == 1
    emitted: Push = first.pushes[0][1]

    # Control: a fresh engine and state emit the same push again.
    again = make_engine(settings).process(records, DictState())
    assert [p for _, p in again.pushes] == [emitted]

    # After a crash: the state lost the push, the pushes topic has it.
    engine = make_engine(settings)
    store = DictState()
    partition = partition_for("u1", PARTITIONS)
    assert engine.apply_recovered_pushes(partition, [emitted], store) == 1
    assert engine.apply_recovered_pushes(partition, [emitted], store) == 0  # recorded once
    assert [r.push_id for r in store.user("u1").policy.pushes] == [emitted.push_id]
    out = engine.process(records, store)
    assert out.pushes == []
    assert out.suppressions[("in_session", "duplicate")] == 1
    # e1 comes before the recovered push's time: it is decided as without the crash (the push did not
    # exist yet), so only e2's decision differs: a duplicate instead of the emit.
    redelivered = {k: n for k, n in out.suppressions.items() if n and k != ("in_session", "duplicate")}
    assert redelivered == {k: n for k, n in again.suppressions.items() if n}


def test_a_recovered_push_met_again_by_its_decision_leaves_the_uninterrupted_state() -> None:
    # The push on the topic lacks its decision context; the redelivered input's decision completes the
    # record and counts the push in the outcome estimates, as the run without the crash did.
    settings = make_settings(
        min_gap_seconds=0, item_repeat_window_seconds=0, max_per_category_per_local_day=0
    )
    records = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
    later = [ev("e3", "u1", "view", "i2", T0 + 4000)]
    uninterrupted = DictState()
    reference = make_engine(settings)
    emitted = reference.process(records, uninterrupted).pushes[0][1]
    reference.process(later, uninterrupted)
    assert uninterrupted.user("u1").policy.pushes[0].context

    engine = make_engine(settings)
    store = DictState()
    partition = partition_for("u1", PARTITIONS)
    engine.apply_recovered_pushes(partition, [emitted], store)
    assert store.user("u1").policy.pushes[0].recovered
    assert not store.user("u1").policy.pushes[0].context
    assert engine.process(records, store).pushes == []
    engine.process(later, store)
    assert store.user("u1").policy == uninterrupted.user("u1").policy

    # The partition's outcome-estimate updates (rows "\x00r...") too: the push counts in its context.
    def learning(state: DictState) -> dict[tuple[int, bytes], bytes]:
        return {k: v for k, v in state.data.items() if k[1].startswith(b"\x00r")}

    assert learning(uninterrupted) and learning(store) == learning(uninterrupted)
    # And every other stored row: the decision before the push's own did not see it either.
    assert store.data == uninterrupted.data


def test_pushes_read_back_at_recovery_are_recorded_without_pruning_each_other() -> None:
    """Found by a crash fuzz (scratch, session 49): a batch pushed twice to one user, the second a
    year after the first; recovery recorded the pushes read back one after another, and recording the
    second pruned the first's record, so the redelivered batch pushed the first again. They are now
    recorded as they are, and each decision, made again, prunes when it completes its record."""
    settings = make_settings(
        min_gap_seconds=0, item_repeat_window_seconds=0, max_per_category_per_local_day=0
    )
    year = 365 * 86_400.0
    records = [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "view", "i1", T0 + 120),
        ev("e3", "u1", "view", "i2", T0 + year),
        ev("e4", "u1", "view", "i2", T0 + year + 120),
    ]
    uninterrupted = DictState()
    emitted = [p for _, p in make_engine(settings).process(records, uninterrupted).pushes]
    assert len(emitted) == 2 and [r.push_id for r in uninterrupted.user("u1").policy.pushes] == [
        emitted[1].push_id
    ]

    engine = make_engine(settings)
    store = DictState()
    engine.apply_recovered_pushes(partition_for("u1", PARTITIONS), emitted, store)
    assert [r.push_id for r in store.user("u1").policy.pushes] == [p.push_id for p in emitted]
    assert engine.process(records, store).pushes == []  # neither goes out again
    assert store.user("u1").policy == uninterrupted.user("u1").policy


def test_recovered_pushes_count_for_the_rules_too() -> None:
    # Even when the decision that emitted it does not come again (say a new model decides otherwise),
    # a recovered push counts for the rules once it has been out UNMET_RECOVERED_SECONDS: until then
    # the redelivered input may still bring its decision (its events need not come in time order).
    records = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
    emitted = make_engine().process(records, DictState()).pushes[0][1]
    engine = make_engine(make_settings(max_pushes_per_24h=1))
    store = DictState()
    engine.apply_recovered_pushes(partition_for("u1", PARTITIONS), [emitted], store)
    assert unmet(store.user("u1").policy.pushes[0], T0 + 130)
    out = engine.process([ev("e3", "u1", "add_to_cart", "i2", T0 + 120 + UNMET_RECOVERED_SECONDS)], store)
    assert out.pushes == []
    assert out.suppressions[("in_session", "cap_24h")] == 1
    assert store.user("u1").policy.pushes[0].recovered  # its decision never came: still marked


def test_an_erasure_before_a_recovered_pushs_decision_keeps_its_record() -> None:
    """Crash fuzz (session 50, seed 805): the lost batch erased a user and then pushed to them; the
    redelivered batch erased them again, taking the push read back at recovery with the rest of the
    record, and its decision pushed a second time. An erasure keeps such a push (in a record of its
    own: nothing else of the user) until its decision, made again, meets it."""
    settings = make_settings(
        min_gap_seconds=0, item_repeat_window_seconds=0, max_per_category_per_local_day=0
    )
    batch = [
        ev("e0", "u1", "view", "i2", T0 - 600),
        record(None, "u1", "consent"),  # a tombstone: erase u1
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "view", "i1", T0 + 120),
    ]
    uninterrupted = DictState()
    emitted = [p for _, p in make_engine(settings).process(batch, uninterrupted).pushes]
    assert [p.item_id for p in emitted] == ["i1"]

    engine = make_engine(settings)
    store = DictState()
    engine.apply_recovered_pushes(partition_for("u1", PARTITIONS), emitted, store)
    out = engine.process(batch, store)
    assert out.pushes == [] and out.erasures == 1
    assert store.user("u1").policy == uninterrupted.user("u1").policy


def test_a_recovered_push_that_waited_out_the_night_is_held_again_and_completed_at_its_release() -> None:
    """Crash fuzz (session 50, seed 0): the lost batch held a push for the end of the quiet hours and
    released it. Read back, it went out at the release; the redelivered decision took it for a
    duplicate at the hold's time instead, so the outcome estimates counted it two hours early. Now the
    decision holds it again and the release meets it, as the run without the crash did."""
    settings = make_settings(
        quiet_hours_start="22:00", quiet_hours_end="08:00", min_gap_seconds=0, push_ttl_seconds=86_400.0
    )
    night = 1_717_282_800.0  # 2024-06-01 23:00 UTC
    batch = [
        ev("e1", "u1", "view", "i1", night),
        ev("e2", "u1", "view", "i1", night + 120),  # an emit, held until 08:00
        ev("e3", neighbour_of("u1"), "search", None, night + 9.5 * 3600, query="q"),  # the morning
    ]
    uninterrupted = DictState()
    emitted = [p for _, p in make_engine(settings).process(batch, uninterrupted).pushes]
    assert [p.created_at for p in emitted] == [night + 9.5 * 3600]  # released as the stream got there

    engine = make_engine(settings)
    store = DictState()
    engine.apply_recovered_pushes(partition_for("u1", PARTITIONS), emitted, store)
    out = engine.process(batch, store)
    assert out.pushes == [] and out.suppressions[("in_session", "duplicate")] == 1
    assert store.user("u1").policy == uninterrupted.user("u1").policy
    assert {k: v for k, v in store.data.items() if k[1] != META_ROW} == {
        k: v for k, v in uninterrupted.data.items() if k[1] != META_ROW
    }


def test_swap_model_rederives_the_state_once() -> None:
    old = FakeScorer(version="m1")
    engine = make_engine(scorer=old)
    store = DictState()
    engine.process([ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "add_to_cart", "i2", T0 + 10)], store)
    assert store.user("u1").model_version == "m1"

    new = FakeScorer(version="m2", gain=3.0, decay=0.25)
    engine.swap_model(new)
    assert store.user("u1").model_version == "m1"  # lazily: nothing happens before the user's next event
    engine.process([ev("e3", "u1", "view", "i3", T0 + 20)], store)
    state = store.user("u1")
    assert state.model_version == "m2"
    assert state.hidden is not None
    # The state is what the new model makes of the whole session: the history, then e3.
    np.testing.assert_array_equal(state.hidden, new.fold([("i1", VIEW), ("i2", CART), ("i3", VIEW)]))
    assert new.rows == 3 and new.calls == 3  # two re-derivation steps, one step for e3
    engine.process([ev("e4", "u1", "view", "i4", T0 + 30)], store)
    assert new.rows == 4 and new.calls == 4  # re-derived once only
    assert old.rows == 2


def test_swap_model_does_not_replay_other_sessions() -> None:
    old = FakeScorer(version="m1")
    engine = make_engine(scorer=old)
    store = DictState()
    engine.process(
        [
            ev("e1", "u1", "view", "i1", T0, session_id="s1"),
            ev("e2", "u1", "view", "i2", T0 + 10, session_id="s2"),
        ],
        store,
    )
    new = FakeScorer(version="m2", gain=2.0)
    engine.swap_model(new)
    engine.process([ev("e3", "u1", "view", "i3", T0 + 20, session_id="s2")], store)
    hidden = store.user("u1").hidden
    assert hidden is not None
    np.testing.assert_array_equal(hidden, new.fold([("i2", VIEW), ("i3", VIEW)]))


# -- consent order, stale events, quiet hours ----------------------------------------------------------


def test_consent_applies_from_its_place_in_the_batch() -> None:
    records = [
        ev("e1", "u1", "view", "i1", T0),
        ev("e2", "u1", "view", "i1", T0 + 120),  # crosses the threshold while the user is opted out
        consent("u1", True, T0 + 200),
    ]
    pushes = []
    for batch in (1, 3):
        engine = make_engine()
        store = DictState()
        engine.process([consent("u1", False, T0 - 100)], store)
        out = run(engine, records, store, batch)
        pushes.append([p.push_id for _, p in out.pushes])
    assert pushes[0] == []  # one by one: e2 is suppressed no_consent
    assert pushes[1] == pushes[0]  # batched: e2 is pushed to a user who had not opted in yet


def test_stale_events_get_no_in_session_push() -> None:
    settings = make_settings(worker={"clock": "wall"})
    # The wall clock reads ``lag`` seconds after e2 (so e1 is always more than 600 s old).
    for lag, stale in ((600.0, False), (601.0, True)):
        wall = T0 + 120 + lag
        engine = Engine(settings, FakeScorer(), clock=lambda: wall)  # noqa: B023 - used in this iteration
        engine.owned = set(range(PARTITIONS))
        engine.apply_catalog([catalog_record(catalog_entry("i1"))], DictState())
        store = DictState()
        records = [ev("e1", "u1", "view", "i1", T0), ev("e2", "u1", "view", "i1", T0 + 120)]
        out = engine.process(records, store)
        assert out.suppressions[("in_session", "stale_event")] == (2 if stale else 1)
        assert len(out.pushes) == (0 if stale else 1)
        hidden = store.user("u1").hidden
        assert hidden is not None and hidden[-1] == 2  # the state advances either way


def test_quiet_hours_hold_and_release_at_their_end() -> None:
    settings = make_settings(quiet_hours_start="22:00", quiet_hours_end="08:00", push_ttl_seconds=12 * 3600)
    engine = make_engine(settings)
    store = DictState()
    night = T0 + 13 * 3600  # 2024-06-01 23:00 UTC
    morning = T0 + 22 * 3600  # 2024-06-02 08:00 UTC
    out = engine.process(
        [ev("e1", "u1", "view", "i1", night), ev("e2", "u1", "view", "i1", night + 120)], store
    )
    assert out.pushes == []
    held = store.user("u1").policy.held
    assert [(h.push.push_id, h.release_at) for h in held] == [
        (push_id("u1", "i1", "in_session", "e2"), morning)
    ]
    other = neighbour_of("u1")
    out = engine.process([ev("x1", other, "search", None, morning - 1, session_id=None, query="q")], store)
    assert out.pushes == []
    out = engine.process([ev("x2", other, "search", None, morning, session_id=None, query="q")], store)
    assert [(p.push_id, p.created_at, p.event_ts) for _, p in out.pushes] == [
        (push_id("u1", "i1", "in_session", "e2"), morning, night + 120)
    ]
    state = store.user("u1")
    assert state.policy.held == [] and [r.created_at for r in state.policy.pushes] == [morning]


def test_a_promotion_withdrawn_early_sends_no_promotion_ending() -> None:
    """The promotion_ending timer armed when a promotion starts outlives the promotion when the catalog
    withdraws it early: when it fires, nothing is ending and nothing is sent (``promotion_invalid``)."""
    from stream.contract import Promotion

    promo = Promotion(promotion_id="p1", discount=0.2, starts_at=T0 + 60, ends_at=T0 + 10 * 3600)
    started = catalog_entry("i1", updated_at=T0 + 60).model_copy(update={"promotion": promo})

    def run(withdrawn: bool) -> Outcome:
        thresholds = {"promotion_start": 0.99, "promotion_ending": 0.0}
        engine = make_engine(make_settings(trigger_thresholds=thresholds))
        store = DictState()
        engine.process([ev("e1", "u1", "view", "i1", T0)], store)  # interest 0.5: indexed
        engine.apply_catalog([catalog_record(started)], store)
        engine.process([ev("n1", neighbour_of("u1"), "view", "i2", T0 + 120)], store)  # timer at T0 + 7 h
        if withdrawn:
            engine.apply_catalog([catalog_record(catalog_entry("i1", updated_at=T0 + 3600))], store)
        return engine.process([ev("n2", neighbour_of("u1"), "view", "i2", T0 + 8 * 3600)], store)

    running = run(withdrawn=False)
    assert [(p.user_id, p.trigger, p.promotion_id) for _, p in running.pushes] == [
        ("u1", "promotion_ending", "p1")
    ]
    withdrawn = run(withdrawn=True)
    assert [p for _, p in withdrawn.pushes if p.trigger == "promotion_ending"] == []
    assert withdrawn.suppressions[("promotion_ending", "promotion_invalid")] == 1


def test_a_catalog_full_of_items_refuses_new_ones_but_updates_and_removes_the_ones_it_holds() -> None:
    """worker.max_catalog_items bounds what one producer of endless new ids can make every worker hold."""
    settings = make_settings(worker={"max_catalog_items": len(ITEMS) + 2})
    engine = make_engine(settings)
    store = DictState()
    out = engine.apply_catalog(
        [catalog_record(catalog_entry(f"new{i}", updated_at=T0)) for i in range(5)], store
    )
    assert out.catalog_updates == 2 and len(engine.catalog) == len(ITEMS) + 2
    letters = out.dead_letters
    assert [d.reason for d in letters] == ["catalog_full"] * 3
    assert [d.original_bytes() for d in letters] == [
        to_json_bytes(catalog_entry(f"new{i}", updated_at=T0)) for i in (2, 3, 4)
    ]
    # An item it holds still changes; a tombstone makes room for the next new one.
    out = engine.apply_catalog([catalog_record(catalog_entry("new0", price=50.0, updated_at=T0 + 1))], store)
    assert out.catalog_updates == 1 and not out.dead_letters
    engine.apply_catalog([Inbound("catalog", 0, 1, b"new1", None)], store)
    out = engine.apply_catalog([catalog_record(catalog_entry("new4", updated_at=T0 + 2))], store)
    assert out.catalog_updates == 1 and not out.dead_letters and "new4" in engine.catalog

"""Interest: decay, promotion adjustment, thresholds, catalog triggers and the item -> users index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contract import Promotion
from stream.interest import (
    assess,
    decay_factor,
    effective_threshold,
    interest_upper_bound,
    promotion_adjust,
)
from stream.interest_index import InterestIndex
from stream.triggers import catalog_triggers
from tests.policy.conftest import T0, catalog, config


def test_decay_halves_per_half_life():
    assert decay_factor(0, 60) == 1.0 and decay_factor(-5, 60) == 1.0
    assert decay_factor(60, 60) == 0.5 and decay_factor(180, 60) == 0.125


@pytest.mark.parametrize("p", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_promotion_adjust_is_bounded_and_monotone(p):
    values = [promotion_adjust(p, d, 2.0) for d in (0.0, 0.1, 0.3, 0.6, 0.99, 5.0)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert values[0] == pytest.approx(p)
    if p in (0.0, 1.0):
        assert values == [p] * len(values)


def test_upper_bound_matches_the_scalar_rule():
    p = np.array([[0.0, 0.2, 0.5], [0.9, 1.0, 0.3]], dtype=np.float32)
    d = np.array([[0.0, 0.5, 0.2], [0.1, 0.3, 0.0]])
    bound = interest_upper_bound(p, d, 2.0)
    expected = [[promotion_adjust(float(p[i, j]), float(d[i, j]), 2.0) for j in range(3)] for i in range(2)]
    assert bound.shape == (2, 3) and np.allclose(bound, expected)
    # No decay is the best case: any decayed candidate scores at most its bound.
    cfg = config(interest_half_life_seconds=60.0)
    assert assess(0, 0.5, T0 - 30, T0, 0.2, "in_session", 0.0, cfg).interest <= bound[0, 2]


def test_promotion_adjust_formula():
    # Odds 1 (p = 0.5) times 1 + 2 * 0.25 = 1.5 -> p = 0.6.
    assert promotion_adjust(0.5, 0.25, 2.0) == pytest.approx(0.6)


def test_assess_records_its_features():
    cfg = config(interest_half_life_seconds=100.0)
    a = assess(3.2, 0.8, T0 - 100, T0, 0.25, "in_session", 0.1, cfg)
    assert a.features["decay_factor"] == 0.5 and a.features["calibrated_p"] == 0.8
    # 0.8 halved is 0.4 (odds 2/3); times 1 + 2 * 0.25 = 1.5 gives odds 1, interest 0.5.
    assert a.interest == pytest.approx(0.5) and a.threshold == pytest.approx(0.6) and not a.passes
    assert a.features["threshold_offset"] == pytest.approx(0.1) and a.features["raw_score"] == 3.2
    assert assess(0, 0.8, None, T0, 0.0, "in_session", 0.0, cfg).interest == 0.8


def test_effective_threshold_is_clipped():
    cfg = config(min_threshold=0.2, max_threshold=0.8)
    assert effective_threshold("in_session", -1.0, cfg) == 0.2
    assert effective_threshold("in_session", 1.0, cfg) == 0.8
    assert effective_threshold("cart_abandonment", 0.0, cfg) == 0.35


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        config(trigger_thresholds={"nope": 0.1})
    with pytest.raises(ValueError):
        config(quiet_hours_start="25:00")
    with pytest.raises(ValueError):
        config(default_time_zone="Nowhere/City")


def test_catalog_triggers():
    promo = Promotion(promotion_id="p1", discount=0.2, starts_at=T0, ends_at=T0 + 100)
    # A first sighting in stock is a new arrival, announced once per item whatever its version.
    assert catalog_triggers(None, catalog(), T0) == [("new_arrival", "arrival@i1")]
    assert catalog_triggers(None, catalog(updated_at=T0 + 9), T0 + 9) == [("new_arrival", "arrival@i1")]
    assert catalog_triggers(None, catalog(stock=0), T0) == []
    first_promoted = catalog_triggers(None, catalog(promotion=promo), T0 + 1)
    assert [t for t, _ in first_promoted] == ["new_arrival", "promotion_start"]
    assert [
        t for t, _ in catalog_triggers(catalog(price=100), catalog(price=80, updated_at=T0 + 1), T0 + 1)
    ] == ["price_drop"]
    assert [
        t for t, _ in catalog_triggers(catalog(stock=0), catalog(stock=3, updated_at=T0 + 1), T0 + 1)
    ] == ["back_in_stock"]
    started = catalog_triggers(catalog(), catalog(promotion=promo, updated_at=T0 + 1), T0 + 1)
    assert started == [("promotion_start", "p1@i1")]  # not also a price drop
    # Redelivered or re-published with the promotion already running: nothing new.
    assert (
        catalog_triggers(
            catalog(promotion=promo, updated_at=T0 + 1), catalog(promotion=promo, updated_at=T0 + 2), T0 + 2
        )
        == []
    )
    # Out of stock: nothing to push.
    assert catalog_triggers(catalog(price=100), catalog(price=50, stock=0), T0) == []
    # Causes are deterministic for the same catalog version.
    assert catalog_triggers(
        catalog(price=9), catalog(price=8, updated_at=T0 + 3), T0 + 3
    ) == catalog_triggers(catalog(price=9), catalog(price=8, updated_at=T0 + 3), T0 + 5)


def test_interest_index_keeps_top_users_per_item():
    index = InterestIndex(per_item=3, max_entries=100, half_life_seconds=3600.0)
    for n, interest in enumerate([0.5, 0.9, 0.2, 0.7, 0.1]):
        index.update("i1", f"u{n}", interest, T0)
    assert [u for u, _, _ in index.users_for("i1", T0, 0.0)] == ["u1", "u3", "u0"]
    assert [u for u, _, _ in index.users_for("i1", T0, 0.6)] == ["u1", "u3"]
    # Interest read an hour later has halved.
    assert index.users_for("i1", T0 + 3600, 0.0)[0][1] == pytest.approx(0.45)
    # A fresh score beats a stale higher one.
    index.update("i1", "fresh", 0.4, T0 + 3 * 3600)
    assert "fresh" in [u for u, _, _ in index.users_for("i1", T0 + 3 * 3600, 0.0)]
    index.update("i1", "u1", 0.05, T0 + 3 * 3600)  # a refresh replaces the user's entry
    assert dict((u, v) for u, v, _ in index.users_for("i1", T0 + 3 * 3600, 0.0))["u1"] == pytest.approx(0.05)
    index.discard("i1", "u1")
    assert "u1" not in [u for u, _, _ in index.users_for("i1", T0 + 3 * 3600, 0.0)]
    assert index.users_for("unknown", T0, 0.0) == []


def test_purging_users_leaves_no_trace_of_them_in_the_heaps():
    index = InterestIndex(per_item=3, max_entries=100, half_life_seconds=3600.0)
    for user, interest in (("gone", 0.9), ("stay", 0.8)):
        index.update("i1", user, interest, T0)
    assert index.purge_users({"gone"}) == 1  # erasure: nothing of the user in memory, stale or not
    assert [u for _, u in index._items["i1"].heap] == ["stay"]
    assert [u for u, _, _ in index.users_for("i1", T0, 0.0)] == ["stay"]


def _user_items(index: InterestIndex) -> dict[str, set[str]]:
    """Each user's items, read from the buckets (what the index's user -> items map must hold)."""
    found: dict[str, set[str]] = {}
    for item, bucket in index._items.items():
        for user in bucket.entries:
            found.setdefault(user, set()).add(item)
    return found


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["update", "discard", "purge"]),
            st.integers(0, 11),  # item
            st.integers(0, 15),  # user
            st.floats(0.0, 1.0),
            st.integers(0, 400_000),  # seconds after T0: some updates rescale every entry
        ),
        max_size=120,
    )
)
def test_purging_users_forgets_exactly_their_entries_whatever_came_before(ops) -> None:
    """Erasure reads a user -> items map, not the buckets: it must stay their mirror through updates,
    per-item and total evictions, discards, rescales and restores, and a purge must remove exactly the
    entries a scan of every bucket finds."""
    index = InterestIndex(per_item=3, max_entries=20, half_life_seconds=3600.0, min_interest=0.1)
    for op, item, user, interest, dt in ops:
        if op == "update":
            index.update(f"i{item}", f"u{user}", interest, T0 + dt)
        elif op == "discard":
            index.discard(f"i{item}", f"u{user}")
        else:
            users = {f"u{user}", f"u{(user + 1) % 16}"}
            expected = sum(len(items) for u, items in _user_items(index).items() if u in users)
            assert index.purge_users(users) == expected
            assert not users & _user_items(index).keys()
            assert all(u not in users for b in index._items.values() for _, u in b.heap)
        assert {u: set(items) for u, items in index._by_user.items()} == _user_items(index)
    restored = InterestIndex(per_item=3, max_entries=20, half_life_seconds=3600.0, min_interest=0.1)
    rows = [(item, user, value) for (item, user), value in index.drain_changes().items() if value is not None]
    restored.restore(index.meta(), rows)
    assert {u: set(items) for u, items in restored._by_user.items()} == _user_items(restored)
    copy = InterestIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert {u: set(items) for u, items in copy._by_user.items()} == _user_items(copy)


def test_interest_index_total_size_is_bounded_and_round_trips():
    index = InterestIndex(per_item=5, max_entries=40, half_life_seconds=3600.0)
    for n in range(1000):
        index.update(f"i{n % 37}", f"u{n}", 0.5 + (n % 10) / 100, T0 + n)
    assert len(index) <= 40
    assert sum(len(index.users_for(f"i{n}", T0 + 1000, 0.0)) for n in range(37)) == len(index)
    copy = InterestIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert len(copy) == len(index)
    assert copy.users_for("i36", T0 + 1000, 0.0) == index.users_for("i36", T0 + 1000, 0.0)


def test_interest_index_says_when_an_update_would_rescale_every_entry():
    """The engine lets a batch run on past a catalog change only while the queued decisions' updates
    touch no item the change reads; an update that moves the landmark rescales every item's entries."""
    index = InterestIndex(per_item=5, max_entries=40, half_life_seconds=3600.0)
    assert not index.rescale_due(T0 + 10**9)  # empty: the first update sets the landmark
    index.update("i1", "u1", 0.5, T0)
    assert not index.rescale_due(T0 + 60 * 3600)
    assert index.rescale_due(T0 + 61 * 3600)
    before = index.users_for("i1", T0 + 61 * 3600, 0.0)[0][1]
    index.update("i2", "u2", 0.5, T0 + 61 * 3600)  # another item's update moves the landmark
    assert not index.rescale_due(T0 + 61 * 3600)
    assert index.users_for("i1", T0 + 61 * 3600, 0.0)[0][1] == pytest.approx(before, rel=1e-9)


def test_interest_index_min_interest_from_config():
    index = InterestIndex.from_config(config(interest_index_min_interest=0.2))
    index.update("i1", "weak", 0.1, T0)
    index.update("i1", "strong", 0.6, T0)
    assert [u for u, _, _ in index.users_for("i1", T0, 0.0)] == ["strong"]
    index.update("i1", "strong", 0.1, T0 + 1)  # an existing entry is refreshed even when it falls below
    assert index.users_for("i1", T0 + 1, 0.0)[0][1] == pytest.approx(0.1, rel=1e-3)


def test_deeper_promotion_is_a_price_drop():
    mild = Promotion(promotion_id="p1", discount=0.1, starts_at=T0, ends_at=T0 + 100)
    deep = Promotion(promotion_id="p1", discount=0.3, starts_at=T0, ends_at=T0 + 100)
    fired = catalog_triggers(
        catalog(promotion=mild, updated_at=T0 + 1), catalog(promotion=deep, updated_at=T0 + 2), T0 + 2
    )
    assert [t for t, _ in fired] == ["price_drop"]


def test_a_reminder_decays_interest_only_to_when_the_shopper_left():
    cfg = config(interest_half_life_seconds=6 * 3600)
    left = assess(0, 0.5, T0, T0 + 1800, 0.0, "reminder", 0.0, cfg)
    day_later = assess(0, 0.5, T0, T0 + 86400, 0.0, "reminder", 0.0, cfg, decay_until=T0 + 1800)
    assert day_later.interest == left.interest
    assert day_later.features["age_seconds"] == 86400  # the reason still says how long ago
    plain = assess(0, 0.5, T0, T0 + 86400, 0.0, "reminder", 0.0, cfg)
    assert plain.interest == pytest.approx(left.interest * 0.5 ** (84600 / 21600), rel=1e-3)

"""cold_items: the simulated shop's cold split (seeded hold-out, events before the cut dropped)."""

from __future__ import annotations

from benchmarks.cold_start.datasets import drop_before, hold_out_items


def test_hold_out_is_seeded_sized_and_order_free() -> None:
    items = [str(i) for i in range(200)]
    held = hold_out_items(items, 0.1, seed=11)
    assert len(held) == 20 and held <= set(items)
    assert hold_out_items(reversed(items + items), 0.1, seed=11) == held  # order and repeats do not matter
    assert hold_out_items(items, 0.1, seed=12) != held


def test_drop_before_removes_only_held_items_before_the_cut() -> None:
    events = [
        (t, "s", 0, item, "c") for t, item in [(1.0, "a"), (1.0, "b"), (5.0, "a"), (5.0, "b"), (9.0, "a")]
    ]
    kept = drop_before(events, {"a"}, cut=5.0)
    assert kept == [events[1], events[2], events[3], events[4]]

"""cold_items: the simulated shop's cold split (seeded hold-out, events before the cut dropped)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.cold_items import Event, choose_warmup, drop_before, hold_out_items
from model.content import ItemContent
from tests.model.conftest import TINY, markov_sessions


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


def test_the_warm_up_weight_is_chosen_without_reading_the_test_period(tmp_path: Path) -> None:
    """choose_warmup gives the same weight and validation table whatever happens after the cut."""
    sessions = markov_sessions(400, n_items=30, seed=5)
    events: list[Event] = []
    for s, seq in enumerate(sessions):
        for i, item in enumerate(seq):
            events.append((1_700_000_000.0 + 600.0 * s + i, str(s), 0, str(1000 + item), f"c{item % 4}"))
    cut = events[int(0.8 * len(events))][0]
    contents = {e[3]: ItemContent("", e[4]) for e in events}
    # The test period replaced by other sessions on other items (and their catalog rows).
    other = [(t, f"x{sess}", 0, str(int(item) + 500), cat) for t, sess, _, item, cat in events if t >= cut]
    changed = [e for e in events if e[0] < cut] + other
    changed_contents = {**contents, **{e[3]: ItemContent("", e[4]) for e in other}}
    cfg = TINY.model_copy(update={"epochs": 1})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = choose_warmup(events, contents, tmp_path / "a", cut, cfg, titles=False)
    second = choose_warmup(changed, changed_contents, tmp_path / "b", cut, cfg, titles=False)
    assert first["n_cases"] > 0
    assert (first["gamma"], first["table"]) == (second["gamma"], second["table"])

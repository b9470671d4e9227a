"""The log budget: a flood of one kind of line is held to a few per window, and counted."""

from __future__ import annotations

from stream.logs import LogBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_past_the_budget_are_held_and_the_next_line_says_how_many() -> None:
    clock = Clock()
    budget = LogBudget(per_window=3, window_seconds=60.0, clock=clock)
    assert [budget.take() for _ in range(3)] == [0, 0, 0]
    assert [budget.take() for _ in range(5)] == [None] * 5
    clock.now += 59.9
    assert budget.take() is None  # still the same window
    clock.now += 0.1
    assert budget.take() == 6  # a new window: the first line out reports the six held back
    assert budget.take() == 0


def test_a_quiet_stream_is_never_held() -> None:
    clock = Clock()
    budget = LogBudget(per_window=1, window_seconds=10.0, clock=clock)
    for _ in range(5):
        assert budget.take() == 0
        clock.now += 10.0

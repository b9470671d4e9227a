"""The soak benchmark's verdicts (``benchmarks/soak.py``): pure functions, no broker."""

from __future__ import annotations

from benchmarks.soak_parts.analysis import trend
from benchmarks.soak_parts.config import index_caps


def _samples(values: list[float]) -> list[dict[str, float]]:
    return [{"minute": float(i), "series": v} for i, v in enumerate(values)]


def test_a_flat_series_levels_off_and_a_steady_climb_still_grows() -> None:
    assert trend(_samples([100.0] * 30), "series", True)["verdict"] == "levels off"
    assert trend(_samples([100.0 * i for i in range(1, 31)]), "series", True)["verdict"] == "still grows"


def test_a_slowing_climb_under_its_cap_is_capped_with_its_share_of_the_bound() -> None:
    # Approaches 1,000 like 1 - exp(-t / 12): the last third still adds ~10 %, so it has not levelled off.
    values = [1000.0 * (1 - 0.92**i) for i in range(30)]
    assert trend(_samples(values), "series", True)["verdict"] == "still grows"
    verdict = trend(_samples(values), "series", True, cap=1100.0)
    assert verdict["verdict"].startswith("capped: 83% of its bound 1,100")
    assert verdict["cap"] == 1100.0
    # Past its cap (a cap that was not the one in force), or not slowing: no "capped" verdict.
    assert trend(_samples(values), "series", True, cap=500.0)["verdict"] == "still grows"
    climb = [10.0 * i for i in range(30)]
    assert trend(_samples(climb), "series", True, cap=10_000.0)["verdict"] == "still grows"


def test_index_caps_follow_the_worker_environment() -> None:
    default = index_caps({}, items=3000, partitions=4)
    assert default["changelog_live_covisit_rows"] == 4 * 3000
    smaller = index_caps(
        {"KAIROS_POLICY__COVISIT_TOP_N": "5", "KAIROS_POLICY__COVISIT_MAX_ITEMS": "100"},
        items=3000,
        partitions=2,
    )
    assert smaller["changelog_live_covisit_rows"] == 2 * 100
    assert smaller["changelog_live_interest_rows"] == 2 * min(
        default["changelog_live_interest_rows"] // 4, 3000 * 200
    )


def test_a_series_that_keeps_falling_back_is_bounded_and_a_missing_one_is_said_so() -> None:
    sawtooth = [float(10 * (i % 10) + 5) for i in range(30)]  # climbs, drops at each "compaction"
    assert trend(_samples(sawtooth), "series", True)["verdict"].startswith("bounded: falls back")
    climbing_sawtooth = [float(10 * (i % 10) + 5 + 20 * i) for i in range(30)]
    assert trend(_samples(climbing_sawtooth), "series", True)["verdict"] == "still grows"
    assert trend(_samples(sawtooth), "absent", True)["verdict"] == "not measured in this run"


def test_only_a_user_record_holding_nothing_but_an_opt_out_is_counted_apart() -> None:
    from benchmarks.soak_parts.changelog import _is_optout_only
    from stream.state import UserState

    kept = UserState()
    kept.policy.opted_in = False
    assert _is_optout_only(b"u1", kept.to_bytes())
    active = UserState(n_events=3, last_event_ts=1.0)
    active.policy.opted_in = False
    assert not _is_optout_only(b"u2", active.to_bytes())
    assert not _is_optout_only(b"\x00n-row", kept.to_bytes()) and not _is_optout_only(b"u3", b"garbage")

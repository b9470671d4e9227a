"""The policy lab: pure pushers against the in-process world, paired and reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.lab_oracles import OracleDiscoveryPusher
from benchmarks.lab_pushers import SessionEndPusher
from benchmarks.policy_lab import LabConfig, compare, main, run_world
from stream.contract import Event
from stream.policy import in_holdout
from stream.simulator import SimConfig, World

SMALL = LabConfig(users=300, items=200, days=1.0, warmup_days=1.0)


def test_the_lab_is_reproducible_and_pairs_arms_with_the_reference() -> None:
    arms = ["marketer_rules", "session_end", "oracle_discovery", "popular_discovery", "value_discovery"]
    arms += ["covisit_discovery"]
    first = compare(SMALL, arms, [5], workers=1)
    assert compare(SMALL, arms, [5], workers=1) == first
    assert first["marketer_rules"]["vs_first_purchases"] == 0.0
    for arm in arms:
        assert first[arm]["pushes_per_user_per_day"] > 0
        assert first[arm]["quiet_hours_share"] == 0.0


def test_a_burn_in_gives_history_without_delivering_its_pushes() -> None:
    plain = run_world(SMALL, 5, "session_end")
    burnt = run_world(
        LabConfig(users=300, items=200, days=1.0, warmup_days=1.0, burn_in_days=0.5), 5, "session_end"
    )
    assert plain["pushes"].sum() > 0 and burnt["pushes"].sum() > 0
    # The no-push world is the same whatever the burn-in: nothing was delivered during it.
    none = run_world(SMALL, 5, None)
    none_burnt = run_world(
        LabConfig(users=300, items=200, days=1.0, warmup_days=1.0, burn_in_days=0.5), 5, None
    )
    assert (none["purchases"] == none_burnt["purchases"]).all()


def _event(user: str, kind: str, item: str, ts: float, n: int) -> Event:
    return Event(event_id=f"e{n}", user_id=user, type=kind, item_id=item, ts=ts, session_id="s1")  # type: ignore[arg-type]


def test_session_end_pushes_the_cart_first_and_discovery_skips_engaged_items() -> None:
    user = next(f"u{k:06d}" for k in range(100) if not in_holdout(f"u{k:06d}", 0.5, "kairos-holdout-v1"))
    pusher = SessionEndPusher(lambda u: in_holdout(u, 0.5, "kairos-holdout-v1"))
    t = 1_780_315_200.0  # 2026-06-01 12:00 UTC: not quiet hours in UTC
    for n, (kind, item) in enumerate([("view", "a"), ("view", "a"), ("view", "b"), ("add_to_cart", "b")]):
        pusher.observe_event(_event(user, kind, item, t + n, n))
    kinds = {c.item_id: c.trigger for c in pusher.candidates(user, t + 10)}
    assert kinds == {"b": "cart_abandonment", "a": "browse_abandonment"}
    best = max(pusher.candidates(user, t + 10), key=lambda c: c.value)
    assert best.item_id == "b"
    world = World(SimConfig(seed=3, n_users=20, n_items=50, n_categories=4))
    oracle = OracleDiscoveryPusher(lambda u: False)
    oracle.world = world
    shopper = world.user_ids[0]
    ranked = [world.item_ids[int(k)] for k in np.argsort(-world.true_interests(shopper), kind="stable")]
    oracle.engaged[shopper] = set(ranked[:3])
    picks = [c.item_id for c in oracle.candidates(shopper, t)]
    assert picks == ranked[3 : 3 + OracleDiscoveryPusher.shortlist]


def test_the_report_figure_and_json_and_a_redraw_from_the_json(tmp_path: Path) -> None:
    from benchmarks.policy_lab import main

    code = main(
        ["--seeds", "5", "--users", "300", "--days", "0.5", "--arms", "marketer_rules", "session_end"]
        + ["--workers", "1", "--out", str(tmp_path / "run")]
    )
    assert code == 0
    saved = json.loads((tmp_path / "run" / "policy_lab.json").read_text())
    assert set(saved["arms"]) == {"marketer_rules", "session_end"}
    assert (tmp_path / "run" / "policy_lab-arms.png").stat().st_size > 0
    assert (
        main(["--from-json", str(tmp_path / "run" / "policy_lab.json"), "--out", str(tmp_path / "again")])
        == 0
    )
    first = (tmp_path / "run" / "policy_lab.md").read_text()
    assert (tmp_path / "again" / "policy_lab.md").read_text() == first
    assert "| session_end |" in first


def test_the_ceiling_oracles_rank_the_observable_pool_by_truth_and_by_true_vectors() -> None:
    from benchmarks.lab_oracles import PoolOracleDiscoveryPusher, VectorOracleDiscoveryPusher
    from benchmarks.lab_pushers import ValueDiscoveryPusher

    # The same observations for the observable ranking and the two oracles: their candidates must match.
    world = World(SimConfig(seed=3, n_users=20, n_items=60, n_categories=3))
    t = world.now + 3600.0
    shopper = world.user_ids[1]
    seen = [i for i in world.item_ids if world.item_category[world.item_positions([i])[0]] == 0][:3]
    pushers = []
    for cls in (ValueDiscoveryPusher, PoolOracleDiscoveryPusher, VectorOracleDiscoveryPusher):
        pusher = cls(lambda u: False)
        if hasattr(pusher, "world"):  # the oracles read the world's truth
            pusher.world = world
        for update in world.initial_catalog():
            pusher.observe_catalog(update)
        for n, other in enumerate(world.user_ids[2:8]):  # other shoppers make the category popular
            for k, item in enumerate(world.item_ids[:40]):
                pusher.observe_event(_event(other, "view", item, t + k, 1000 * n + k))
        for n, item in enumerate(seen):
            pusher.observe_event(_event(shopper, "view", item, t + 100 + n, 99_000 + n))
        pushers.append(pusher)
    value, pool, vector = (p.candidates(shopper, t + 200) for p in pushers)
    assert value and {c.item_id for c in value} == {c.item_id for c in pool} == {c.item_id for c in vector}
    assert not {c.item_id for c in pool} & set(seen)  # discovery: never an engaged item
    truth = world.true_interests(shopper, [c.item_id for c in pool])
    assert [c.value for c in pool] == [float(u) for u in truth]
    # The vector oracle adds weight x (true item vector . mean vector of the engaged items) to the value.
    taste = world.item_vectors[world.item_positions(seen)].mean(axis=0)  # one view each: equal weights
    fit = world.item_vectors[world.item_positions([c.item_id for c in value])] @ taste
    weight = VectorOracleDiscoveryPusher.taste_weight
    expected = [c.value + weight * float(f) for c, f in zip(value, fit, strict=True)]
    assert np.allclose([c.value for c in vector], expected)


def test_the_learned_ranking_learns_from_organic_discoveries_and_ranks_the_same_candidates() -> None:
    from benchmarks.lab_learned import LearnedDiscoveryPusher
    from benchmarks.lab_pushers import ValueDiscoveryPusher

    world = World(SimConfig(seed=3, n_users=20, n_items=60, n_categories=3))
    t = world.now + 3600.0
    learned, value = LearnedDiscoveryPusher(lambda u: False), ValueDiscoveryPusher(lambda u: False)
    assert not hasattr(learned, "world")  # it reads no ground truth
    for pusher in (learned, value):  # the same events for both
        n = 0
        for update in world.initial_catalog():
            pusher.observe_catalog(update)
        for u, shopper in enumerate(world.user_ids[:10]):  # each views a run of new items
            for item in world.item_ids[3 * u : 3 * u + 12]:
                n += 1
                pusher.observe_event(_event(shopper, "view", item, t + 10 * n, n))
    assert learned.updates > 0
    assert not np.array_equal(learned.weights, [1.0, 0.0, 0.0, 0.0, 0.0])
    shopper = world.user_ids[0]
    now = t + 10 * n + 60
    ours, theirs = learned.candidates(shopper, now), value.candidates(shopper, now)
    assert ours and {c.item_id for c in ours} == {c.item_id for c in theirs}
    recent = learned.recent_categories(shopper)
    for c in ours:
        assert c.value == float(learned.weights @ learned.features(shopper, c.item_id, now, recent))


def test_a_reminder_goes_a_day_later_only_to_a_shopper_who_stayed_away() -> None:
    from benchmarks.lab_reminders import ReminderPusher
    from stream.contract import CatalogUpdate

    holdout = lambda u: in_holdout(u, 0.5, "kairos-holdout-v1")  # noqa: E731
    users = [f"u{k:06d}" for k in range(100) if not holdout(f"u{k:06d}")][:2]
    pusher = ReminderPusher(holdout)
    t = 1_780_315_200.0  # 2026-06-01 12:00 UTC
    for item in ("a", "b"):
        pusher.observe_catalog(
            CatalogUpdate(item_id=item, title=item, category="c", price=10.0, stock=5, updated_at=t - 10)
        )
    for u in users:
        for n, (kind, item) in enumerate([("add_to_cart", "a"), ("view", "b"), ("view", "b")]):
            pusher.observe_event(_event(u, kind, item, t + n, n))
    first = pusher.due(t + 3600 + 2)
    assert sorted((p.user_id, p.item_id) for p in first) == [(u, "a") for u in sorted(users)]
    pusher.observe_event(_event(users[1], "view", "b", t + 40_000, 9))  # came back
    later = sorted((p.user_id, p.item_id, p.trigger) for p in pusher.due(t + 86400 + 2))
    # The one who came back had a session end of their own (b); the other gets the reminder (b).
    assert later == sorted([(users[0], "b", "reminder"), (users[1], "b", "browse_abandonment")])
    assert pusher.due(t + 40_000 + 86400 + 2) == []  # b pushed already, a too: nothing left to remind


def test_cart_then_discovery_holds_browsing_to_the_reminder_and_discovers_when_nothing_was_left() -> None:
    from benchmarks.lab_reminders import CartThenDiscoveryPusher
    from stream.contract import CatalogUpdate

    holdout = lambda u: in_holdout(u, 0.5, "kairos-holdout-v1")  # noqa: E731
    carter, browser, looker = [f"u{k:06d}" for k in range(100) if not holdout(f"u{k:06d}")][:3]
    pusher = CartThenDiscoveryPusher(holdout)
    t = 1_780_315_200.0  # 2026-06-01 12:00 UTC
    for item in ("a", "b", "c"):
        pusher.observe_catalog(
            CatalogUpdate(item_id=item, title=item, category="k", price=10.0, stock=5, updated_at=t - 10)
        )
    steps = {carter: [("add_to_cart", "a")], browser: [("view", "b"), ("view", "b")], looker: [("view", "c")]}
    for u, events in steps.items():
        for n, (kind, item) in enumerate(events):
            pusher.observe_event(_event(u, kind, item, t + n, n))
    assert [(p.user_id, p.item_id) for p in pusher.due(t + 3600 + 2)] == [(carter, "a")]  # carts only
    later = sorted((p.user_id, p.item_id) for p in pusher.due(t + 86400 + 2))
    # The browser is reminded of b; the looker, who left nothing, discovers the most popular item they
    # have not seen (a: a cart weighs 3 views); the carter's a was pushed already.
    assert later == sorted([(browser, "b"), (looker, "a")])


def test_cart_then_discovery_first_reminds_with_discovery_before_a_viewed_item() -> None:
    from benchmarks.lab_reminders import CartThenDiscoveryFirstPusher
    from stream.contract import CatalogUpdate

    holdout = lambda u: in_holdout(u, 0.5, "kairos-holdout-v1")  # noqa: E731
    browser, lone, fan = [f"u{k:06d}" for k in range(100) if not holdout(f"u{k:06d}")][:3]
    pusher = CartThenDiscoveryFirstPusher(holdout)
    t = 1_780_315_200.0  # 2026-06-01 12:00 UTC
    for item, category in (("b", "k"), ("c", "k"), ("z", "y")):
        pusher.observe_catalog(
            CatalogUpdate(item_id=item, title=item, category=category, price=10.0, stock=5, updated_at=t - 10)
        )
    views = [(browser, "b"), (browser, "b"), (lone, "z"), (lone, "z"), (fan, "c")]
    for n, (u, item) in enumerate(views):
        pusher.observe_event(_event(u, "view", item, t + n, n))
    assert pusher.due(t + 3600 + 5) == []  # nothing carted: nothing at the session end
    later = sorted((p.user_id, p.item_id) for p in pusher.due(t + 86400 + 5))
    # The browser discovers c (their category, unseen) rather than being reminded of b, and the fan b;
    # the lone shopper's category holds nothing else, so they are reminded of z.
    assert later == sorted([(browser, "c"), (lone, "z"), (fan, "b")])


def test_the_utility_parts_oracles_and_the_title_profile_rank_the_observable_pool() -> None:
    from benchmarks.lab_learned import TitleTasteDiscoveryPusher
    from benchmarks.lab_oracles import OwnedOraclePusher, parts_oracle
    from benchmarks.lab_pushers import ValueDiscoveryPusher

    world = World(SimConfig(seed=3, n_users=20, n_items=60, n_categories=3))
    t = world.now + 3600.0
    shopper = world.user_ids[1]
    seen = [i for i in world.item_ids if world.item_category[world.item_positions([i])[0]] == 0][:3]
    taste_only = parts_oracle(("taste",), True)
    all_parts = parts_oracle(("taste", "appeal", "need", "price", "discount"), False)
    classes = (ValueDiscoveryPusher, taste_only, all_parts, OwnedOraclePusher, TitleTasteDiscoveryPusher)
    pushers = []
    for cls in classes:
        pusher = cls(lambda u: False)
        if hasattr(pusher, "world"):  # the oracles read the world's truth
            pusher.world = world
        for update in world.initial_catalog():
            pusher.observe_catalog(update)
        for n, other in enumerate(world.user_ids[2:8]):
            for k, item in enumerate(world.item_ids[:40]):
                pusher.observe_event(_event(other, "view", item, t + k, 1000 * n + k))
        for n, item in enumerate(seen):
            pusher.observe_event(_event(shopper, "view", item, t + 100 + n, 99_000 + n))
        pushers.append(pusher)
    value, taste, utility, owned, title = (p.candidates(shopper, t + 200) for p in pushers)
    items = [c.item_id for c in value]
    assert value and [c.item_id for c in taste] == [c.item_id for c in utility] == items
    parts = world.utility_parts(shopper, items)
    # The parts add up to the truth (nothing is owned yet), in the order the world adds them.
    total = (
        parts["taste"] + parts["appeal"] + parts["need"] + parts["owned"] + parts["price"] + parts["discount"]
    )
    assert np.array_equal(total, world.true_interests(shopper, items))
    assert [c.value for c in utility] == [float(u) for u in world.true_interests(shopper, items)]
    assert [c.value for c in taste] == [
        c.value + float(p) for c, p in zip(value, parts["taste"], strict=True)
    ]
    # Nothing is owned: the owned oracle keeps the pool; once the shopper owns an item, it goes.
    assert [c.item_id for c in owned] == items
    world._owned[world._user_index[shopper]].add(int(world.item_positions([items[0]])[0]))
    assert world.owned_items(shopper) == {items[0]}
    assert parts["owned"].tolist() == [0.0] * len(items)
    assert world.utility_parts(shopper, items)["owned"][0] == -3.0
    assert items[0] not in {c.item_id for c in pushers[3].candidates(shopper, t + 200)}
    # The title profile: the same pool, each item raised by how much its title shares the viewed ones'.
    assert [c.item_id for c in title] == items
    lifts = [b.value - a.value for a, b in zip(value, title, strict=True)]
    assert all(lift >= 0.0 for lift in lifts) and max(lifts) > 0.0
    title_pusher = pushers[4]
    assert isinstance(title_pusher, TitleTasteDiscoveryPusher)
    shares = {
        c.item_id: set(title_pusher.words[c.item_id]) & {w for i in seen for w in title_pusher.words[i]}
        for c in value
    }
    assert all((lift > 0.0) == bool(shares[c.item_id]) for c, lift in zip(value, lifts, strict=True))


def test_settings_that_cannot_give_figures_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    small = ["--users", "5", "--arms", "marketer_rules", "--no-report"]
    cases = {
        "--days": ["--days", "0"],  # a division by zero after every world ran
        "steps": ["--days", "0.3"],  # 28.8 steps: 29 run, per-day rates divided by 0.3 days
        "--burn-in-days": ["--burn-in-days", "-0.5"],  # the evaluated days skipped: no push at all
        "repeated": ["--seeds", "5", "5"],  # one world counted twice ("0/2 worlds ahead")
        "--seeds": ["--seeds", "-1"],  # numpy refused it deep in the world
        "--workers": ["--workers", "0"],  # the process pool refused it with a traceback
    }
    for needle, extra in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main([*small, *extra])
        assert exit_info.value.code == 2, extra
        assert needle in capsys.readouterr().err, extra


def _refuse(constant: str) -> float:
    raise ValueError(f"not strict JSON: {constant}")


def test_an_undefined_interval_is_strict_json_null_and_the_redraw_reads_it_as_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One shopper: no spread, so every 95 % interval is undefined (nan in the run). json.dumps wrote it
    # NaN, which jq and JSON.parse refuse; it is null now, and the redraw shows it as the run did.
    args = ["--seeds", "5", "--users", "1", "--days", "0.5", "--arms", "marketer_rules", "session_end"]
    assert main([*args, "--workers", "1", "--json", "--out", str(tmp_path / "run")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=_refuse)
    saved = json.loads((tmp_path / "run" / "policy_lab.json").read_text(), parse_constant=_refuse)
    for result in (printed, saved):
        assert result["arms"]["session_end"]["incremental_purchases_ci95"] is None
        assert result["arms"]["session_end"]["vs_first_purchases_ci95"] is None
    first = (tmp_path / "run" / "policy_lab.md").read_text()
    assert "| session_end | +0 ± n/a | +0 ± n/a |" in first
    assert (
        main(["--from-json", str(tmp_path / "run" / "policy_lab.json"), "--out", str(tmp_path / "again")])
        == 0
    )
    assert (tmp_path / "again" / "policy_lab.md").read_text() == first
    png = "policy_lab-arms.png"
    assert (tmp_path / "again" / png).read_bytes() == (tmp_path / "run" / png).read_bytes()

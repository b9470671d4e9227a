"""The response model to pushes: true interest, night, fatigue and expiry drive opens."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from stream.contract import ConsentUpdate, Event, Push, push_id
from stream.simulator import DAY, HOUR, Message, SimConfig, World, local_hour

# Few organic sessions, so advancing is cheap and the push responses dominate.
CFG = SimConfig(seed=21, n_users=1500, n_items=300, n_categories=10, sessions_per_day=0.05)


def _push(world: World, user: str, item: str, at: float, ttl: float = 6 * HOUR, tag: str = "") -> Push:
    return Push(
        push_id=push_id(user, item, "in_session", f"{at}{tag}"),
        user_id=user,
        item_id=item,
        trigger="in_session",
        reason="test",
        score=0.9,
        threshold=0.5,
        model_version="test",
        event_ts=at,
        created_at=at,
        expires_at=at + ttl,
    )


def _at_local_hour(world: World, user: str, hour: int) -> float:
    """The first whole hour after the start at which it is ``hour`` o'clock for ``user``."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(world.user_time_zone(user))
    t = world.config.start_time + HOUR
    while int(local_hour(t, zone)) != hour:
        t += HOUR
    return t


def _best_and_worst(world: World, user: str) -> tuple[str, str]:
    scores = world.true_interests(user)
    return world.item_ids[int(np.argmax(scores))], world.item_ids[int(np.argmin(scores))]


def _answers(
    world: World, pushes: list[tuple[Push, float]], horizon: float = 2 * DAY, only: set[str] | None = None
) -> Counter[str]:
    """Deliver pushes in time order, play the world forward, count feedback events by type.

    With ``only``, feedback to those push ids alone is counted.
    """
    out: list[Message] = []
    for push, at in sorted(pushes, key=lambda p: p[1]):
        out += world.advance(at)
        world.deliver_push(push, at)
    out += world.advance(max(at for _, at in pushes) + horizon)
    ids = only if only is not None else {p.push_id for p, _ in pushes}
    counts: Counter[str] = Counter()
    for m in out:
        if isinstance(m, Event) and m.push_id in ids:
            counts[m.type] += 1
    counts["opt_out"] = sum(1 for m in out if isinstance(m, ConsentUpdate) and not m.opted_in)
    return counts


@pytest.fixture(scope="module")
def users() -> list[str]:
    world = World(CFG)
    return [u for u in world.user_ids if world.opted_in[world._user_index[u]]][:1200]


def test_higher_true_interest_more_opens_clicks_purchases(users: list[str]) -> None:
    world_hi, world_lo = World(CFG), World(CFG)
    hi, lo = [], []
    for u in users:
        best, worst = _best_and_worst(world_hi, u)
        at = _at_local_hour(world_hi, u, 14)
        hi.append((_push(world_hi, u, best, at), at))
        lo.append((_push(world_lo, u, worst, at), at))
    a, b = _answers(world_hi, hi), _answers(world_lo, lo)
    assert a["push_open"] > 3 * max(b["push_open"], 1)
    assert a["push_click"] > b["push_click"]
    assert world_hi.summary()["push_purchases"] > world_lo.summary()["push_purchases"]
    assert a["push_open"] / len(users) > 0.1


def test_night_pushes_are_mostly_ignored_and_annoy(users: list[str]) -> None:
    world_day, world_night = World(CFG), World(CFG)
    day, night = [], []
    for u in users:
        best, _ = _best_and_worst(world_day, u)
        t_day, t_night = _at_local_hour(world_day, u, 14), _at_local_hour(world_day, u, 3)
        day.append((_push(world_day, u, best, t_day), t_day))
        night.append((_push(world_night, u, best, t_night), t_night))
    a, b = _answers(world_day, day), _answers(world_night, night)
    assert b["push_open"] < 0.5 * a["push_open"]
    assert b["push_dismiss"] > a["push_dismiss"]
    s = world_night.summary()
    assert s["quiet_pushes"] == len(users) and world_day.summary()["quiet_pushes"] == 0


def test_fatigue_lowers_opens_and_raises_opt_outs(users: list[str]) -> None:
    calm, tired = World(CFG), World(CFG)
    one, many, last = [], [], set()
    for u in users[:600]:
        best, _ = _best_and_worst(calm, u)
        at = _at_local_hour(calm, u, 9)
        one.append((_push(calm, u, best, at + 8 * HOUR), at + 8 * HOUR))
        for k in range(9):  # one push an hour from 09:00 to 17:00 local; the last one is compared
            push = _push(tired, u, best, at + k * HOUR, tag=str(k))
            many.append((push, at + k * HOUR))
        last.add(push.push_id)
    a = _answers(calm, one)
    b_last = _answers(tired, many, only=last)
    b_all = _answers(World(CFG), many)  # the same pushes, every answer counted
    assert b_last["push_open"] < 0.2 * a["push_open"]
    assert b_all["opt_out"] > 3 * max(a["opt_out"], 1)
    probs = tired.response_probabilities(many[8][0], many[8][1] + 1)
    assert probs.pushes_24h >= 9 and probs.pushes_7d >= 9


def test_the_expected_opt_outs_sum_each_pushs_probability_while_opted_in(users: list[str]) -> None:
    world = World(CFG)
    expected = 0.0
    for u in users[:200]:
        best, _ = _best_and_worst(world, u)
        at = _at_local_hour(world, u, 9)
        for k in range(3):  # fatigue raises the second and third push's probability
            push = _push(world, u, best, at + k * HOUR, tag=str(k))
            expected += world.response_probabilities(push, at + k * HOUR).opt_out
            world.deliver_push(push, at + k * HOUR)
    s = world.summary()
    assert s["opt_out_risk"] == pytest.approx(expected) and expected > 0
    # A user opted out from the start adds nothing: they cannot opt out again.
    out_user = next(u for u in world.user_ids if not world.opted_in[world._user_index[u]])
    best, _ = _best_and_worst(world, out_user)
    at = _at_local_hour(world, out_user, 14)
    world.deliver_push(_push(world, out_user, best, at), at)
    assert world.summary()["opt_out_risk"] == pytest.approx(expected)


def test_expired_pushes_are_never_opened(users: list[str]) -> None:
    world = World(CFG)
    pushes = []
    for u in users:
        best, _ = _best_and_worst(world, u)
        at = _at_local_hour(world, u, 14)
        pushes.append((_push(world, u, best, at - 2 * HOUR, ttl=HOUR), at))  # created 2 h ago, TTL 1 h
    counts = _answers(world, pushes)
    assert counts["push_open"] == 0 and counts["push_click"] == 0
    s = world.summary()
    assert s["expired_pushes"] == len(users) and s["opens"] == 0


def test_opted_out_users_never_open_and_unknown_or_duplicate_pushes_are_ignored() -> None:
    world = World(CFG)
    out_user = next(u for u in world.user_ids if not world.opted_in[world._user_index[u]])
    best, _ = _best_and_worst(world, out_user)
    at = _at_local_hour(world, out_user, 14)
    push = _push(world, out_user, best, at)
    assert world.response_probabilities(push, at).open == 0.0
    world.deliver_push(push, at)
    world.deliver_push(push, at)
    world.deliver_push(_push(world, "nobody", best, at), at)
    s = world.summary()
    assert s["pushes_after_opt_out"] == 1 and s["duplicate_pushes"] == 1 and s["unknown_pushes"] == 1


def test_summary_compares_treatment_with_holdout(users: list[str]) -> None:
    world = World(CFG)
    holdout = set(users[::10])
    pushes = []
    for u in users:
        if u in holdout:
            continue
        best, _ = _best_and_worst(world, u)
        at = _at_local_hour(world, u, 19)
        pushes.append((_push(world, u, best, at), at))
    _answers(world, pushes)
    s = world.summary(holdout=lambda uid: uid in holdout)
    assert s["holdout.pushes"] == 0 and s["holdout.purchases_with_push"] == 0
    assert s["treatment.pushes"] == len(pushes)
    assert s["treatment.purchases_with_push"] > 0
    assert s["treatment.users"] + s["holdout.users"] == CFG.n_users
    assert 0 < s["treatment.open_rate"] < 1
    assert "incremental_purchases" in s and "purchase_lift" in s
    assert s["purchases"] == s["purchases_with_push"] + s["purchases_without_push"]


def test_responses_are_deterministic(users: list[str]) -> None:
    runs = []
    for _ in range(2):
        world = World(CFG)
        pushes = []
        for u in users[:200]:
            best, _ = _best_and_worst(world, u)
            at = _at_local_hour(world, u, 12)
            pushes.append((_push(world, u, best, at), at))
        runs.append(_answers(world, pushes, horizon=DAY))
    assert runs[0] == runs[1]


def test_a_push_changes_only_its_own_shopper_common_random_numbers() -> None:
    """Pushes that are bought leave every other shopper's stream as it is without them, draw for draw.

    That is what makes an arm's paired difference to the no-push world measure its pushes: before the
    random streams were split, one push purchase reshuffled the whole world's later draws.
    """
    cfg = SimConfig(seed=5, n_users=400, n_items=200, n_categories=8)
    quiet, pushed = World(cfg), World(cfg)
    start = cfg.start_time + 12 * HOUR
    quiet_out = quiet.advance(start)
    pushed_out = pushed.advance(start)
    assert quiet_out == pushed_out
    # Pushes of each user's best item (well stocked, so no other shopper meets a stock-out), until
    # some are bought.
    users = pushed.user_ids[:300]
    stocked = [i for i, s in enumerate(pushed.stock) if s >= 15]
    for n, user in enumerate(users):
        scores = pushed.true_interests(user)[stocked]
        item = pushed.item_ids[stocked[int(np.argmax(scores))]]
        pushed.deliver_push(_push(pushed, user, item, start, tag=str(n)), start)
    quiet_out = quiet.advance(start + 2 * DAY)
    pushed_out = pushed.advance(start + 2 * DAY)
    bought = {m.user_id for m in pushed_out if isinstance(m, Event) and m.type == "purchase" and m.session_id}
    assert pushed.user_counters["push_purchases"].sum() > 0

    def by_user(out: list[Message]) -> dict[str, list[Message]]:
        streams: dict[str, list[Message]] = {}
        for m in out:
            if isinstance(m, Event | ConsentUpdate):
                streams.setdefault(m.user_id, []).append(m)
        return streams

    q, p = by_user(quiet_out), by_user(pushed_out)
    others = set(pushed.user_ids) - set(users)
    assert others and all(q.get(u) == p.get(u) for u in others)
    assert any(q.get(u) != p.get(u) for u in users if u in bought)
    # Event ids stay unique with the per-user keys.
    ids = [m.event_id for m in pushed_out if isinstance(m, Event)]
    assert len(ids) == len(set(ids))


def test_two_pushers_sending_the_same_item_to_the_same_shopper_draw_the_same_response() -> None:
    """Response draws are keyed by (shopper, item, n-th push of it to them), not by the push id.

    Two arms that push a shopper the same item get the same answer from the same draws, so the paired
    difference between arms measures what they did differently; a second push of the item draws anew.
    """
    cfg = SimConfig(seed=9, n_users=300, n_items=120, n_categories=6, sessions_per_day=0.05)
    start = cfg.start_time + 12 * HOUR
    worlds = [World(cfg), World(cfg)]
    for w in worlds:
        w.advance(start)
    users = worlds[0].user_ids[:200]
    outcomes: list[list[tuple[float, float]]] = []
    for arm, w in enumerate(worlds):
        for user in users:
            best, _ = _best_and_worst(w, user)
            # Different ids (another trigger and cause per arm), same shopper and item.
            w.deliver_push(_push(w, user, best, start, tag=f"arm{arm}"), start)
        w.advance(start + 2 * DAY)
        outcomes.append(
            [(w.user_counters["opens"][k], w.user_counters["push_purchases"][k]) for k in range(200)]
        )
    assert outcomes[0] == outcomes[1]
    assert sum(o for o, _ in outcomes[0]) > 0
    # The n-th push of the same item draws its own numbers: a day apart (no 24-hour fatigue between
    # them), the first and the second push of an item are opened by different shoppers.
    again = World(cfg)
    out = again.advance(start)
    firsts, seconds = {}, {}
    for user in users:
        best, _ = _best_and_worst(again, user)
        firsts[user] = _push(again, user, best, start, tag="first")
        again.deliver_push(firsts[user], start)
    out = again.advance(start + DAY + HOUR)
    for user in users:
        best, _ = _best_and_worst(again, user)
        seconds[user] = _push(again, user, best, start + DAY + HOUR, tag="second")
        again.deliver_push(seconds[user], start + DAY + HOUR)
    out += again.advance(start + 3 * DAY)
    opened = {m.push_id for m in out if isinstance(m, Event) and m.type == "push_open"}
    discordant = sum((firsts[u].push_id in opened) != (seconds[u].push_id in opened) for u in users)
    assert discordant >= 30  # independent draws: ~63 here; the same draws again: ~11

"""The moment after a shopper leaves: session-end decisions, no push to an active shopper, holdout
ghosts and the outcome estimates they teach (folded in per learning epoch)."""

from __future__ import annotations

from typing import Any

from stream.contract import Trigger
from stream.engine import Engine
from stream.learning import EPOCH_ROW, PENDING_PREFIX, EpochLearner, Update
from stream.partitioning import partition_for
from stream.plan import on_minute
from stream.policy import PushRecord, in_holdout
from stream.policy_config import PolicyConfig
from tests.stream.fakes import (
    PARTITIONS,
    T0,
    DictState,
    catalog_entry,
    catalog_record,
    ev,
    make_engine,
    make_settings,
)

GAP = 1800.0


def engine(**policy: Any) -> Engine:
    values: dict[str, Any] = {
        "active_window_seconds": GAP,
        "session_end_seconds": GAP,
        "threshold": 0.3,
        "trigger_thresholds": {},
        "exploration_share": 0.0,
        "returning_visit_seconds": 0.0,  # tests of the gate set it
        **policy,
    }
    return make_engine(make_settings(**values))


def neighbour(user_id: str, n: int = 0) -> str:
    mine = partition_for(user_id, PARTITIONS)
    found = [u for i in range(2000) if (u := f"n{i}") != user_id and partition_for(u, PARTITIONS) == mine]
    return found[n]


def clock(user: str, ts: float, n: int = 0) -> Any:
    """A neighbour's event: moves the partition's event-time clock without touching ``user``."""
    return ev(f"clock-{user}-{ts}-{n}", neighbour(user, n), "search", None, ts, query="q")


def test_a_session_end_pushes_the_abandoned_cart_item_after_the_gap_not_during_activity() -> None:
    e, store = engine(), DictState()
    out = e.process(
        [
            ev("a1", "u1", "view", "i1", T0),
            ev("a2", "u1", "add_to_cart", "i1", T0 + 30),
            ev("a3", "u1", "view", "i2", T0 + 60),
            ev("a4", "u1", "view", "i2", T0 + 90),
        ],
        store,
    )
    assert out.pushes == []  # on the site: nothing
    assert out.suppressions[("in_session", "user_active")] > 0
    assert e.process([clock("u1", T0 + 90 + GAP - 1)], store).pushes == []
    out = e.process([clock("u1", T0 + 90 + GAP, 1)], store)
    [(_, push)] = out.pushes
    # Which abandoned item wins is the outcome estimates' call; the trigger follows the item.
    assert (push.item_id, push.trigger) in {("i1", "cart_abandonment"), ("i2", "browse_abandonment")}
    assert push.user_id == "u1"
    assert push.event_ts == T0 + 90  # caused by the last event before the gap
    # A returning shopper re-arms the session end: no second push until they leave again.
    assert e.process([ev("a5", "u1", "view", "i3", T0 + 2 * GAP)], store).pushes == []


def test_a_browse_item_needs_repeat_views() -> None:
    e, store = engine(max_per_category_per_local_day=0, session_end_browse=True), DictState()
    e.process([ev("b1", "u2", "view", "i3", T0)], store)  # one view only
    assert e.process([clock("u2", T0 + GAP + 5)], store).pushes == []
    e.process(
        [ev("b2", "u2", "view", "i4", T0 + 2 * GAP), ev("b3", "u2", "view", "i4", T0 + 2 * GAP + 20)], store
    )
    [(_, push)] = e.process([clock("u2", T0 + 3 * GAP + 30, 1)], store).pushes
    assert (push.trigger, push.item_id) == ("browse_abandonment", "i4")


def test_the_active_rule_can_be_switched_off_for_in_session_nudges() -> None:
    e, store = engine(active_window_seconds=0.0, session_end_seconds=0.0), DictState()
    out = e.process([ev("c1", "u3", "view", "i1", T0), ev("c2", "u3", "view", "i1", T0 + 30)], store)
    assert [p.trigger for _, p in out.pushes] == ["in_session"]


def holdout_user(share: float, salt: str) -> str:
    return next(u for i in range(1000) if in_holdout(u := f"h{i}", share, salt))


def test_a_holdout_user_gets_a_ghost_that_counts_for_caps_and_learns_the_no_push_baseline() -> None:
    cfg = PolicyConfig.model_validate({})
    user = holdout_user(0.5, cfg.holdout_salt)
    e, store = engine(holdout_share=0.5, learning_epoch_seconds=3600.0), DictState()
    e.process([ev("g1", user, "add_to_cart", "i1", T0)], store)
    out = e.process([clock(user, T0 + GAP)], store)
    assert out.pushes == []
    # The cart timer and the session end both come due: one ghost, the second decision finds it in the
    # way (minimum gap), as a real push would be; both count as holdout suppressions.
    assert out.suppressions[("cart_abandonment", "holdout")] == 2
    [ghost] = store.user(user).policy.pushes
    assert ghost.ghost and ghost.context == "cart_abandonment/in_cart/full_price"
    # The user buys the item: a ghost conversion, not a push outcome.
    out = e.process([ev("g2", user, "purchase", "i1", T0 + GAP + 600, price=9.0)], store)
    assert out.feedback == []
    learning = e.part(partition_for(user, PARTITIONS)).learning
    assert [u.kind for u in learning.pending] == ["ghost", "ghost_conversion"]
    # Folded in when the partition's clock enters the next epoch (T0 is on an hour boundary).
    e.process([clock(user, T0 + 7200, 1)], store)
    estimate = learning.estimates.estimate("cart_abandonment/in_cart/full_price", T0 + 7200)
    assert estimate.no_push.decisions > 0.99 and estimate.no_push.conversions > 0.99
    assert learning.pending == []


def test_pending_updates_survive_a_restart_and_fold_in_stream_order() -> None:
    cfg = PolicyConfig.model_validate({"learning_epoch_seconds": 3600.0})
    a = EpochLearner.empty(cfg)
    a.advance(T0)
    a.add(2, Update("push", "cart_abandonment/in_cart/full_price", T0 + 10))
    a.add(1, Update("ghost", "cart_abandonment/in_cart/full_price", T0 + 5))
    rows = a.drain()
    b = EpochLearner.empty(cfg)
    b.load([(k, v) for k, v in rows.items() if v is not None])
    assert [u.kind for u in b.pending] == ["ghost", "push"]  # stream order, not arrival order
    a.advance(T0 + 3600)
    b.advance(T0 + 3600)
    assert a.drain() == b.drain()
    assert a.estimates.estimate("cart_abandonment/in_cart/full_price", T0 + 3600) == b.estimates.estimate(
        "cart_abandonment/in_cart/full_price", T0 + 3600
    )


def test_a_damaged_pending_update_is_lost_alone() -> None:
    cfg = PolicyConfig.model_validate({"learning_epoch_seconds": 3600.0})
    a = EpochLearner.empty(cfg)
    a.advance(T0)
    a.add(1, Update("ghost", "cart_abandonment/in_cart/full_price", T0 + 5))
    a.add(2, Update("push", "cart_abandonment/in_cart/full_price", T0 + 10))
    rows = [(k, v) for k, v in sorted(a.drain().items()) if v is not None]
    pending = [i for i, (k, _) in enumerate(rows) if k.startswith(PENDING_PREFIX) and k != EPOCH_ROW]
    rows[pending[0]] = (rows[pending[0]][0], b"\x00garbage")
    b = EpochLearner.empty(cfg)
    b.load(rows)
    assert [u.kind for u in b.pending] == ["push"]


def test_push_records_keep_their_context_and_old_rows_still_load() -> None:
    old = ["p1", "i1", "c", "in_session", T0, T0 + 3600, None, None, None, 0.0, None, None]
    assert PushRecord.from_list(old).context == "" and not PushRecord.from_list(old).ghost
    new = PushRecord("p2", "i2", None, "cart_abandonment", T0, T0 + 60, context="x/y/z", ghost=True)
    assert PushRecord.from_list(new.to_list()) == new


def test_a_push_waits_for_the_shoppers_usual_hour_and_goes_out_then() -> None:
    e, store = engine(max_per_category_per_local_day=0, item_repeat_window_seconds=0), DictState()
    day = 86400.0
    evening = T0 + 9 * 3600  # 19:00 UTC (T0 is 10:00 UTC; the user's zone is the default, UTC)
    habit = []
    for d in range(1, 6):  # five earlier evenings of browsing at 19:10
        for k in range(6):
            habit.append(ev(f"h{d}-{k}", "u9", "view", "i5", evening - d * day + 600 + k * 30))
    e.process(habit, store)
    # Today the shopper carts at 17:50 and leaves; the session ends at 18:20, the push may live until
    # 19:05 (1 h TTL, 15 min minimum lifetime): it waits for 19:00 instead of going out at 18:20.
    e.process([ev("t1", "u9", "add_to_cart", "i1", evening - 4200)], store)
    out = e.process([clock("u9", evening - 4200 + GAP)], store)
    assert out.pushes == []
    [held] = store.user("u9").policy.held
    assert held.release_at == evening
    [(_, push)] = e.process([clock("u9", evening, 1)], store).pushes
    assert (push.item_id, push.created_at) == ("i1", evening)


def test_a_held_push_deferred_by_activity_never_lands_in_quiet_hours() -> None:
    """push_outcomes found 2 of 823 pushes delivered in quiet hours: a release deferred while the
    shopper was active landed after 22:00. Deferrals now skip quiet hours too."""
    from stream.asks import BatchUser
    from stream.engagement import Engagement
    from stream.engine import Outcome
    from stream.policy import HeldPush
    from stream.state import UserState
    from tests.stream.fakes import catalog_entry

    e = engine(quiet_hours_start="22:00", quiet_hours_end="08:00")
    night = T0 + 11.5 * 3600  # 21:30 UTC: the shopper is browsing, a held push comes due
    state = UserState()
    engagement = Engagement()
    engagement.observe("view", "i2", night)
    entry = catalog_entry("i1")
    from stream.policy import Candidate, Verdict, build_push

    cand = Candidate(
        item_id="i1",
        trigger="cart_abandonment",
        interest=0.9,
        raw_score=0.0,
        features={},
        category=entry.category,
        title=entry.title,
        price=entry.price,
        promotion_id=None,
        discount=0.0,
        in_stock=True,
        promotion_valid=True,
        event_ts=night - 600,
        cause="c1",
    )
    push = build_push("u7", cand, Verdict("emit", "ok"), night - 600, e.cfg, "m")
    state.policy.held.append(HeldPush(push, night))
    user = BatchUser("u7", partition_for("u7", PARTITIONS), state, engagement)
    out = Outcome()
    e.decider.release_held(user, night, out, 1)
    assert out.pushes == []
    # Active until 22:00: the deferral would end in quiet hours, so it waits for 08:00.
    assert state.policy.held[0].release_at == T0 + 22 * 3600
    assert out.suppressions[("cart_abandonment", "user_active")] == 1


def test_a_session_end_teaches_the_interest_index_so_a_later_price_drop_reaches_the_shopper() -> None:
    from tests.stream.fakes import catalog_entry, catalog_record

    e, store = engine(), DictState()
    e.process([ev("p1", "u8", "view", "i3", T0)], store)  # viewed once: not pushable at the session end
    out = e.process([clock("u8", T0 + GAP + 1)], store)
    assert out.pushes == []
    part = e.part(partition_for("u8", PARTITIONS))
    assert [u for u, _, _ in part.interest.users_for("i3", T0 + GAP + 1, 0.0)] == ["u8"]
    later = T0 + GAP + 600
    e.process([clock("u8", later, 1)], store)
    out = e.apply_catalog([catalog_record(catalog_entry("i3", price=60.0, updated_at=later))], store)
    assert [(p.user_id, p.trigger) for _, p in out.pushes] == [("u8", "price_drop")]


def holding_engine(**policy: Any) -> Engine:
    """Quiet hours 22:00-08:30 UTC that hold a push until they end; viewed items at the session end."""
    return engine(
        quiet_hours_start="22:00",
        quiet_hours_end="08:30",
        default_time_zone="UTC",
        quiet_hours_action="hold",
        session_end_browse=True,
        **policy,
    )


def test_a_hold_decided_in_a_batch_is_released_at_the_same_input_whatever_the_batching() -> None:
    """A push held through quiet hours (decided in the batch's second pass) is released by the first
    input of its partition at or after the end of quiet hours, even when that input is in the same batch.

    Before timers of plans were put on whole minutes (and the engine closed its second pass when the
    clock entered a later minute), the first pass moved the clock past the release time before the hold
    existed, and the release waited for the next batch: a replay cut differently released it elsewhere.
    (Hour boundaries hid it: the learning epoch closes the second pass there; 08:30 is not one.)
    """
    quiet_end = T0 - 1.5 * 3600  # 08:30 UTC
    left = quiet_end - 50 * 60  # 07:40: the shopper's last view; the session ends at 08:10, in quiet hours
    inputs = [
        ev("q1", "u5", "view", "i1", left - 20),
        ev("q2", "u5", "view", "i1", left),
        clock("u5", left + GAP + 30, 4),  # the session end fires: held until 08:30
        clock("u5", quiet_end - 30),
        clock("u5", quiet_end + 7, 1),
        clock("u5", quiet_end + 40, 2),
        clock("u5", quiet_end + 95, 3),
    ]
    released: list[list[tuple[str, Trigger, float]]] = []
    for batch in (1, 2, len(inputs)):
        e = holding_engine()
        store, pushes = DictState(), []
        for start in range(0, len(inputs), batch):
            out = e.process(inputs[start : start + batch], store)
            pushes += [(p.user_id, p.trigger, p.created_at) for _, p in out.pushes]
        released.append(pushes)
    assert released[0] == [("u5", "browse_abandonment", quiet_end + 7)]
    assert released[1] == released[0] and released[2] == released[0]


def test_a_release_deferred_in_a_batch_fires_at_the_same_input_whatever_the_batching() -> None:
    """A held push whose release finds the shopper on the site is deferred: a new release timer, on a
    whole minute, scheduled in pass 2 by a release that asks nothing. The batch must close when its
    clock enters a later minute, as after a decision (``Work.queue``: a release with something held may
    schedule a timer), or the deferred release would wait for the next batch."""
    quiet_end = T0 - 1.5 * 3600  # 08:30 UTC
    left = quiet_end - 50 * 60  # the session ends at 08:10, in quiet hours: held until 08:30
    hold = [
        ev("d1", "u5", "view", "i1", left - 20),
        ev("d2", "u5", "view", "i1", left),
        clock("u5", left + GAP + 30),
    ]
    after = [
        ev("d3", "u5", "search", None, quiet_end - 60, query="q"),  # back on the site at 08:29
        clock("u5", quiet_end + 7, 1),  # the hold ends: deferred until 08:34 (5 minutes away)
        clock("u5", quiet_end + 300, 2),
        clock("u5", quiet_end + 360, 3),
    ]
    released: list[list[tuple[str, str, float]]] = []
    for batch in (1, len(after)):
        e = holding_engine(active_window_seconds=300.0)
        store = DictState()
        assert e.process(hold, store).pushes == []
        pushes: list[tuple[str, str, float]] = []
        for start in range(0, len(after), batch):
            out = e.process(after[start : start + batch], store)
            pushes += [(p.user_id, p.trigger, p.created_at) for _, p in out.pushes]
        released.append(pushes)
    assert released[0] == [("u5", "browse_abandonment", quiet_end + 300)]
    assert released[1] == released[0]


DAY = 86400.0


def test_a_second_reminder_the_first_cancels_never_fires_inside_the_batch() -> None:
    """The second reminder moment is armed when the first fires (pass 1) and cancelled when the first
    waits (pass 2). In a partition quiet for hours the first fires late and the second falls due within
    the minute: pass 2 must run before the second is fired, as at batch size 1, where it never is.
    (Found in review, 2026-12-05: one batch sent a reminder that batch size 1 does not.)"""
    left = T0 + 150
    again_due = left + DAY + 8 * 3600  # reminder_again_seconds' default after the first moment
    records = [
        ev("w1", "u1", "view", "i1", T0),
        ev("w2", "u1", "add_to_cart", "i1", T0 + 30),
        *[ev(f"w{k}", "u1", "view", item, T0 + 30 * k) for k, item in enumerate(["i2", "i2", "i3", "i3"], 2)],
        clock("u1", left + GAP, 1),  # the session end's push: recent, so the first reminder will wait
        clock("u1", again_due - 20, 2),  # the first moment fires late (the partition was quiet) and waits
        clock("u1", again_due + 5, 3),  # the same minute: the second moment is due
        clock("u1", again_due + 200, 4),
    ]
    results = []
    for batch in (1, len(records)):
        e = engine(
            reminder_seconds=DAY,
            reminder_push_gap_seconds=2 * DAY,
            session_end_browse=True,
            session_end_max_items=3,
            threshold=0.05,
        )
        store, pushes = DictState(), []
        for start in range(0, len(records), batch):
            out = e.process(records[start : start + batch], store)
            pushes += [(p.trigger, p.item_id, p.created_at) for _, p in out.pushes if p.user_id == "u1"]
        results.append((pushes, rows(store)))
    assert [trigger for trigger, _, _ in results[0][0]] == ["cart_abandonment"]
    assert results[1] == results[0]


def test_a_reminder_goes_only_to_a_shopper_who_stays_away_of_the_next_abandoned_item() -> None:
    # The reminder at its own time: the wait after the session end's push has its own test below.
    e, store = engine(reminder_seconds=DAY, reminder_push_gap_seconds=0), DictState()
    abandon = [
        ev("f1", "u1", "view", "i1", T0),
        ev("f2", "u1", "add_to_cart", "i1", T0 + 30),
        ev("f3", "u1", "view", "i2", T0 + 60),
        ev("f4", "u1", "view", "i2", T0 + 90),
    ]
    returning = [
        ev(f"r{k}", "u9", *step)
        for k, step in enumerate(
            [
                ("view", "i1", T0),
                ("add_to_cart", "i1", T0 + 30),
                ("view", "i2", T0 + 60),
                ("view", "i2", T0 + 90),
            ]
        )
    ]
    e.process(abandon + returning, store)
    first = {
        p.user_id: p
        for _, p in e.process([clock("u1", T0 + 90 + GAP), clock("u9", T0 + 90 + GAP, 1)], store).pushes
    }
    assert set(first) == {"u1", "u9"}
    # u9 comes back half a day later and leaves again: their reminder moves with them.
    e.process([ev("r9", "u9", "search", None, T0 + DAY / 2, query="q")], store)
    assert [
        p for _, p in e.process([clock("u1", T0 + 90 + DAY - 1, 2)], store).pushes if p.user_id == "u1"
    ] == []
    out = e.process([clock("u1", T0 + 90 + DAY, 3), clock("u9", T0 + 90 + DAY, 4)], store)
    [(_, again)] = [(k, p) for k, p in out.pushes if p.trigger != "in_session"]
    assert again.user_id == "u1"
    assert again.item_id != first["u1"].item_id  # never the same item twice in the repeat window
    assert again.push_id != first["u1"].push_id and again.event_ts == T0 + 90
    assert again.trigger == "reminder"
    # Interest is judged as the shopper left; the reason still says how long ago they engaged.
    assert again.features["age_seconds"] >= DAY - 60 and again.reason.endswith("24 hours ago")


def test_a_shopper_who_left_nothing_behind_gets_a_discovery_push_of_a_popular_item_they_have_not_seen() -> (
    None
):
    e, store = engine(reminder_seconds=DAY), DictState()
    jackets = [
        catalog_entry(item).model_copy(update={"category": "Jackets", "title": f"Jacket {item}"})
        for item in ("j1", "j2", "j3")
    ]
    e.apply_catalog([catalog_record(entry) for entry in jackets], DictState(), announce=False)
    # Shoppers of u1's partition make j2 popular; u1 views j1 once (nothing abandoned) and leaves.
    crowd = [ev(f"c{k}", neighbour("u1", k % 3), "view", "j2", T0 + k) for k in range(40)]
    e.process([*crowd, ev("d1", "u1", "view", "j1", T0 + 10)], store)
    end = [p for _, p in e.process([clock("u1", T0 + 10 + GAP, 3)], store).pushes if p.user_id == "u1"]
    assert end == []  # a single view is not abandoned: nothing at the session end
    out = e.process([clock("u1", T0 + 10 + DAY, 4)], store)
    [push] = [p for _, p in out.pushes if p.user_id == "u1"]
    assert (push.trigger, push.item_id) == ("discovery", "j2")  # popular, unseen, in their category
    assert push.event_ts == T0 + 10
    assert push.reason.startswith("Popular in jackets, which you looked at 24 hours ago")


def test_a_shopper_still_away_a_day_after_the_reminder_gets_one_more_and_one_who_came_back_does_not() -> None:
    jackets = [
        catalog_entry(item).model_copy(update={"category": "Jackets", "title": f"Jacket {item}"})
        for item in ("j1", "j2", "j3")
    ]
    for comes_back in (False, True):
        e, store = engine(reminder_seconds=DAY, reminder_again_seconds=DAY), DictState()
        e.apply_catalog([catalog_record(entry) for entry in jackets], DictState(), announce=False)

        def crowd(start: float) -> list[Any]:  # shoppers of u1's partition view both jackets
            return [
                ev(f"c{start}-{k}", neighbour("u1", k % 3), "view", ("j2", "j3")[k % 2], start + k)
                for k in range(40)
            ]

        e.process([*crowd(T0), ev("d1", "u1", "view", "j1", T0 + 10)], store)

        def pushes(ts: float, n: int, e: Engine = e, store: DictState = store) -> list[Any]:
            return [p for _, p in e.process([clock("u1", ts, n)], store).pushes if p.user_id == "u1"]

        assert pushes(T0 + 10 + GAP, 3) == []
        [first] = pushes(T0 + 10 + DAY, 4)
        assert first.trigger == "discovery" and first.item_id in {"j2", "j3"}
        # The second moment is stored with the shopper (a restarted worker rebuilds it from there).
        assert [t[:4] for t in store.user("u1").timers] == [[T0 + 10 + 2 * DAY, "u1", "reminder", "again"]]
        if comes_back:  # back an hour after the reminder, and gone again
            e.process([ev("d2", "u1", "search", None, T0 + 10 + DAY + 3600, query="q")], store)
        assert pushes(T0 + 10 + 2 * DAY - 1, 5) == []
        # The crowd keeps both jackets popular (popularity halves every 6 hours).
        e.process(crowd(T0 + 2 * DAY - 100), store)
        again = pushes(T0 + 10 + 2 * DAY, 6)
        if comes_back:
            assert again == []
            continue
        [second] = again
        # The other item of the pool (none is pushed twice within the repeat window), its own push id;
        # the push is still about the shopper's last visit.
        assert (second.trigger, second.event_ts) == ("discovery", T0 + 10)
        assert {first.item_id, second.item_id} == {"j2", "j3"}
        assert second.push_id != first.push_id
        assert pushes(T0 + 10 + 3 * DAY, 7) == []  # no third moment


def test_by_default_the_second_moment_comes_8_hours_after_the_first_in_another_category_that_day() -> None:
    # The defaults: the second moment 8 h after the first, at most one push per category per local day.
    assert PolicyConfig().reminder_again_seconds == 8 * 3600.0
    popular = ["j2"] * 5 + ["j3"] * 3 + ["s2"] * 2  # jackets first

    def crowd(start: float) -> list[Any]:  # shoppers of u1's partition (not u1) view them
        return [
            ev(f"c{start}-{k}", neighbour("u1", k % 3), "view", popular[k % 10], start + k) for k in range(40)
        ]

    for with_shoes in (True, False):
        e, store = engine(reminder_seconds=DAY), DictState()
        items = [("j1", "Jackets"), ("j2", "Jackets"), ("j3", "Jackets"), ("s1", "Shoes"), ("s2", "Shoes")]
        entries = [
            catalog_entry(item).model_copy(update={"category": category, "title": f"{category} {item}"})
            for item, category in items
        ]
        e.apply_catalog([catalog_record(entry) for entry in entries], DictState(), announce=False)
        seen = [ev("d1", "u1", "view", "j1", T0 + 50)]
        if with_shoes:  # shoes are among the shopper's recent categories, so in their discovery pool
            seen.append(ev("d2", "u1", "view", "s1", T0 + 60))
        e.process([*crowd(T0), *seen], store)
        left = T0 + 50 + 10 * with_shoes  # the shopper's last activity

        def pushes(ts: float, n: int, e: Engine = e, store: DictState = store) -> tuple[list[Any], Any]:
            out = e.process([clock("u1", ts, n)], store)
            return [p for _, p in out.pushes if p.user_id == "u1"], out

        assert pushes(left + GAP, 3)[0] == []
        [first], _ = pushes(left + DAY, 4)
        assert first.trigger == "discovery" and first.item_id in {"j2", "j3"}  # a popular jacket
        again = left + DAY + 8 * 3600
        assert [t[:4] for t in store.user("u1").timers] == [[again, "u1", "reminder", "again"]]
        e.process(crowd(again - 100), store)
        second, out = pushes(again, 5)  # 18:01 UTC, the day of the first (10:01)
        if with_shoes:
            [push] = second
            assert (push.trigger, push.item_id) == ("discovery", "s2") and push.push_id != first.push_id
        else:  # the other jacket: jackets were pushed to the shopper that day
            assert second == [] and out.suppressions[("discovery", "category_today")] >= 1


def test_discovery_is_off_with_no_items_and_a_reminder_may_prefer_what_was_abandoned() -> None:
    twice = ["i1", "i1", "i2", "i2"]  # two abandoned items: one for the session end, one for the reminder
    abandoned_first = {"session_end_browse": True, "reminder_discovery_first": False}
    for discovery_items, views, policy, expected in (
        (0, [], {}, []),
        (10, twice, abandoned_first, ["browse_abandonment", "reminder"]),
        (10, twice, {}, ["discovery"]),  # the defaults: nothing viewed at the session end, discovery first
        (0, twice, {}, ["reminder"]),  # ... and the viewed item when there is nothing to discover
    ):
        e = engine(
            reminder_seconds=DAY,
            reminder_push_gap_seconds=0,  # the moments at their own times (the wait is tested below)
            discovery_items=discovery_items,
            threshold=0.1,
            **policy,
        )
        store = DictState()
        jackets = [catalog_entry(item).model_copy(update={"category": "Jackets"}) for item in ("j1", "j2")]
        e.apply_catalog([catalog_record(entry) for entry in jackets], DictState(), announce=False)
        crowd = [ev(f"c{k}", neighbour("u1", k % 3), "view", "j2", T0 + k) for k in range(40)]
        mine = [ev(f"d{k}", "u1", "view", item, T0 + 10 + k) for k, item in enumerate(["j1", *views])]
        e.process([*crowd, *mine], store)
        moments = [
            e.process([clock("u1", T0 + 20 + GAP, 3)], store),
            e.process([clock("u1", T0 + 20 + DAY, 4)], store),
        ]
        triggers = [p.trigger for out in moments for _, p in out.pushes if p.user_id == "u1"]
        assert triggers == expected


def test_a_reminder_moment_waits_a_day_after_the_last_push_unless_the_shopper_comes_back() -> None:
    """``reminder_push_gap_seconds``: the reminder (a day after the last activity) waits until a day after
    the shopper's last push, on a whole minute, and its second moment comes 8 h after it, without
    waiting; a return in the meantime re-arms the reminder from the return. Batches of 1 or all records
    at once give the same pushes and stored state."""
    left = T0 + 150  # the shopper's last activity (10:02:30 UTC)
    session_push = left + GAP  # the session end pushes the carted item
    first = on_minute(session_push + DAY)  # the reminder, a day after that push
    second = first + 8 * 3600  # the second moment, 8 h after the first fired
    shopping = [
        ev("w1", "u1", "view", "i1", T0),
        ev("w2", "u1", "add_to_cart", "i1", T0 + 30),
        *[ev(f"w{k}", "u1", "view", item, T0 + 30 * k) for k, item in enumerate(["i2", "i2", "i3", "i3"], 2)],
    ]

    def run(comes_back: bool, batch: int) -> tuple[list[tuple[str, str, float]], DictState, int]:
        e = engine(
            reminder_seconds=DAY,
            reminder_push_gap_seconds=DAY,
            session_end_browse=True,
            session_end_max_items=3,
            threshold=0.05,
        )
        store = DictState()
        records = [
            *shopping,
            clock("u1", session_push, 1),
            clock("u1", left + DAY, 2),  # the reminder is due: it waits
        ]
        if comes_back:
            records += [
                ev("back", "u1", "search", None, left + DAY + 30, query="q"),  # the same minute
                clock("u1", first, 3),
                clock("u1", left + DAY + 30 + DAY, 4),  # a day after the return (and the push)
            ]
        else:
            records += [
                clock("u1", first - 1, 3),
                clock("u1", first, 4),
                clock("u1", second - 1, 5),
            ]
        pushes: list[tuple[str, str, float]] = []
        waited = 0
        for k in range(0, len(records), batch):
            out = e.process(records[k : k + batch], store)
            pushes += [(p.trigger, p.item_id, p.created_at) for _, p in out.pushes if p.user_id == "u1"]
            waited += sum(n for (_, reason), n in out.suppressions.items() if reason == "recent_push")
        return pushes, store, waited

    away, store, waited = run(False, 1)
    assert [(trigger, at) for trigger, _, at in away] == [
        ("cart_abandonment", session_push),
        ("reminder", first),
    ]
    assert away[0][1] != away[1][1] and waited == 1
    # The second moment was armed when the reminder fired for real (not 8 h after it first fell due).
    assert [t[:4] for t in store.user("u1").timers] == [[second, "u1", "reminder", "again"]]
    back, store, waited = run(True, 1)
    assert [(trigger, at) for trigger, _, at in back] == [("cart_abandonment", session_push)]
    # The reminder came a day after the return (nothing left worth a push by then) and armed the second.
    returned = left + DAY + 30
    assert waited == 1
    again = returned + DAY + 8 * 3600
    assert [t[:4] for t in store.user("u1").timers] == [[again, "u1", "reminder", "again"]]
    for comes_back in (False, True):
        one, one_store, _ = run(comes_back, 1)
        whole, whole_store, _ = run(comes_back, 100)
        assert one == whole and rows(one_store) == rows(whole_store)


def test_a_shopper_back_within_hours_finds_their_cart_without_a_push() -> None:
    """``returning_visit_seconds``: a visit that began soon after the previous one pushes nothing at its
    end (cart timer and session end alike); one that began later pushes its cart. Batches of 1 or all
    records at once give the same pushes and stored state."""

    def run(second_visit: float, batch: int) -> tuple[list[tuple[str, str]], DictState]:
        e, store = engine(returning_visit_seconds=12 * 3600.0, max_per_category_per_local_day=0), DictState()
        records = [
            ev("r1", "u4", "view", "i1", T0),
            ev("r2", "u4", "view", "i2", T0 + second_visit),
            ev("r3", "u4", "add_to_cart", "i2", T0 + second_visit + 30),
            clock("u4", T0 + second_visit + 30 + GAP, 1),
        ]
        pushes: list[tuple[str, str]] = []
        for k in range(0, len(records), batch):
            pushes += [(p.trigger, p.item_id) for _, p in e.process(records[k : k + batch], store).pushes]
        return pushes, store

    back, store = run(2 * 3600.0, 1)  # back after 2 h (12:00 UTC): nothing
    assert back == []
    assert store.user("u4").engagement.visits == [T0, T0 + 2 * 3600.0, T0 + 2 * 3600.0 + 30]
    later, _ = run(22.5 * 3600.0, 1)  # back after 22.5 h (08:30 UTC, out of quiet hours): the cart push
    assert later == [("cart_abandonment", "i2")]
    for second_visit in (2 * 3600.0, 22.5 * 3600.0):
        one, one_store = run(second_visit, 1)
        whole, whole_store = run(second_visit, 4)
        # Every stored row but the partition's offsets (each run's records have offsets of their own).
        assert one == whole and rows(one_store) == rows(whole_store)


def rows(store: DictState) -> dict[tuple[int, bytes], bytes]:
    return {k: v for k, v in store.data.items() if not k[1].startswith(b"\x00p")}

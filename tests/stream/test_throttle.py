"""The global push throttle: a per-partition token bucket in event time, excess pushes wait in order."""

from __future__ import annotations

from typing import Any

import pytest

from stream.engine import Engine, Inbound, Outcome
from stream.partitioning import partition_for
from stream.throttle import THROTTLE_ROW, PushThrottle
from stream.user_facts import quiet_hours_end, zone_named
from tests.policy.conftest import candidate, config
from tests.stream.fakes import (
    PARTITIONS,
    T0,
    DictState,
    PartitionView,
    catalog_entry,
    catalog_record,
    ev,
    make_engine,
    make_settings,
)


def _push(n: int, ts: float, ttl: float = 3600.0) -> Any:
    from stream.policy import Verdict, build_push

    return build_push(
        f"u{n}", candidate(f"i{n}"), Verdict("emit", "ok"), ts, config(push_ttl_seconds=ttl), "m"
    )


def test_bucket_admits_a_minutes_worth_then_queues_and_releases_in_order() -> None:
    t = PushThrottle(per_minute=2)
    assert t.admit(T0) and t.admit(T0) and not t.admit(T0)
    assert t.enqueue(_push(1, T0)) and t.enqueue(_push(2, T0))
    assert not t.admit(T0 + 20)  # waiting pushes go first
    released, expired, _, _ = t.release(T0 + 30, min_lifetime=900)
    assert [p.user_id for p in released] == ["u1"] and expired == []
    assert released[0].created_at == T0 + 30
    released, *_ = t.release(T0 + 60, min_lifetime=900)
    assert [p.user_id for p in released] == ["u2"]


def test_a_push_that_would_expire_while_waiting_is_dropped_and_rows_round_trip() -> None:
    t = PushThrottle(per_minute=1)
    assert t.admit(T0)
    t.enqueue(_push(1, T0, ttl=920))
    t.enqueue(_push(2, T0))
    rows = t.drain()
    again = PushThrottle(per_minute=1)
    again.load(rows.items())  # type: ignore[arg-type]
    released, expired, _, _ = again.release(T0 + 30, min_lifetime=900)
    assert [p.user_id for p in expired] == ["u1"] and released == []  # half a token for u2
    assert [p.user_id for p in again.release(T0 + 60, 900)[0]] == ["u2"]


def test_a_push_out_before_a_crash_waits_marked_takes_its_budget_and_is_not_sent_again() -> None:
    """Recovery marks a waiting push it read back from the pushes topic (``mark_sent``); the release
    that the redelivered input makes again takes its token and returns it in ``sent``, not in
    ``pushes``, and the mark is stored with the row (another crash before that release keeps it)."""
    t = PushThrottle(per_minute=1)
    assert t.admit(T0)
    t.enqueue(_push(1, T0))
    t.enqueue(_push(2, T0), sent=True)  # its decision, made again after a crash, waits as it did then
    t.drain()
    assert t.mark_sent(_push(1, T0).push_id) and not t.mark_sent("not-waiting")
    again = PushThrottle(per_minute=1)
    again.load(t.drain().items())  # type: ignore[arg-type]
    first = again.release(T0 + 60, 900)
    assert (
        first.pushes == []
        and [p.user_id for p in first.sent] == ["u1"]
        and first.sent[0].created_at == T0 + 60
    )
    assert again.tokens == 0.0  # its token, as when it went out
    second = again.release(T0 + 120, 900)
    assert second.pushes == [] and [p.user_id for p in second.sent] == ["u2"] and again.queue == []
    assert b'"o"' not in (again.drain()[THROTTLE_ROW] or b"")  # the row without a crash's marks again


def test_off_by_default() -> None:
    assert PushThrottle(per_minute=0).admit(T0)
    assert not make_engine().part(0).throttle.enabled


def _burst(n_users: int) -> list[Any]:
    users = [u for u in (f"b{i}" for i in range(400)) if partition_for(u, PARTITIONS) == 0][:n_users]
    records = []
    for k, user in enumerate(users):  # one push each (in-session), all within one minute
        records += [
            ev(f"{user}-1", user, "view", "i1", T0 + k),
            ev(f"{user}-2", user, "add_to_cart", "i1", T0 + k + 0.5),
        ]
    clock = [u for u in (f"c{i}" for i in range(400)) if partition_for(u, PARTITIONS) == 0][0]
    records += [ev(f"tick-{m}", clock, "search", None, T0 + 60 * m + 1, query="q") for m in range(1, 6)]
    return records


def _run(batch: int) -> tuple[list[tuple[str, float]], dict[tuple[str, str], int]]:
    # 4 partitions share 24 pushes a minute: 6 per partition per minute.
    engine: Engine = make_engine(make_settings(max_pushes_per_minute=24.0))
    store, out = DictState(), Outcome()
    records = _burst(15)
    for start in range(0, len(records), batch):
        out.extend(engine.process(records[start : start + batch], store))
    return [(p.user_id, p.created_at) for _, p in out.pushes], {
        k: v for k, v in out.suppressions.items() if v
    }


def test_the_engine_throttles_in_stream_order_whatever_the_batching() -> None:
    pushes, suppressions = _run(1000)
    assert len(pushes) == 15
    first_minute = [u for u, at in pushes if at < T0 + 60]
    assert len(first_minute) == 6  # a minute's budget
    assert suppressions[("in_session", "throttled")] == 9
    assert sorted({at for _, at in pushes if at >= T0 + 60})[0] == T0 + 61  # released as the clock moved on
    for batch in (1, 7):
        assert _run(batch) == (pushes, suppressions)


@pytest.mark.parametrize("consent", ["erasure", "opt_out"])
def test_a_waiting_push_of_a_user_who_erases_or_opts_out_is_dropped_not_sent_later(consent: str) -> None:
    """The opt-out case was found by the hostile-stream fuzz (tests/stream/test_hostile_streams.py): a
    push waiting for budget went out minutes after its user opted out, as if the opt-out came first."""
    engine: Engine = make_engine(make_settings(max_pushes_per_minute=24.0))
    store = DictState()
    records = _burst(15)
    burst, ticks = records[:30], records[30:]
    engine.process(burst, store)
    throttle = engine.part(0).throttle
    doomed = throttle.queue[2].user_id
    waiting = len(throttle.queue)
    opt_out = b'{"user_id": "%s", "opted_in": false, "ts": %f}' % (doomed.encode(), T0 + 30)
    record = Inbound("consent", 0, 99, doomed.encode(), None if consent == "erasure" else opt_out)
    out = engine.process([record], store)
    assert len(throttle.queue) == waiting - 1 and all(p.user_id != doomed for p in throttle.queue)
    if consent == "erasure":
        stored = store.get(0, THROTTLE_ROW)
        assert stored is not None and doomed.encode() not in stored  # the stored queue forgot it too
    else:
        assert out.consent_updates == 1
        assert out.suppressions[("in_session", "no_consent")] == 1  # counted where it is dropped
    out = engine.process(ticks, store)
    assert len(out.pushes) == waiting - 1 and all(p.user_id != doomed for _, p in out.pushes)


def test_a_push_waiting_for_budget_is_not_released_in_the_users_quiet_hours() -> None:
    """Found by the hostile-stream fuzz: decided at 21:59:40 (UTC, no zone known), over budget, the
    push went out at a later minute of the partition's clock with budget, 22:01:40, inside quiet hours."""
    evening = 1_717_279_180.0  # 2024-06-01 21:59:40 UTC
    settings = make_settings(max_pushes_per_minute=4.0, quiet_hours_start="22:00", quiet_hours_end="08:00")
    engine: Engine = make_engine(settings)  # one push a minute per partition
    users = [u for u in (f"b{i}" for i in range(400)) if partition_for(u, PARTITIONS) == 0][:3]
    first, second, clock = users
    out = engine.process(
        [
            ev("a1", first, "view", "i1", evening),
            ev("a2", first, "add_to_cart", "i1", evening + 1),
            ev("b1", second, "view", "i2", evening + 2),
            ev("b2", second, "add_to_cart", "i2", evening + 3),
        ],
        DictState(),
    )
    assert [p.user_id for _, p in out.pushes] == [first] and len(engine.part(0).throttle.queue) == 1
    ticks = [ev(f"c{m}", clock, "search", None, evening + 60 * m, query="q") for m in (1, 2, 3)]
    later = engine.process(ticks, DictState())  # the budget is back at 22:01:40
    assert [p for _, p in later.pushes if p.user_id == second] == []


def test_a_waiting_push_keeps_to_the_quiet_hours_of_the_zone_its_user_moved_to() -> None:
    """Found by the hostile-stream fuzz (seed 11068): a push over budget waited with the zone its user
    had when it was decided; the user's next event came from another zone, where the minute the budget
    was back fell in quiet hours, and the push went out there at 01:10. The waiting push now moves
    with its user (``PushThrottle.rezone``): here dropped (``quiet_hours_action`` "drop"), where it
    would have gone out had the user stayed."""
    noon = 1_717_243_200.0  # 2024-06-01 12:00 UTC: day in UTC, 02:00 the next night in Kiritimati
    users = [u for u in (f"z{i}" for i in range(400)) if partition_for(u, PARTITIONS) == 0][:3]
    first, second, clock = users

    def run(zone: str | None) -> tuple[Engine, Outcome]:
        settings = make_settings(
            max_pushes_per_minute=4.0,
            quiet_hours_start="22:00",
            quiet_hours_end="08:00",
            quiet_hours_action="drop",
        )
        engine: Engine = make_engine(settings)  # one push a minute per partition
        store = DictState()
        out = engine.process(
            [
                ev("a1", first, "view", "i1", noon),
                ev("a2", first, "add_to_cart", "i1", noon + 1),
                ev("b1", second, "view", "i2", noon + 2),
                ev("b2", second, "add_to_cart", "i2", noon + 3),
            ],
            store,
        )
        assert [p.user_id for _, p in out.pushes] == [first]
        assert [p.user_id for p in engine.part(0).throttle.queue] == [second]
        extra: dict[str, Any] = {} if zone is None else {"context": {"time_zone": zone}}
        out.extend(engine.process([ev("b3", second, "search", None, noon + 10, query="q", **extra)], store))
        ticks = [ev(f"c{m}", clock, "search", None, noon + 60 * m, query="q") for m in (1, 2, 3)]
        out.extend(engine.process(ticks, store))
        return engine, out

    engine, stayed = run(None)
    assert [p.user_id for _, p in stayed.pushes] == [first, second]
    engine, moved = run("Pacific/Kiritimati")
    assert engine.part(0).throttle.queue == [] and [p.user_id for _, p in moved.pushes] == [first]
    assert moved.suppressions[("in_session", "quiet_hours")] == 1


def test_rezone_moves_only_that_users_waiting_pushes() -> None:
    t = PushThrottle(per_minute=1)
    assert t.admit(T0)
    t.enqueue(_push(1, T0), "Europe/Berlin")
    t.enqueue(_push(2, T0), "Asia/Tokyo")
    t.enqueue(_push(1, T0 + 1), None)
    t.drain()
    t.rezone("u1", "America/New_York")
    assert t.zones == ["America/New_York", "Asia/Tokyo", "America/New_York"]
    assert THROTTLE_ROW in t.drain()  # stored again
    t.rezone("u1", "America/New_York")
    t.rezone("u9", "Asia/Tokyo")
    assert t.drain() == {}  # nothing moved: nothing to store


def test_a_waiting_push_does_not_go_out_while_its_user_is_on_the_site() -> None:
    """Found by the hostile-stream fuzz (seed 279): a reminder's push over budget waited; its user came
    back to the site (opened another push), and the push went out 322 s later, inside the active
    window. It now waits on at the front (holding up no one) until the user has been away for the
    window, across a restart too, unless it would expire first."""
    t = PushThrottle(per_minute=1)
    assert t.admit(T0)
    t.enqueue(_push(1, T0, ttl=3 * 3600), None, T0 - 3600)  # away for an hour when decided
    t.enqueue(_push(2, T0, ttl=3 * 3600))
    t.touch("u1", T0 + 30)  # back on the site
    t.touch("u1", T0 + 20)  # a late event changes nothing
    t.touch("u3", T0 + 40)  # no push waiting: nothing kept
    assert t.last_seen == {"u1": T0 + 30}
    released = t.release(T0 + 120, 900, active_window=1800)
    assert [p.user_id for p in released.pushes] == ["u2"] and t.held == 1
    assert t.admit(T0 + 200)  # the waiting push holds up no one
    again = PushThrottle(per_minute=1)
    again.load(t.drain().items())  # type: ignore[arg-type]
    assert again.last_seen == {"u1": T0 + 30} and again.held == 1
    assert again.release(T0 + 1829, 900, active_window=1800).pushes == []
    released = again.release(T0 + 1830, 900, active_window=1800)
    assert [p.user_id for p in released.pushes] == ["u1"] and again.queue == [] and again.last_seen == {}


def test_a_push_released_just_before_a_crash_is_not_sent_again_and_its_record_moves() -> None:
    """A push released from the queue went out, then the worker died before the batch's changelog
    write: the recovered queue still holds it. Read back from the pushes topic at recovery, it is
    marked as out (else the redelivered batch released it a second time): the redelivered batch's
    release takes its budget and moves its user's record to when it went out, as in the run without
    the crash, and sends nothing."""
    noon = 1_717_243_200.0
    settings = make_settings(max_pushes_per_minute=4.0)  # one push a minute per partition
    first, second, clock = [u for u in (f"k{i}" for i in range(400)) if partition_for(u, PARTITIONS) == 0][:3]
    store = DictState()
    engine = make_engine(settings)
    decided = [
        ev("a1", first, "view", "i1", noon),
        ev("a2", first, "add_to_cart", "i1", noon + 1),
        ev("b1", second, "view", "i2", noon + 2),
        ev("b2", second, "add_to_cart", "i2", noon + 3),
    ]
    assert [p.user_id for _, p in engine.process(decided, store).pushes] == [first]
    before = dict(store.data)
    tick = [ev("c1", clock, "search", None, noon + 90, query="q")]
    released = [p for _, p in engine.process(tick, store).pushes]
    assert [p.user_id for p in released] == [second] and released[0].created_at == noon + 90
    assert store.user(second).policy.pushes[0].created_at == noon + 90  # sent then

    crashed = DictState()
    crashed.data = dict(before)  # the batch's writes never reached the store; its push the topic
    recovered = make_engine(settings)
    recovered.owned = set()
    for p in range(PARTITIONS):
        recovered.adopt(p, recovered.load_partition(p, PartitionView(crashed, p)))
    assert [p.user_id for p in recovered.part(0).throttle.queue] == [second]
    assert recovered.apply_recovered_pushes(0, released, crashed) == 1
    assert recovered.process(tick, crashed).pushes == []  # the redelivered batch: not sent again
    assert crashed.user(second).policy == store.user(second).policy
    # The release took its budget, as it did then (crash fuzz, session 50, seed 855: taken out of the
    # queue at recovery, it left the bucket a token fuller and its refill time older than without the
    # crash, and later pushes of the partition could go out sooner).
    assert recovered.part(0).throttle.queue == []
    assert crashed.data[(0, THROTTLE_ROW)] == store.data[(0, THROTTLE_ROW)]


def test_the_throttles_stored_row_fits_a_brokers_message_whatever_the_pushes() -> None:
    """Found by the hostile-stream fuzz (a 57 KB row in a short stream): the queue of pushes waiting
    for budget is stored, and sent to the changelog, as one row. Contract-valid catalog text (titles
    of 512 NULs, each escaped to six bytes) and 128-character ids make a push of about 4.6 KB; 260 of
    them over budget (the default bound is 1,000) make a row over Kafka's default message size, which
    the changelog producer refuses (MSG_SIZE_TOO_LARGE): the batch cannot be committed."""
    titles = {"title": "\x00" * 512, "category": "\x1b" * 128, "price": 1e9}
    engine = make_engine(make_settings(max_pushes_per_minute=4.0), items=())
    engine.apply_catalog(
        [catalog_record(catalog_entry(i).model_copy(update=titles)) for i in ("i1",)], DictState(), False
    )
    users = [u for u in (f"{k:0>128}" for k in range(2000)) if partition_for(u, PARTITIONS) == 0][:260]
    records = []
    for k, user in enumerate(users):  # one in-session push each, all within a minute
        records += [
            ev(f"a{k}", user, "view", "i1", T0 + k * 0.01),
            ev(f"b{k}", user, "add_to_cart", "i1", T0 + k * 0.01 + 0.001),
        ]
    store = DictState()
    out = engine.process(records, store)
    queued = len(engine.part(0).throttle.queue)
    assert 100 < queued < len(users) - 1  # the rest dropped, counted
    assert out.suppressions[("in_session", "throttle_full")] == len(users) - 1 - queued
    assert len(store.get(0, THROTTLE_ROW) or b"") < 600_000
    # The bound in bytes holds across a reload (the row read back) and a release.
    again = PushThrottle(per_minute=1.0)
    again.load([(THROTTLE_ROW, store.get(0, THROTTLE_ROW) or b"")])
    released, *_ = again.release(T0 + 120, min_lifetime=900)
    assert len(released) == 1 and again.enqueue(engine.part(0).throttle.queue[0])
    assert not again.enqueue(engine.part(0).throttle.queue[1])


def test_a_push_waiting_out_its_users_night_holds_up_no_one_and_goes_in_the_morning() -> None:
    """The push left for its user's quiet hours stays at the front of the queue (with its zone, also
    across a restart) while the other users' pushes are admitted as if nothing waited; it goes at the
    first release after the night, unless it would expire first; with ``quiet_hours_action`` "drop"
    it is dropped and counted."""
    cfg = config(quiet_hours_start="22:00", quiet_hours_end="08:00")

    def quiet(zone: str | None, at: float) -> bool:
        return quiet_hours_end(at, zone_named(zone, cfg), cfg) is not None

    tokyo = PushThrottle(per_minute=1)
    assert tokyo.admit(T0)  # 19:00 in Tokyo
    night_push = _push(1, T0, ttl=14 * 3600)
    assert tokyo.enqueue(night_push, "Asia/Tokyo")
    released = tokyo.release(T0 + 3 * 3600 + 60, 900, quiet)  # 22:01 in Tokyo
    assert released == ([], [], [], []) and tokyo.held == 1
    assert tokyo.admit(T0 + 3 * 3600 + 90)  # another user's push: budget, and no one waits to go first
    again = PushThrottle(per_minute=1)
    again.load(tokyo.drain().items())  # type: ignore[arg-type]
    assert again.zones == ["Asia/Tokyo"] and again.held == 1
    released = again.release(T0 + 13 * 3600 + 60, 900, quiet)  # 08:01 in Tokyo
    assert [p.user_id for p in released.pushes] == ["u1"] and again.queue == [] and again.held == 0
    dropping = PushThrottle(per_minute=1)
    assert dropping.admit(T0) and dropping.enqueue(night_push, "Asia/Tokyo")
    released = dropping.release(T0 + 3 * 3600 + 60, 900, quiet, drop_quiet=True)
    assert released.quiet == [night_push] and dropping.queue == []
    legacy = PushThrottle(per_minute=1)  # a row stored before zones were kept
    stored = b'{"t": 0.0, "at": %f, "q": [%s]}' % (T0, night_push.model_dump_json().encode())
    legacy.load([(THROTTLE_ROW, stored)])
    assert legacy.zones == [None] and legacy.held == 0

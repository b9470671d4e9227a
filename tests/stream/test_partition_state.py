"""Decisions depend only on each partition's own input: not on restarts, assignment, or batching.

The engine keeps its clock, candidate indexes and timers per partition and persists them with the
partition's user records; these tests replay the same stream through engines that are restarted,
that own different partitions, or that cut the stream differently, and compare every stored byte
and every push.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from stream.catalog_view import CatalogView
from stream.contract import to_json_bytes
from stream.encoding import compact_json
from stream.engine import Engine, Inbound, Outcome
from stream.engine.users import SWEEP_SLACK_SECONDS, forgotten
from stream.partition_rows import (
    ARRIVALS_PREFIX,
    COVISIT_PREFIX,
    INTEREST_PREFIX,
    ITEM_PREFIX,
    LEGACY_COVISIT_PREFIX,
    META_ROW,
    TRENDING_PREFIX,
    decode_item_row,
    encode_item_row,
)
from stream.partition_state import PartitionState
from stream.partitioning import partition_for
from stream.policy_state import UNMET_RECOVERED_SECONDS
from stream.record_rows import PushRecord
from stream.state import UserState
from stream.state_load import UnreadablePartitionRow
from tests.stream.fakes import (
    ITEMS,
    PARTITIONS,
    T0,
    DictState,
    PartitionView,
    catalog_entry,
    catalog_record,
    consent,
    ev,
    make_engine,
    make_settings,
    record,
)

USERS = [f"user{i}" for i in range(24)]


def busy_stream(n: int, seed: int) -> list[Inbound]:
    """Many users over every partition: views, carts (abandonment timers), purchases, searches."""
    rng = random.Random(seed)
    kinds = ["view"] * 8 + ["add_to_cart"] * 3 + ["remove_from_cart", "purchase", "search"]
    records: list[Inbound] = []
    ts = T0
    for i in range(n):
        ts += rng.choice([3.0, 20.0, 60.0, 400.0, 1900.0])
        user = rng.choice(USERS)
        kind = rng.choice(kinds)
        item = None if kind == "search" else rng.choice(ITEMS)
        records.append(
            ev(f"b{i}", user, kind, item, ts, session_id=None, query="q" if item is None else None)
        )
    records.insert(50, records[40])  # a redelivery
    return records


def settings():  # type: ignore[no-untyped-def]
    # Low thresholds so that in-session, cart-abandonment, session-end and held pushes all happen.
    return make_settings(
        threshold=0.5,
        trigger_thresholds={"cart_abandonment": 0.3, "browse_abandonment": 0.3},
        min_gap_seconds=600,
        session_end_seconds=900,
        returning_visit_seconds=0.0,  # the shoppers here come back within minutes
    )


def run(engine: Engine, records: list[Inbound], store: DictState, batch: int) -> Outcome:
    out = Outcome()
    for start in range(0, len(records), batch):
        out.extend(engine.process(records[start : start + batch], store))
    return out


def restarted(engine: Engine, store: DictState, partitions: set[int]) -> Engine:
    """A new engine that recovers ``partitions`` from the store, as a worker does after a restart."""
    fresh = make_engine(engine.settings)
    fresh.owned = set()
    for p in sorted(partitions):
        fresh.adopt(p, fresh.load_partition(p, PartitionView(store, p)))
    return fresh


def push_ids(out: Outcome) -> list[str]:
    return [p.push_id for _, p in out.pushes]


def test_a_restart_changes_nothing() -> None:
    records = busy_stream(400, seed=5)
    store_a = DictState()
    uninterrupted = run(make_engine(settings()), records, store_a, 32)
    assert {p.trigger for _, p in uninterrupted.pushes} >= {"in_session", "cart_abandonment"}

    store_b = DictState()
    engine = make_engine(settings())
    out = Outcome()
    start = 0
    for cut in (90, 211, 330, len(records)):
        out.extend(run(engine, records[start:cut], store_b, 32))
        engine = restarted(engine, store_b, set(range(PARTITIONS)))
        start = cut
    assert store_b.data == store_a.data  # every user record and every index row, byte for byte
    assert push_ids(out) == push_ids(uninterrupted)


def test_partitions_owned_by_different_engines_decide_the_same() -> None:
    records = busy_stream(400, seed=6)
    store_a = DictState()
    alone = run(make_engine(settings()), records, store_a, 50)

    store_b = DictState()
    left, right = make_engine(settings()), make_engine(settings())
    left.owned, right.owned = {0, 1}, {2, 3}
    pushes: list[str] = []
    for start in range(0, len(records), 50):
        chunk = records[start : start + 50]
        for engine in (left, right):
            mine = [r for r in chunk if r.partition in engine.owned]
            pushes += push_ids(engine.process(mine, store_b))
    assert store_b.data == store_a.data
    assert sorted(pushes) == sorted(push_ids(alone))


def test_redelivery_after_a_crash_emits_nothing_twice() -> None:
    records = busy_stream(300, seed=7)
    store = DictState()
    engine = make_engine(settings())
    first = run(engine, records[:200], store, 40)
    # A crash after the state was written but before the input offsets were committed: the last
    # 60 records come again to a recovered engine.
    engine = restarted(engine, store, set(range(PARTITIONS)))
    again = run(engine, records[140:], store, 40)
    reference = run(make_engine(settings()), records, DictState(), 40)
    assert sorted(push_ids(first) + push_ids(again)) == sorted(push_ids(reference))


def test_one_partitions_clock_does_not_fire_anothers_timers() -> None:
    engine = make_engine(settings())
    store = DictState()
    engine.process([ev("c1", "user1", "add_to_cart", "i1", T0)], store)
    mine = partition_for("user1", PARTITIONS)
    stranger = next(u for u in USERS if partition_for(u, PARTITIONS) != mine)
    out = engine.process([ev("far", stranger, "view", "i2", T0 + 86_400)], store)
    assert all(p.user_id != "user1" for _, p in out.pushes)
    assert engine.part(mine).timers.get("user1", "cart_abandonment", "i1") is not None
    assert engine.part(mine).watermark == T0


def test_timers_fire_once_the_partitions_clock_passes_them_and_are_decided_then() -> None:
    # In-session pushes out of reach, so the cart itself sends nothing and the reminder is not a repeat.
    engine = make_engine(make_settings(threshold=0.9, trigger_thresholds={"cart_abandonment": 0.3}))
    store = DictState()
    engine.process([ev("c1", "user1", "add_to_cart", "i1", T0)], store)
    neighbour = next(
        u
        for u in USERS
        if u != "user1" and partition_for(u, PARTITIONS) == partition_for("user1", PARTITIONS)
    )
    delay = engine.cfg.cart_abandonment_delay_seconds
    out = engine.process([ev("n1", neighbour, "search", None, T0 + delay - 1, query="q")], store)
    assert [p.trigger for _, p in out.pushes] == []
    out = engine.process([ev("n2", neighbour, "search", None, T0 + 10 * delay, query="q")], store)
    carts = [p for _, p in out.pushes if p.trigger == "cart_abandonment"]
    # Decided when the clock passed the due time: that is when the push can go out (quiet hours,
    # expiry and activity are judged then); its cause is still the add_to_cart.
    assert len(carts) == 1 and carts[0].created_at == T0 + 10 * delay and carts[0].event_ts == T0


def normalised(snapshot: dict) -> dict:  # type: ignore[type-arg]
    """A snapshot with each bucket's entries sorted (their order is not state)."""
    out = dict(snapshot)
    for key in ("items", "counts"):
        if key in out and key == "items":
            out[key] = [[item, sorted(map(tuple, rows))] for item, rows in out[key]]
        elif key in out:
            out[key] = sorted(map(tuple, out[key]))
    return out


def test_partition_state_round_trips_through_its_rows() -> None:
    records = busy_stream(200, seed=8)
    store = DictState()
    engine = make_engine(settings())
    run(engine, records, store, 25)
    for p in range(PARTITIONS):
        loaded = PartitionState.load(
            p, engine.cfg, PartitionView(store, p).partition_rows(), PartitionView(store, p).items()
        )[0]
        original = engine.part(p)
        assert loaded.watermark == original.watermark
        # Entry order inside an item's bucket is not kept (nothing depends on it); item order is.
        for index in ("covisitation", "trending", "interest"):
            assert normalised(getattr(loaded, index).to_dict()) == normalised(
                getattr(original, index).to_dict()
            )
        assert loaded.timers.to_dict() == original.timers.to_dict()


def test_a_batch_writes_one_row_per_item_it_touched_for_both_item_indexes() -> None:
    """Co-visitation and trending share an item's row (stream.partition_rows): one changelog record
    per item touched, not one per index."""
    engine = make_engine(settings())
    store = DictState()
    engine.process([ev("a", "user1", "view", "i1", T0), ev("b", "user1", "view", "i2", T0 + 5)], store)
    part = partition_for("user1", PARTITIONS)
    item_rows = (ITEM_PREFIX, COVISIT_PREFIX, TRENDING_PREFIX)
    keys = sorted(k for (p, k) in store.data if p == part and k[:2] in item_rows)
    assert keys == [ITEM_PREFIX + b"i1", ITEM_PREFIX + b"i2"]
    for key in keys:
        item, covisit, count = decode_item_row(key, store.data[(part, key)])
        index = engine.part(part)
        assert covisit is not None and covisit[1:] == index.covisitation.row(item)
        assert count == index.trending.count(item) and count is not None


def test_an_item_row_holds_the_other_index_when_one_changes() -> None:
    """A purchase counts in trending only: the item's row is written again with its co-visitation part
    as it stands, and an item evicted from one index keeps its row for the other."""
    engine = make_engine(settings())
    store = DictState()
    engine.process([ev("a", "user1", "view", "i1", T0), ev("b", "user1", "view", "i2", T0 + 5)], store)
    part = partition_for("user1", PARTITIONS)
    before = decode_item_row(ITEM_PREFIX + b"i1", store.data[(part, ITEM_PREFIX + b"i1")])
    engine.process([ev("c", "user1", "purchase", "i1", T0 + 10)], store)
    after = decode_item_row(ITEM_PREFIX + b"i1", store.data[(part, ITEM_PREFIX + b"i1")])
    assert after[1] == before[1] and after[2] is not None and before[2] is not None and after[2] > before[2]
    assert encode_item_row(None, 2.5) is not None and encode_item_row(None, None) is None
    item, covisit, count = decode_item_row(ITEM_PREFIX + b"x", encode_item_row(None, 2.5) or b"")
    assert (item, covisit, count) == ("x", None, 2.5)


def _covisit_rows(store: DictState, p: int) -> dict[str, tuple[int, list[tuple[str, float]]]]:
    """The co-visitation rows of partition ``p`` by item, decoded (entries sorted: not state)."""
    out = {}
    for (q, key), value in store.data.items():
        if q == p and value is not None and key.startswith(ITEM_PREFIX):
            item, covisit, _ = decode_item_row(key, value)
            if covisit is not None:
                out[item] = (covisit[1], sorted(covisit[2].items()))
    return out


def _item_rows(store: DictState, p: int) -> dict[bytes, bytes | None]:
    return {k: v for (q, k), v in store.data.items() if q == p and k.startswith(ITEM_PREFIX)}


def _older_layout(store: DictState, p: int, per_pair: bool) -> DictState:
    """Partition ``p`` of ``store`` as an older worker stored it: a trending row per item, and a
    co-visitation row per item (``per_pair`` False) or, older, per (item, neighbour) and per item's
    touch order."""
    older = DictState()
    for (q, key), value in store.data.items():
        if q != p or value is None:
            continue
        if not key.startswith(ITEM_PREFIX):
            older.data[(q, key)] = value
            continue
        item, covisit, count = decode_item_row(key, value)
        name = item.encode()
        if count is not None:
            older.data[(q, TRENDING_PREFIX + name)] = compact_json(count)
        if covisit is None:
            continue
        _, seq, bucket = covisit
        if not per_pair:
            older.data[(q, COVISIT_PREFIX + name)] = msgspec.msgpack.encode([seq, bucket])
            continue
        older.data[(q, LEGACY_COVISIT_PREFIX + name + b"\x1f")] = compact_json(seq)
        for other, value_ in bucket.items():
            older.data[(q, LEGACY_COVISIT_PREFIX + name + b"\x1f" + other.encode())] = compact_json(value_)
    return older


@pytest.mark.parametrize("per_pair", [False, True], ids=["per-index rows", "per-pair rows"])
def test_rows_of_the_older_layouts_are_read_and_replaced(per_pair: bool) -> None:
    records = busy_stream(200, seed=9)
    store = DictState()
    engine = make_engine(settings())
    run(engine, records, store, 25)
    for p in range(PARTITIONS):
        older = _older_layout(store, p, per_pair)
        view = PartitionView(older, p)
        loaded = PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())[0]
        original = engine.part(p)
        # Entry order inside an item's bucket was never kept by the per-pair layout (nothing depends on it).
        assert normalised(loaded.covisitation.to_dict()) == normalised(original.covisitation.to_dict())
        assert dict(loaded.trending.to_dict()["counts"]) == dict(original.trending.to_dict()["counts"])
        writes = loaded.drain()  # the older rows deleted, every item written in the current layout
        old_keys = {
            k for (q, k) in older.data if k[:2] in (COVISIT_PREFIX, LEGACY_COVISIT_PREFIX, TRENDING_PREFIX)
        }
        assert old_keys and {k for k, v in writes.items() if v is None} == old_keys
        for key, written in writes.items():
            if written is None:
                del older.data[(p, key)]
            else:
                older.data[(p, key)] = written
        assert _covisit_rows(older, p) == _covisit_rows(store, p)
        if not per_pair:  # bucket order kept: the rows are the ones the current layout wrote
            assert _item_rows(older, p) == _item_rows(store, p)
        view = PartitionView(older, p)
        again = PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())[0]
        assert again.covisitation.to_dict() == loaded.covisitation.to_dict() and not again.drain()


def test_an_item_in_both_layouts_keeps_its_more_recent_row_and_the_cap_holds() -> None:
    """Rows of both layouts (a worker of each version wrote the partition): per item the more
    recently touched wins, and a restore beyond ``covisit_max_items`` evicts the least recent."""
    cfg = make_settings(covisit_max_items=3).policy
    rows = [
        (META_ROW, compact_json({"w": 0.0, "c": {"landmark": T0, "seq": 9}, "t": {}, "n": {}, "o": {}})),
        # The newer worker wrote a and b (touched 1 and 2) ...
        (COVISIT_PREFIX + b"a", msgspec.msgpack.encode([1, {"b": 1.0}])),
        (COVISIT_PREFIX + b"b", msgspec.msgpack.encode([2, {"a": 1.0}])),
        # ... then an older one took over, ignored them and wrote a, x and y again (touched 7 to 9).
        (LEGACY_COVISIT_PREFIX + b"a\x1f", b"7"),
        (LEGACY_COVISIT_PREFIX + b"a\x1fx", b"2.0"),
        (LEGACY_COVISIT_PREFIX + b"x\x1f", b"8"),
        (LEGACY_COVISIT_PREFIX + b"x\x1fa", b"2.0"),
        (LEGACY_COVISIT_PREFIX + b"y\x1f", b"9"),
        (LEGACY_COVISIT_PREFIX + b"y\x1fa", b"1.0"),
    ]
    state = PartitionState.load(0, cfg, sorted(rows), [])[0]
    index = state.covisitation.to_dict()
    assert [item for item, _ in index["items"]] == ["a", "x", "y"]  # b, the least recent, evicted
    assert dict(index["items"])["a"] == [("x", 2.0)]  # the older worker's later row, not the stale one
    writes = state.drain()
    assert writes[COVISIT_PREFIX + b"b"] is None  # the evicted item's row goes
    assert all(writes[key] is None for key, _ in rows if key[:2] != META_ROW)  # older layouts: deleted
    assert {k for k, v in writes.items() if v is not None and k.startswith(ITEM_PREFIX)} == {
        ITEM_PREFIX + b"a",
        ITEM_PREFIX + b"x",
        ITEM_PREFIX + b"y",
    }


def test_an_older_workers_rows_win_over_the_current_layouts_where_newer() -> None:
    """A rollback: the older worker wrote per-index rows after a newer one wrote item rows. Its
    co-visitation row wins where more recently touched, and its trending count wherever it wrote one
    (only an older worker running after a newer one writes both)."""
    cfg = make_settings().policy
    meta = {"w": 0.0, "c": {"landmark": T0, "seq": 9}, "t": {"landmark": T0}, "n": {}, "o": {}}
    rows = [
        (META_ROW, compact_json(meta)),
        (ITEM_PREFIX + b"a", encode_item_row((1, {"b": 1.0}), 1.0) or b""),
        (ITEM_PREFIX + b"b", encode_item_row((5, {"a": 1.0}), 3.0) or b""),
        (COVISIT_PREFIX + b"a", msgspec.msgpack.encode([7, {"x": 2.0}])),
        (COVISIT_PREFIX + b"b", msgspec.msgpack.encode([2, {"z": 9.0}])),  # older than the item row
        (TRENDING_PREFIX + b"a", b"4.5"),
    ]
    state = PartitionState.load(0, cfg, sorted(rows), [])[0]
    assert state.covisitation.row("a") == (7, {"x": 2.0}) and state.covisitation.row("b") == (5, {"a": 1.0})
    assert state.trending.count("a") == 4.5 and state.trending.count("b") == 3.0
    writes = state.drain()
    assert writes[COVISIT_PREFIX + b"a"] is None and writes[TRENDING_PREFIX + b"a"] is None
    assert decode_item_row(ITEM_PREFIX + b"a", writes[ITEM_PREFIX + b"a"] or b"") == (
        "a",
        ("a", 7, {"x": 2.0}),
        4.5,
    )


def test_the_hours_count_of_new_items_asked_about_is_stored_row_by_row() -> None:
    """new_arrival_asks_per_user_hour's count goes with the partition (stream.engine.catalog_asks): one
    row per user, the rows of an hour gone once the clock is in the next, a user's row gone with them."""
    cfg = make_settings().policy
    meta = (META_ROW, compact_json({"w": 0.0, "c": {}, "t": {}, "n": {}, "o": {}}))
    state = PartitionState.empty(0, cfg)
    assert state.arrivals_in(7) == {}
    for user in ("a", "b", "a"):
        state.ask_arrival(user)
    writes = state.drain()
    assert {k: v for k, v in writes.items() if k.startswith(ARRIVALS_PREFIX)} == {
        ARRIVALS_PREFIX + b"a": compact_json([7, 2]),
        ARRIVALS_PREFIX + b"b": compact_json([7, 1]),
    }
    assert not state.drain()  # nothing changed since
    rows = [meta, *((k, v) for k, v in writes.items() if k.startswith(ARRIVALS_PREFIX) and v is not None)]
    loaded = PartitionState.load(0, cfg, sorted(rows), [])[0]
    # An earlier hour counts in the current one (the clock only moves forward).
    assert loaded.arrivals_in(6) == {"a": 2, "b": 1} and loaded.arrival_hour == 7
    loaded.forget_arrivals("b")  # erased
    assert loaded.drain() == {ARRIVALS_PREFIX + b"b": None}
    assert loaded.arrivals_in(8) == {}
    loaded.ask_arrival("c")
    assert loaded.drain() == {ARRIVALS_PREFIX + b"a": None, ARRIVALS_PREFIX + b"c": compact_json([8, 1])}
    # A row of an earlier hour still stored (as if its delete were lost) counts for nothing, and goes.
    stale = [
        meta,
        (ARRIVALS_PREFIX + b"a", compact_json([7, 9])),
        (ARRIVALS_PREFIX + b"c", compact_json([8, 1])),
    ]
    again = PartitionState.load(0, cfg, sorted(stale), [])[0]
    assert again.arrivals_in(8) == {"c": 1} and again.drain() == {ARRIVALS_PREFIX + b"a": None}


# -- erasure, expiry, removed items ---------------------------------------------------------------


def test_a_consent_tombstone_erases_the_user_everywhere() -> None:
    engine = make_engine(settings())
    store = DictState()
    user = "user3"
    p = partition_for(user, PARTITIONS)
    engine.part(p).arrivals_in(int(T0 // 3600))
    engine.part(p).ask_arrival(user)  # asked about a new item this hour (a row with the user's id)
    engine.process([ev("v1", user, "view", "i1", T0), ev("c1", user, "add_to_cart", "i2", T0 + 5)], store)
    assert engine.part(p).interest.purge_users(set()) == 0
    assert store.get(p, ARRIVALS_PREFIX + user.encode()) is not None
    assert store.get(p, user.encode()) is not None and engine.part(p).timers.timers_for(user)
    tombstone = Inbound("consent", p, 99, user.encode(), None)
    # Events before the tombstone in the same batch are decided first; nothing of the user survives it.
    out = engine.process([ev("v2", user, "view", "i3", T0 + 9), tombstone], store)
    assert out.erasures == 1
    assert store.get(p, user.encode()) is None
    assert engine.part(p).timers.timers_for(user) == []
    assert all(
        user not in row
        for _, row in engine.part(p).interest.to_dict()["items"]
        for row in [[r[0] for r in row]]
    )
    assert not any(k.endswith(b"\x1f" + user.encode()) for (q, k) in store.data if q == p)
    assert store.get(p, ARRIVALS_PREFIX + user.encode()) is None
    assert user not in engine.part(p).last_seen


def test_a_catalog_tombstone_removes_the_item_for_good() -> None:
    engine = make_engine(settings())
    store = DictState()
    out = engine.apply_catalog([Inbound("catalog", 0, 9, b"i1", None)], store)
    assert out.catalog_removals == 1 and "i1" not in engine.catalog and out.dead_letters == []
    out = engine.process(
        [
            ev("v1", "user1", "view", "i1", T0),
            ev("v2", "user1", "view", "i1", T0 + 70),
            ev("v3", "user1", "add_to_cart", "i1", T0 + 80),
        ],
        store,
    )
    assert all(p.item_id != "i1" for _, p in out.pushes)
    assert out.suppressions[("in_session", "not_in_catalog")] >= 1


def test_inactive_users_expire_but_an_opt_out_is_kept() -> None:
    ttl = 3600.0
    engine = make_engine(make_settings(worker={"user_ttl_seconds": ttl}, threshold=0.5))
    store = DictState()
    quiet, opted_out, active = _three_on(0)
    engine.process(
        [
            record(b'{"user_id": "%s", "opted_in": true, "ts": %f}' % (quiet.encode(), T0), quiet, "consent"),
            ev("q1", quiet, "add_to_cart", "i1", T0),
            record(
                b'{"user_id": "%s", "opted_in": false, "ts": %f}' % (opted_out.encode(), T0),
                opted_out,
                "consent",
            ),
            ev("o1", opted_out, "view", "i2", T0),
        ],
        store,
    )
    engine.process([ev("a1", active, "view", "i3", T0 + ttl + SWEEP_SLACK_SECONDS + 10)], store)
    assert engine.sweep_expired(store) == 2
    assert store.get(0, quiet.encode()) is None  # an opt-in is forgotten with the rest
    kept = store.get(0, opted_out.encode())
    assert kept is not None
    from stream.state import UserState

    state = UserState.from_bytes(kept)
    assert state.policy.opted_in is False and state.n_events == 0 and state.recent == []
    assert store.get(0, active.encode()) is not None
    assert engine.part(0).timers.timers_for(quiet) == []
    assert engine.sweep_expired(store) == 0  # an opt-out record is not swept again


def test_a_consent_only_opt_in_expires_too_even_after_a_restart() -> None:
    """The 30-minute soak found state growing with every user who only ever sent an opt-in."""
    ttl = 3600.0
    settings = make_settings(worker={"user_ttl_seconds": ttl})
    engine = make_engine(settings)
    store = DictState()
    joined, opted_out, active = _three_on(0)
    engine.process(
        [
            record(
                b'{"user_id": "%s", "opted_in": true, "ts": %f}' % (joined.encode(), T0), joined, "consent"
            ),
            record(
                b'{"user_id": "%s", "opted_in": false, "ts": %f}' % (opted_out.encode(), T0),
                opted_out,
                "consent",
            ),
        ],
        store,
    )
    engine.process([ev("a1", active, "view", "i3", T0 + ttl + SWEEP_SLACK_SECONDS + 10)], store)
    recovered = restarted(engine, store, {0})  # the expiry clock is rebuilt from the stored records
    assert recovered.sweep_expired(store) == 1
    assert store.get(0, joined.encode()) is None
    assert store.get(0, opted_out.encode()) is not None  # an opt-out is never forgotten


def test_an_opt_in_then_an_opt_out_expires_like_after_a_restart() -> None:
    """A consent-only user who opted in and then out is kept for good: the live expiry clock forgets
    them, as a restart (which rebuilds it from the stored records) would; whether the two records came
    in one batch or two changes nothing."""
    ttl = 3600.0

    stores = []
    for batches in ((0, 2), (0, 1, 2)):
        engine = make_engine(make_settings(worker={"user_ttl_seconds": ttl}))
        store = DictState()
        quitter, active, _ = _three_on(0)
        records = [consent(quitter, True, T0), consent(quitter, False, T0 + 10)]
        for start, end in zip(batches, batches[1:], strict=False):
            engine.process(records[start:end], store)
        assert quitter not in engine.part(0).last_seen
        engine.process([ev("a1", active, "view", "i3", T0 + ttl + SWEEP_SLACK_SECONDS + 10)], store)
        assert engine.sweep_expired(store) == 0
        assert restarted(engine, store, {0}).sweep_expired(store) == 0
        stores.append({key: value for key, value in store.data.items() if not key[1].startswith(b"\x00")})
    assert stores[0] == stores[1]  # the user records (the partition rows hold each run's offsets)


def test_the_sweep_scans_a_partition_only_once_its_oldest_user_is_past_the_ttl_and_the_slack() -> None:
    """Each scan of last_seen costs ~20 ms per 250,000 users: not at every tick, but once the oldest
    user has been expired for SWEEP_SLACK_SECONDS (reclaiming storage only; expiry is decided on read)."""
    ttl = 3600.0
    engine = make_engine(make_settings(worker={"user_ttl_seconds": ttl}))
    store = DictState()
    old, young, clock = _three_on(0)
    engine.process([ev("o1", old, "view", "i1", T0), ev("y1", young, "view", "i2", T0 + 100)], store)
    part = engine.part(0)
    assert part.oldest_seen == T0
    scans = 0

    class Counted(dict[str, float]):
        def items(self):  # type: ignore[override]
            nonlocal scans
            scans += 1
            return super().items()

    part.last_seen = Counted(part.last_seen)
    engine.process([ev("c1", clock, "search", None, T0 + ttl + 30, query="q")], store)
    assert engine.sweep_expired(store) == 0 and scans == 0  # expired 30 s ago: within the slack
    engine.process([ev("c2", clock, "search", None, T0 + ttl + SWEEP_SLACK_SECONDS + 1, query="q")], store)
    assert engine.sweep_expired(store) == 1 and scans == 1
    assert old not in part.last_seen and part.oldest_seen == T0 + 100  # the oldest left, from the scan
    assert engine.sweep_expired(store) == 0 and scans == 1


def test_a_scan_removes_only_users_past_the_ttl_and_the_slack_whatever_started_it() -> None:
    """The scan's bound is the lowest expiry clock set since the last scan: a user saved at two times
    leaves the earlier one, so a scan starts that the final clocks would not start. It must remove no
    one that a run without it keeps (found by the hostile-stream fuzz, seed 12351)."""
    ttl = 3600.0
    engine = make_engine(make_settings(worker={"user_ttl_seconds": ttl}))
    store = DictState()
    early, late, clock = _three_on(0)
    engine.process([ev("e1", early, "view", "i1", T0)], store)
    engine.process([ev("e2", early, "view", "i1", T0 + 100), ev("l1", late, "view", "i2", T0 + 100)], store)
    assert engine.part(0).oldest_seen == T0  # the first clock, since raised
    engine.process([ev("c1", clock, "search", None, T0 + 100 + ttl + 30, query="q")], store)
    # Both expired 30 s ago: within the slack, so neither is removed, though the bound starts a scan.
    assert engine.sweep_expired(store) == 0 and store.get(0, early.encode()) is not None
    assert engine.part(0).oldest_seen == T0 + 100
    later = T0 + 100 + ttl + SWEEP_SLACK_SECONDS + 1
    engine.process([ev("c2", clock, "search", None, later, query="q")], store)
    assert engine.sweep_expired(store) == 2


def test_an_expired_user_keeps_a_push_read_back_at_recovery() -> None:
    """Found by a crash fuzz (scratch, session 49): a batch that expired a returning user pushed, the
    worker died before its changelog write, recovery read the push back, and the redelivered batch
    expired the user again, forgetting the read-back push, and pushed it a second time."""
    state = UserState()
    state.policy.opted_in = True
    old = PushRecord("p-old", "i1", None, "in_session", T0, T0 + 3600)
    back = PushRecord("p-back", "i2", None, "in_session", T0 + 9e6, T0 + 9e6 + 3600, recovered=True)
    state.policy.pushes = [old, back]
    kept = forgotten(state, T0 + 9e6 - 60)  # the redelivered batch expires the user before the push
    assert kept.policy.pushes == [back] and kept.policy.opted_in is None
    # One its decision never met (a model changed across the restart) goes with the rest once it
    # has been out for UNMET_RECOVERED_SECONDS.
    assert forgotten(state, T0 + 9e6 + UNMET_RECOVERED_SECONDS).policy.pushes == []


def _three_on(partition: int) -> tuple[str, str, str]:
    found = [u for u in (f"x{i}" for i in range(500)) if partition_for(u, PARTITIONS) == partition][:3]
    return found[0], found[1], found[2]


def test_a_returning_user_after_the_ttl_starts_over_as_if_swept() -> None:
    ttl = 3600.0
    back = T0 + ttl + SWEEP_SLACK_SECONDS + 1
    records = [ev("r1", "user1", "view", "i1", T0), ev("r2", "user1", "view", "i2", back)]
    swept_store, lazy_store = DictState(), DictState()
    swept = make_engine(make_settings(worker={"user_ttl_seconds": ttl}))
    swept.process(records[:1], swept_store)
    swept.process(
        [ev("n1", _three_on(partition_for("user1", PARTITIONS))[0], "search", None, back, query="q")],
        swept_store,
    )
    assert swept.sweep_expired(swept_store) == 1
    swept.process(records[1:], swept_store)
    lazy = make_engine(make_settings(worker={"user_ttl_seconds": ttl}))
    lazy.process(records[:1], lazy_store)
    lazy.process(records[1:], lazy_store)
    p = partition_for("user1", PARTITIONS)
    assert swept_store.get(p, b"user1") == lazy_store.get(p, b"user1")


def test_a_late_event_finds_its_user_as_if_swept_whether_or_not_the_sweep_ran() -> None:
    """Found by the hostile-stream fuzz (a tick after each batch changed the pushes): the user's event
    comes late, within the TTL of their last event but behind a partition clock past it. The sweep
    had removed the record; without the sweep the event continued the old one."""
    ttl = 3600.0
    p = partition_for("user1", PARTITIONS)
    later = T0 + ttl + SWEEP_SLACK_SECONDS + 1
    records = []
    for sweep in (True, False):
        engine, store = make_engine(make_settings(worker={"user_ttl_seconds": ttl})), DictState()
        clock = ev(f"n{sweep}", _three_on(p)[0], "search", None, later, query="q")
        engine.process([ev("r1", "user1", "view", "i1", T0), clock], store)
        if sweep:
            assert engine.sweep_expired(store) == 1
        engine.process([ev("r2", "user1", "view", "i1", T0 + ttl - 100)], store)
        records.append(store.get(p, b"user1"))
    assert records[0] == records[1]


def test_a_consent_only_opt_in_is_forgotten_whether_or_not_the_sweep_ran() -> None:
    """Found with the test above: the sweep forgets an opt-in with no events after the TTL (consent
    falls back to consent_default); without the sweep, the user's first event kept the opt-in."""
    ttl = 3600.0
    p = partition_for("user1", PARTITIONS)
    later = T0 + ttl + SWEEP_SLACK_SECONDS + 1
    records = []
    for sweep in (True, False):
        settings = make_settings(worker={"user_ttl_seconds": ttl}, consent_default=False)
        engine, store = make_engine(settings), DictState()
        clock = ev(f"n{sweep}", _three_on(p)[0], "search", None, later, query="q")
        engine.process([consent("user1", True, T0), clock], store)
        if sweep:
            assert engine.sweep_expired(store) == 1
        engine.process([ev("r1", "user1", "view", "i1", later + 1)], store)
        records.append(store.get(p, b"user1"))
    assert records[0] == records[1]


def test_catalog_asks_use_each_partitions_own_interest() -> None:
    engine = make_engine(make_settings(trigger_thresholds={"price_drop": 0.3}))
    store = DictState()
    engine.process([ev("e1", "user1", "view", "i1", T0)], store)
    # Announced late (the partition's clock is already past the change): at once, at that clock.
    engine.process([ev("e2", "user1", "view", "i2", T0 + 120)], store)
    out = engine.apply_catalog([catalog_record(catalog_entry("i1", price=50.0, updated_at=T0 + 60))], store)
    assert out.catalog_late == 1
    assert [(p.user_id, p.trigger) for _, p in out.pushes] == [("user1", "price_drop")]
    assert to_json_bytes(out.pushes[0][1])


def test_reconciling_recovered_pushes_keeps_the_users_timers() -> None:
    engine = make_engine(make_settings(threshold=0.5, trigger_thresholds={"cart_abandonment": 0.3}))
    store = DictState()
    out = engine.process(
        [ev("v1", "user1", "view", "i1", T0), ev("c1", "user1", "add_to_cart", "i2", T0 + 70)], store
    )
    p = partition_for("user1", PARTITIONS)
    assert out.pushes and store.user("user1").timers
    # A crash after the push was produced, before the state that records it reached the changelog:
    # the recovered engine finds the push on the pushes topic and records it.
    before = store.user("user1")
    before.policy.pushes.clear()
    store.put(p, b"user1", before.to_bytes())
    recovered = restarted(engine, store, {p})
    assert recovered.apply_recovered_pushes(p, [out.pushes[0][1]], store) == 1
    after = store.user("user1")
    assert [r.push_id for r in after.policy.pushes] == [out.pushes[0][1].push_id]
    assert after.timers == before.timers != []


def test_the_catalog_bootstrap_announces_nothing() -> None:
    # A restarted worker reads the whole catalog again: items on promotion are not new promotions.
    from stream.contract import CatalogUpdate, Promotion

    engine = make_engine(make_settings(trigger_thresholds={"promotion_start": 0.0}, min_threshold=0.0))
    store = DictState()
    engine.process([ev("v1", "user1", "view", "i1", T0)], store)
    promo = Promotion(promotion_id="p1", discount=0.2, starts_at=T0 - 60, ends_at=T0 + 86_400)
    entry = CatalogUpdate(
        item_id="i1",
        title="Item i1",
        category="cat-i1",
        price=100.0,
        stock=5,
        promotion=promo,
        updated_at=T0 + 5,
    )
    fresh = restarted(engine, store, set(range(PARTITIONS)))
    fresh.catalog = CatalogView()
    quiet = fresh.apply_catalog([catalog_record(entry)], store, announce=False)
    p = partition_for("user1", PARTITIONS)
    assert quiet.pushes == [] and quiet.catalog_updates == 1 and fresh.catalog.latest("i1") == entry
    assert fresh.part(p).timers.timers_for("user1") == []
    # The same change, announced (a live catalog update), reaches the interested user.
    live = restarted(engine, store, set(range(PARTITIONS)))
    assert live.apply_catalog([catalog_record(entry)], store).pushes == []  # due at T0 + 5
    out = live.process([ev("v2", "user1", "view", "i2", T0 + 10)], store)
    assert [(pp.user_id, pp.trigger) for _, pp in out.pushes][:1] == [("user1", "promotion_start")]


def test_a_stored_row_that_no_longer_decodes_is_skipped_not_fatal() -> None:
    """A damaged changelog or disk can hold a user record or an index row that does not decode. It is
    skipped (logged, counted) and the partition loads: recovery retried it forever before, so none of
    the partition's users were served again."""
    store = DictState()
    engine = make_engine(settings())
    run(engine, busy_stream(200, seed=8), store, 25)
    p = partition_for(USERS[0], PARTITIONS)
    view = PartitionView(store, p)
    intact, n_users = PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())
    victim = view.items()[0][0]
    damaged = [victim]
    damaged += [
        next(k for k, _ in view.partition_rows() if k.startswith(pre))
        for pre in (ITEM_PREFIX, INTEREST_PREFIX)
    ]
    for key in damaged:
        store.put(p, key, b"\x00garbage")
    view = PartitionView(store, p)
    loaded, users = PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())
    assert users == n_users - 1 and loaded.unreadable_rows == len(damaged)
    for key, _ in view.items():
        user = key.decode()
        expected = [] if key == victim else intact.timers.timers_for(user)
        assert loaded.timers.timers_for(user) == expected
    assert loaded.last_seen == {u: ts for u, ts in intact.last_seen.items() if u != victim.decode()}
    assert loaded.watermark == intact.watermark and loaded.offsets == intact.offsets


def test_a_damaged_partition_row_stops_its_recovery_rather_than_reapply_every_input() -> None:
    """The partition's own row holds its input offsets: read as empty, every retained input would be
    applied again from the start of the topics (dead letters twice, old events counted twice, an
    erased user back from their old events). Its recovery fails (retried, counted) instead."""
    store = DictState()
    engine = make_engine(settings())
    run(engine, busy_stream(200, seed=8), store, 25)
    p = partition_for(USERS[0], PARTITIONS)
    for garbage in (b"\x00garbage", b"[1, 2]"):
        store.put(p, META_ROW, garbage)
        view = PartitionView(store, p)
        with pytest.raises(UnreadablePartitionRow, match=f"partition {p}"):
            PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())


def test_a_store_without_a_partition_row_takes_its_clock_from_its_users() -> None:
    store = DictState()
    engine = make_engine(settings())
    run(engine, busy_stream(200, seed=8), store, 25)
    p = partition_for(USERS[0], PARTITIONS)
    store.put(p, META_ROW, None)  # a store written before partition rows existed
    view = PartitionView(store, p)
    loaded, _ = PartitionState.load(p, engine.cfg, view.partition_rows(), view.items())
    assert loaded.watermark == max(loaded.last_seen.values()) > 0.0


def test_a_damaged_user_record_starts_over_opted_out_and_stops_nothing_else() -> None:
    """A user record that does not decode failed every read: a catalog change reaching the user, or
    any batch with their events, failed, and with it the other events of the partition (50 of 50 of
    another shopper's events were dead-lettered in a reproduction). Read now, it starts over opted
    out (the damaged record may have held an opt-out, never to be forgotten) and is written back."""
    engine = make_engine(make_settings(trigger_thresholds={"price_drop": 0.0}))
    store = DictState()
    p = partition_for("user1", PARTITIONS)
    other = next(f"u{i}" for i in range(100) if partition_for(f"u{i}", PARTITIONS) == p)
    engine.process([ev("e1", "user1", "view", "i1", T0), ev("e0", other, "view", "i2", T0 + 1)], store)
    store.put(p, b"user1", b"\x00garbage")
    fresh = make_engine(engine.settings)
    fresh.owned = set()
    for q in range(PARTITIONS):
        fresh.adopt(q, fresh.load_partition(q, PartitionView(store, q)))
    drop = fresh.apply_catalog([catalog_record(catalog_entry("i1", price=50.0, updated_at=T0 + 500))], store)
    assert not drop.dead_letters
    later = [ev(f"x{j}", other, "view", "i2", T0 + 600 + j) for j in range(20)]
    out = fresh.process([*later, ev("e2", "user1", "view", "i1", T0 + 700)], store)
    assert out.events[("view", "processed")] == 21 and not out.dead_letters
    assert fresh.part(p).watermark == T0 + 700
    assert not any(push.user_id == "user1" for _, push in out.pushes)
    rewritten = store.user("user1")
    assert rewritten.policy.opted_in is False and rewritten.n_events == 1


def test_a_damaged_row_of_an_older_layout_is_counted_and_deleted_at_the_next_drain() -> None:
    cfg = make_settings().policy
    meta = {"w": 0.0, "c": {"landmark": T0, "seq": 2}, "t": {"landmark": T0}, "n": {}, "o": {}}
    rows = [
        (META_ROW, compact_json(meta)),
        (COVISIT_PREFIX + b"a", b"\x00garbage"),
        (TRENDING_PREFIX + b"a", b"not json"),
        (TRENDING_PREFIX + b"b", b"2.5"),
    ]
    state = PartitionState.load(0, cfg, sorted(rows), [])[0]
    assert state.unreadable_rows == 2 and state.trending.count("b") == 2.5
    writes = state.drain()
    assert {k for k, v in writes.items() if v is None} == {key for key, _ in rows[1:]}
    assert decode_item_row(ITEM_PREFIX + b"b", writes[ITEM_PREFIX + b"b"] or b"") == ("b", None, 2.5)

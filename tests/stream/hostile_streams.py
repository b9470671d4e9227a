"""Seeded generators of hostile streams for the engine, and a driver that cuts them into batches.

A stream is a list of steps in stream order: an ``events``/``consent`` record for
:meth:`stream.engine.Engine.process`, or a slice of ``catalog`` records for ``apply_catalog``. Valid
records go to the edges of the contract (ids of 128 characters, bidirectional and zero-width ids,
the first and last valid times, prices 0 and 1e9, DST edges in odd zones, times that go back or
repeat, redeliveries, feedback for pushes that never were or were someone else's, erasure in the
middle of a session, promotions of a second); a few are invalid on purpose (``Stream.invalid``).

Catalog updates are made for a time no partition's clock has reached where the catalog reader delivers
them (``updated_at`` after every event time before them), so that applying them anywhere before that
place decides the same (``stream.catalog_view``). Two kinds depend on where they are applied by design,
so they are left out where that is compared: a late update is announced where it arrives
(``late_catalog``: no-crash runs only) and a tombstone has no time, it removes the item when read
(``tombstones=False`` when slices are applied ahead of their place).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.contract import CatalogUpdate, push_id
from stream.engine import Engine, Inbound, Outcome
from stream.partitioning import partition_for
from tests.stream.fakes import PARTITIONS, T0, DictState, PartitionView, catalog_record

FIRST_TS = 946_684_800.0  # the contract's first valid time (2000-01-01)
LAST_TS = 4_102_444_799.5  # just before its bound (2100-01-01)
# Users and items at the contract's edges: the longest id, bidirectional and zero-width characters,
# non-Latin text, an id with spaces.
EDGE_USERS = ("u1", "u2", "u3", "U" * 128, "\u202eu4", "\u200b", "ü-ßer", "🙂", "a b")
USERS = EDGE_USERS + tuple(f"p{k}" for k in range(12))  # plain ones too: some pass the holdout
KNOWN_ITEMS = ("i1", "i2", "i3", "i4", "i5", "I" * 128, "\u202eitem", "日本")
UNKNOWN_ITEMS = ("new1", "new2")  # catalogued, unknown to the model
GHOSTS = ("ghost",)  # neither catalogued nor known
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Pacific/Kiritimati",  # UTC+14
    "Pacific/Pago_Pago",  # UTC-11
    "Asia/Kathmandu",  # +05:45
    "Australia/Lord_Howe",  # a half-hour DST
    "Antarctica/Troll",  # a two-hour DST
    "Europe/Dublin",  # negative DST in tzdata
    "Africa/Casablanca",  # DST suspended for Ramadan
    "Etc/GMT+12",
    "America/St_Johns",
)
# DST transitions around T0's year (UTC): Europe spring/autumn, US spring/autumn, Lord Howe.
DST_EDGES = (1711846800.0, 1729990800.0, 1710054000.0, 1730613600.0, 1712415600.0)
EVENT_TYPES = ("view", "view", "view", "add_to_cart", "remove_from_cart", "purchase", "search")
FEEDBACK = ("push_open", "push_click", "push_dismiss")


@dataclass
class Stream:
    """Steps in stream order: ('rec', record) or ('cat', catalog records); ``invalid`` counts records
    that must become dead letters."""

    steps: list[tuple[str, Any]] = field(default_factory=list)
    invalid: int = 0


class Generator:
    """One seeded hostile stream (see the module docstring)."""

    def __init__(
        self,
        seed: int,
        n: int,
        late_catalog: bool = False,
        invalid: bool = True,
        tombstones: bool = True,
        pushed: Sequence[tuple[str, str, str]] = (),
    ) -> None:
        self.r = random.Random(seed)
        self.pushed = list(pushed)  # (user, item, push id) of pushes an earlier run made: feedback for them
        self.n = n
        self.late_catalog = late_catalog
        self.tombstones = tombstones
        self.with_invalid = invalid
        self.ts = T0
        self.max_ts = T0
        self.offsets = {"events": 0, "consent": 0}
        self.event_ids: dict[str, list[str]] = {u: [] for u in USERS}
        self.sent: list[Inbound] = []
        self.seq = 0
        self.out = Stream()

    def build(self) -> Stream:
        """The stream."""
        r = self.r
        while len(self.out.steps) < self.n:
            roll = r.random()
            if roll < 0.62:
                self.event(r.choice(USERS))
            elif roll < 0.70:
                self.feedback(r.choice(USERS))
            elif roll < 0.76:
                self.consent(r.choice(USERS))
            elif roll < 0.84:
                self.catalog()
            elif roll < 0.88 and self.sent:
                self.add(r.choice(self.sent))  # a redelivery: the same record again
            elif roll < 0.90:
                self.burst(r.choice(USERS), r.randint(20, 120))
            elif roll < 0.94 and self.with_invalid:
                self.invalid()
            else:
                self.move_clock(big=True)
        return self.out

    # -- time -----------------------------------------------------------------------------------

    def move_clock(self, big: bool = False) -> None:
        r = self.r
        roll = r.random()
        if not big:
            self.ts += r.choice((0.0, 0.001, 1.0, 7.0, 61.0, 300.0, 950.0, 1900.0))
        elif roll < 0.35:
            self.ts += r.choice((1800.0, 3600.0, 4 * 3600.0, 7 * 3600.0, 86_400.0, 3 * 86_400.0))
        elif roll < 0.55:
            self.ts = r.choice(DST_EDGES) + r.choice((-1.0, -0.5, 0.0, 0.5, 1.0, 1799.0, 3600.0))
        elif roll < 0.75:
            self.ts -= r.choice((0.001, 60.0, 3600.0, 86_400.0))  # back in time
        elif roll < 0.85:
            self.ts = FIRST_TS + r.random() * 10.0
        elif roll < 0.9:
            self.ts = LAST_TS - r.random() * 100.0
        else:
            self.ts = T0 + r.random() * 3 * 86_400.0
        self.ts = min(max(self.ts, FIRST_TS), LAST_TS)

    def record_ts(self) -> float:
        """A time for the next record: the stream's clock, sometimes a little behind or equal."""
        r = self.r
        ts = self.ts if r.random() < 0.8 else self.ts - r.choice((0.0, 0.5, 30.0, 2000.0))
        return min(max(ts, FIRST_TS), LAST_TS)

    # -- records --------------------------------------------------------------------------------

    def add(self, rec: Inbound) -> None:
        self.out.steps.append(("rec", rec))

    def wire(self, topic: str, user: str, data: dict[str, Any], key: str | None = None) -> Inbound:
        escaped = self.r.random() < 0.2  # escaped JSON takes the reference parser
        value = json.dumps(data, ensure_ascii=escaped).encode()
        offset = self.offsets[topic]
        self.offsets[topic] = offset + 1
        rec = Inbound(topic, partition_for(user, PARTITIONS), offset, (key or user).encode(), value)
        if FIRST_TS <= data.get("ts", 0.0) <= LAST_TS:  # not for the invalid ones
            self.max_ts = max(self.max_ts, float(data["ts"]))
        return rec

    def event_data(self, user: str, kind: str) -> dict[str, Any]:
        r = self.r
        self.seq += 1
        roll = r.random()
        if roll < 0.1 and self.event_ids[user]:
            event_id = r.choice(self.event_ids[user])  # an id reused for another event
        elif roll < 0.15:
            event_id = f"{self.seq:0>128}"[-128:]
        else:
            event_id = f"e{self.seq}\u202e" if roll < 0.2 else f"e{self.seq}"
        self.event_ids[user].append(event_id)
        data: dict[str, Any] = {"event_id": event_id, "user_id": user, "type": kind, "ts": self.record_ts()}
        if kind != "search":
            pool = r.random()
            items = KNOWN_ITEMS if pool < 0.8 else UNKNOWN_ITEMS if pool < 0.93 else GHOSTS
            data["item_id"] = r.choice(items[:3]) if r.random() < 0.5 else r.choice(items)
        else:
            data["query"] = r.choice(("", "jacket", "\u202e\n<b>", "x" * 512))
        if r.random() < 0.85:
            data["session_id"] = "s1" if r.random() < 0.8 else r.choice(("s2", "S" * 128, "\u200b"))
        if r.random() < 0.3:
            data["price"] = r.choice((0.0, 1e9, 0.01, 99.9))
        if r.random() < 0.2:
            data["quantity"] = r.choice((1, 10_000))
        if r.random() < 0.3:
            data["context"] = {"time_zone": r.choice(ZONES), "device": "ios", "locale": "de-DE"}
        return data

    def event(self, user: str) -> None:
        self.move_clock()
        self.add(self.wire("events", user, self.event_data(user, self.r.choice(EVENT_TYPES))))

    def burst(self, user: str, n: int) -> None:
        """One shopper's many events in a row (a bot): one item or many, the same second or not."""
        for _ in range(n):
            if self.r.random() < 0.5:
                self.ts += self.r.choice((0.0, 0.001, 1.0))
            self.add(self.wire("events", user, self.event_data(user, self.r.choice(EVENT_TYPES[:4]))))

    def feedback(self, user: str) -> None:
        """Feedback for a push made (in an earlier run of the stream: ``pushed``), perhaps before it
        was made or by another user, for one that may have been made (an in-session push of an event
        seen), or for none."""
        r = self.r
        self.move_clock()
        roll = r.random()
        if roll < 0.6 and self.pushed:
            owner, item, pid = r.choice(self.pushed)
            user = owner if r.random() < 0.85 else user
            data = self.event_data(user, r.choice(FEEDBACK))
            data["item_id"], data["push_id"] = item, pid
        else:
            data = self.event_data(user, r.choice(FEEDBACK))
            owner = user if r.random() < 0.8 else r.choice(USERS)
            cause = r.choice(self.event_ids[owner][-30:]) if self.event_ids[owner] else "none"
            if roll < 0.85:
                data["push_id"] = push_id(owner, data["item_id"], "in_session", cause)
            elif roll < 0.95:
                data["push_id"] = r.choice(("p-unknown", "P" * 128))
        self.add(self.wire("events", user, data))

    def consent(self, user: str) -> None:
        r = self.r
        roll = r.random()
        if roll < 0.25:  # a tombstone: erase the user
            offset = self.offsets["consent"]
            self.offsets["consent"] = offset + 1
            self.add(Inbound("consent", partition_for(user, PARTITIONS), offset, user.encode(), None))
            return
        ts = max(self.record_ts() - (r.choice((0.0, 3600.0)) if roll < 0.4 else 0.0), FIRST_TS)
        data = {"user_id": user, "opted_in": r.random() < 0.6, "ts": ts}
        self.add(self.wire("consent", user, data))

    def catalog(self) -> None:
        r = self.r
        records = []
        for _ in range(r.randint(1, 3)):
            item = r.choice(KNOWN_ITEMS + UNKNOWN_ITEMS)
            if self.late_catalog and r.random() < 0.3:
                at = self.max_ts - r.choice((0.0, 10.0, 5000.0))
            else:
                at = self.max_ts + r.choice((0.001, 1.0, 30.0, 600.0, 7200.0))
            if at >= LAST_TS or at < FIRST_TS:
                continue
            if self.tombstones and r.random() < 0.15:  # a tombstone; often the item comes back later
                records.append(Inbound("catalog", 0, 0, item.encode(), None))
                continue
            data: dict[str, Any] = {
                "item_id": item,
                "title": r.choice((f"Item {item}", "", "\u202e\x00<b>\n" * 10)),
                "category": r.choice(("cat-a", "cat-b", "", "C" * 128)),
                "price": r.choice((0.0, 1e9, 10.0, 100.0, 80.0, 0.01)),
                "stock": r.choice((0, 0, 1, 10, 2**40)),
                "updated_at": at,
            }
            if r.random() < 0.4:
                starts = at + r.choice((-1e6, -1.0, 0.0, 0.001, 1.0, 600.0))
                starts = max(starts, FIRST_TS)
                ends = min(starts + r.choice((0.001, 1.0, 60.0, 3600.0, 1e7)), LAST_TS)
                if ends > starts:
                    discount = r.choice((1e-9, 0.2, 0.5, 0.999999))
                    data["promotion"] = {
                        "promotion_id": r.choice(("p1", "p2", "P" * 128)),
                        "discount": discount,
                        "starts_at": starts,
                        "ends_at": ends,
                    }
            records.append(Inbound("catalog", 0, 0, item.encode(), json.dumps(data).encode()))
        if records:
            self.out.steps.append(("cat", records))

    def invalid(self) -> None:
        """A record the contract refuses (counted in ``Stream.invalid``)."""
        r = self.r
        user = r.choice(USERS)
        good = self.event_data(user, "view")
        kind = r.randrange(8)
        self.out.invalid += 1
        if kind == 0:
            bad = Inbound("events", partition_for(user, PARTITIONS), 0, user.encode(), b"{not json")
        elif kind == 1:
            bad = self.wire("events", user, {**good, "ts": LAST_TS + 10.0})
        elif kind == 2:
            bad = self.wire("events", user, good, key=r.choice([u for u in USERS if u != user]))
        elif kind == 3:
            bad = self.wire("events", user, {**good, "type": "search"})
        elif kind == 4:
            bad = self.wire("events", user, {**good, "unknown": 1})
        elif kind == 5:
            p = (partition_for(user, PARTITIONS) + 1) % PARTITIONS
            bad = Inbound("events", p, 0, user.encode(), json.dumps(good).encode())
        elif kind == 6:
            bad = self.wire("consent", user, {"user_id": user, "opted_in": "yes", "ts": self.ts})
        else:
            data = {"item_id": "i1", "title": "", "category": "", "price": -1.0, "stock": 1}
            data["updated_at"] = self.ts
            self.out.steps.append(("cat", [Inbound("catalog", 0, 0, b"i1", json.dumps(data).encode())]))
            return
        self.add(bad)


class BatchClock:
    """A wall clock for engines with ``worker.clock = "wall"`` that a driver sets before each batch from
    the batch's own records (its latest event time, and 30 s to process it), so a batch delivered
    again after a crash runs at the wall time of its first delivery, and its tick too."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def set_for(self, chunk: Sequence[Inbound]) -> None:
        """The wall time of the batch ``chunk`` (it never goes back)."""
        for rec in chunk:
            try:
                ts = float(json.loads(rec.value or b"")["ts"])
            except (ValueError, KeyError, TypeError):
                continue  # an invalid record: dead-lettered, no time
            self.now = max(self.now, ts + 30.0)


def run(
    engine: Engine,
    stream: Stream,
    store: DictState,
    batch: int,
    early_catalog: bool = True,
    tick_each: bool = False,
    clock: BatchClock | None = None,
) -> Outcome:
    """Drive ``engine`` over ``stream`` in batches of ``batch`` records, then one tick.

    A catalog slice is applied before the batch that holds its place (``early_catalog``) or where it
    is, closing the batch there. ``tick_each``: a tick after every batch too (the worker's ticks come
    between batches whenever the wall clock says). ``clock`` (with ``early_catalog``): the engine's
    wall clock, set before each batch, with a tick after each. Returns everything the engine produced.
    """
    out = Outcome()
    pending: list[Inbound] = []

    def flush() -> None:
        if pending:
            out.extend(engine.process(list(pending), store))
            pending.clear()
            if tick_each:
                out.extend(engine.tick(store))

    if early_catalog:
        for slices, chunk in early_batches(stream, batch):
            if clock is not None:
                clock.set_for(chunk)
            for records in slices:
                out.extend(engine.apply_catalog(records, store))
            out.extend(engine.process(chunk, store))
            if clock is not None:
                out.extend(engine.tick(store))
        out.extend(engine.tick(store))
        return out
    for kind, value in stream.steps:
        if kind == "cat":
            flush()
            out.extend(engine.apply_catalog(value, store))
        else:
            pending.append(value)
            if len(pending) >= batch:
                flush()
    flush()
    out.extend(engine.tick(store))
    return out


def early_batches(stream: Stream, batch: int) -> Iterator[tuple[list[list[Inbound]], list[Inbound]]]:
    """The stream as batches of ``batch`` records, each with the catalog slices that come before its
    last record (read early: applied before the batch)."""
    steps = stream.steps
    k = 0
    while k < len(steps):
        slices: list[list[Inbound]] = []
        chunk: list[Inbound] = []
        while k < len(steps) and len(chunk) < batch:
            kind, value = steps[k]
            if kind == "cat":
                slices.append(value)
            else:
                chunk.append(value)
            k += 1
        yield slices, chunk


def run_with_crashes(
    new_engine: Callable[[], Engine],
    stream: Stream,
    store: DictState,
    batch: int,
    every: int,
    clock: BatchClock | None = None,
) -> Outcome:
    """:func:`run` (catalog slices read early) with a crash after every ``every``-th batch: the batch's
    pushes reached the topic but its state writes did not; an engine restarted from ``store`` (the
    catalog slices read so far read again as a bootstrap, as a worker does) reconciles the pushes read
    back, and the batch is delivered again. ``clock``: as for :func:`run` (the engines read it).
    Returns every push that went out, the lost batches' too."""
    engine = new_engine()
    out = Outcome()
    catalog: list[list[Inbound]] = []
    for n, (slices, chunk) in enumerate(early_batches(stream, batch), start=1):
        if clock is not None:
            clock.set_for(chunk)
        for records in slices:
            out.extend(engine.apply_catalog(records, store))
        catalog += slices
        if n % every:
            out.extend(engine.process(chunk, store))
            if clock is not None:
                out.extend(engine.tick(store))
            continue
        committed = dict(store.data)
        lost = engine.process(chunk, store).pushes
        out.pushes += lost
        store.data = committed
        engine = new_engine()
        for records in catalog:
            engine.apply_catalog(records, DictState(), announce=False)
        engine.owned = set()
        for p in range(PARTITIONS):
            engine.adopt(p, engine.load_partition(p, PartitionView(store, p)))
            engine.apply_recovered_pushes(p, [push for q, push in lost if q == p], store)
        out.extend(engine.process(chunk, store))
        if clock is not None:
            out.extend(engine.tick(store))
    out.extend(engine.tick(store))
    return out


def bootstrap_catalog() -> list[Inbound]:
    """The catalog the engine starts with: every known and unknown item, in stock, at 100."""
    return [
        catalog_record(
            CatalogUpdate(
                item_id=item,
                title=f"Item {item}",
                category=f"cat-{n % 3}",
                price=100.0,
                stock=10,
                updated_at=T0,
            )
        )
        for n, item in enumerate(KNOWN_ITEMS + UNKNOWN_ITEMS)
    ]

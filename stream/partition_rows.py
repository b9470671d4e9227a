"""How a partition's shared state is laid out in its store: the row keys and the codecs of its rows.

Keys start with ``\\x00`` (no id may: the contract refuses control characters), one prefix per kind of
row. The candidate indexes that count per item, co-visitation and trending, share **one row per item**
(``ITEM_PREFIX``): a batch touches an item in both, and a row per index and item made a changelog
record and a RocksDB write each, 1.44 per event on the benchmark's live-paced workload (two thirds of
the worker's changelog records). The row is MessagePack ``[touch order, {neighbour: count}, trending
count]``, the first two None when co-visitation does not hold the item, the last None when trending
does not; both None, and the row is deleted.

Older layouts are still read, and rewritten in this one at the next drain (their rows deleted then):
per-index item rows (``COVISIT_PREFIX``, ``TRENDING_PREFIX``) and, older, per-pair co-visitation rows
(``LEGACY_COVISIT_PREFIX``). Where a row of an older layout and one of this layout hold the same item
(a worker of each version wrote the partition: a rolling deploy or a rollback, whose older worker
ignores this layout's rows and writes its own), co-visitation keeps the more recently touched and
trending the older layout's count (only an older worker running after a newer one writes it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import msgspec

META_ROW = b"\x00p"  # watermark and the indexes' own values
ITEM_PREFIX = b"\x00i"  # one row per item: [touch order, {neighbour: count}, trending count]
COVISIT_PREFIX = (
    b"\x00v"  # an older layout: one co-visitation row per item, [touch order, {neighbour: count}]
)
LEGACY_COVISIT_PREFIX = b"\x00c"  # older still: one row per (item, neighbour) and per item's touch order
TRENDING_PREFIX = b"\x00t"  # an older layout: one trending row per item, its count (JSON)
OLDER_LAYOUTS = (COVISIT_PREFIX, LEGACY_COVISIT_PREFIX, TRENDING_PREFIX)  # read, rewritten, deleted
INTEREST_PREFIX = b"\x00n"
ARRIVALS_PREFIX = b"\x00a"  # one row per user asked about new items in the clock's hour: [hour, count]
SEP = b"\x1f"  # between an item and a neighbour / user id (ids carry no control characters)

# A co-visitation row: (item, touch order, neighbours' counts).
CovisitRow = tuple[str, int, dict[str, float]]

_PACK = msgspec.msgpack.Encoder()
_ITEM_ROW = msgspec.msgpack.Decoder(tuple[int | None, dict[str, float] | None, float | None])
_COVISIT_ROW = msgspec.msgpack.Decoder(tuple[int, dict[str, float]])


def pair_key(prefix: bytes, item: str, other: str) -> bytes:
    """The key of a row about a pair (an item and a neighbour or a user)."""
    return prefix + item.encode("utf-8") + SEP + other.encode("utf-8")


def split_pair(key: bytes, prefix: bytes) -> tuple[str, str]:
    """The two ids of a pair's key (:func:`pair_key`)."""
    item, _, other = key[len(prefix) :].partition(SEP)
    return item.decode("utf-8"), other.decode("utf-8")


def item_key(item: str) -> bytes:
    """The key of an item's row (co-visitation and trending)."""
    return ITEM_PREFIX + item.encode("utf-8")


def encode_item_row(covisit: tuple[int, dict[str, float]] | None, count: float | None) -> bytes | None:
    """An item's row from its co-visitation row ``(touch order, neighbours' counts)`` and its trending
    count; None (delete the row) when the item is in neither index."""
    if covisit is None:
        return None if count is None else _PACK.encode((None, None, count))
    return _PACK.encode((covisit[0], covisit[1], count))


def decode_item_row(key: bytes, raw: bytes) -> tuple[str, CovisitRow | None, float | None]:
    """``(item, its co-visitation row or None, its trending count or None)`` of a stored item row."""
    seq, bucket, count = _ITEM_ROW.decode(raw)
    item = key[len(ITEM_PREFIX) :].decode("utf-8")
    if (seq is None) != (bucket is None):
        raise ValueError(f"item row {item!r}: a touch order without neighbours, or neighbours without one")
    covisit = None if seq is None or bucket is None else (item, seq, bucket)
    return item, covisit, None if count is None else float(count)


def decode_covisit_row(key: bytes, raw: bytes) -> CovisitRow:
    """A co-visitation row of the per-index layout (``COVISIT_PREFIX``)."""
    seq, bucket = _COVISIT_ROW.decode(raw)
    return key[len(COVISIT_PREFIX) :].decode("utf-8"), seq, bucket


def decode_legacy_value(raw: bytes, pair: bool) -> float | int:
    """A row of the per-pair co-visitation layout: a pair's count (``pair``: its key names a
    neighbour) or an item's touch order."""
    value = json.loads(raw)
    return float(value) if pair else int(value)


def from_legacy(rows: Iterable[tuple[bytes, str, str, float | int]]) -> list[CovisitRow]:
    """Per-item rows from the per-pair layout (an item's touch-order row has no neighbour). A pair
    without its item's touch-order row was never restored before either."""
    touched: dict[str, int] = {}
    buckets: dict[str, dict[str, float]] = {}
    for _, item, other, value in rows:
        if other:
            buckets.setdefault(item, {})[other] = float(value)
        else:
            touched[item] = int(value)
    return [(item, seq, buckets.get(item, {})) for item, seq in touched.items()]


def merge_layouts(current: list[CovisitRow], older: list[CovisitRow]) -> list[CovisitRow]:
    """Co-visitation rows of two layouts, one per item: the more recently touched (``current`` on a
    tie). Both exist for an item when a worker of each version wrote the partition."""
    merged = {item: (item, seq, bucket) for item, seq, bucket in older}
    for item, seq, bucket in current:
        if item not in merged or seq >= merged[item][1]:
            merged[item] = (item, seq, bucket)
    return list(merged.values())

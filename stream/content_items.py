"""Items without history in the worker: catalog content into the model, and who a new arrival reaches.

A model trained with a content mapping (``model/content.py``) can place an item it never saw in its
item space from the catalog message alone (title, category, optional image vector). The engine offers
each batch of catalog updates (the start-up read of the whole catalog included, and the whole catalog
after a model swap) to :class:`Unplaced`, which places the items the model lacks a bounded number
per batch or tick, in the order they were read. A model without a mapping (or a worker run with
``model.content=off``) places nothing (``content_enabled`` False): unknown items then stay unknown,
exactly as before.

:func:`arrival_users` says who a ``new_arrival`` is announced to: the users of the partition's
interest index (item -> interested users) for the items most similar to the new one, in the model's
item space and within its catalog category, best interest first, bounded. Pure functions over the
scorer and the index: no I/O. What a burst of new items costs, and how many of them one user hears
of, is the engine's (``stream.engine.catalog_asks``). ``stream.new_items`` keeps the items placed from
content by category, for the in-session ``new`` candidate source (``stream.candidates.gather_candidates``).
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model.content import check_image as read_image
from stream.contract import CatalogUpdate, ContractError
from stream.interest_index import InterestIndex
from stream.policy_config import PolicyConfig


@runtime_checkable
class ContentScorer(Protocol):
    """What a model offers for items without history (``model.scorer.IncrementalScorer`` has it).

    ``similar_items`` finds items the model was trained on only (indices below ``n_artifact_items``):
    items of ``among`` it added from content are ignored, so callers may leave them out (the engine
    does, ``stream.engine.catalog_asks``: a burst of new items of one category is never handed over).
    A model may also offer ``similar_items_many(item_ids, k, among=None)``, the same lists for many
    items at once (:func:`arrival_pools` uses it when there), and ``prepare_items(contents, limit)``,
    which encodes titles ahead of ``add_items`` in another thread (:meth:`Unplaced.preparation`), and
    ``remove_items``, ``restore_items`` and ``reuse_rows``, with which the engine frees the rows of
    items removed from the catalog (:func:`forget_placed`).
    """

    content_enabled: bool
    image_width: int | None
    n_artifact_items: int  # items of the trained catalog: indices at or past it were added from content

    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray: ...
    def add_items(self, item_ids: Sequence[str], contents: Sequence[Any]) -> int: ...
    def similar_items(self, item_id: str, k: int, among: Sequence[str] | None = None) -> list[str]: ...


def content_scorer(scorer: object) -> ContentScorer | None:
    """The scorer as a :class:`ContentScorer` when it maps content now, else None.

    A runtime protocol check inspects every member: callers keep the result (once per model), it is
    far too slow for a per-record test.
    """
    if isinstance(scorer, ContentScorer) and scorer.content_enabled:
        return scorer
    return None


def check_image(update: CatalogUpdate, mapped: ContentScorer | None) -> None:
    """Refuse an image vector the model cannot read (its width differs from the model's).

    ``mapped``: the model when it places items from content (:func:`content_scorer`), else None.
    Values are already finite (the contract refuses NaN and infinities); they must also be within
    float32's range. A model that reads no images ignores the field, so any width passes then.
    """
    if update.image is None or mapped is None or mapped.image_width is None:
        return
    if len(update.image) != mapped.image_width:
        raise ContractError(
            "invalid_field",
            f"image has {len(update.image)} values; the model's image vectors have {mapped.image_width}",
        )
    # The values as the model reads them (a value past float32's range is infinite there): refused
    # here, one record, rather than by the model's placement call with every item placed with it.
    try:
        read_image(update.image, mapped.image_width, item=f"item {update.item_id!r}")
    except ValueError as exc:
        raise ContractError("invalid_field", str(exc)) from None


class Unplaced:
    """Catalogued items the model does not know yet, waiting to be placed from their content.

    Placing an item costs 5-30 ms of one core (its title is encoded alone; longer titles cost more),
    so a catalog with thousands of items the model lacks is placed a bounded number at a time
    (:func:`place_some`), and the worker encodes the next titles ahead in a thread
    (:meth:`preparation`): the event loop, its heartbeats and the group session never wait seconds
    for it. The latest
    version of an item wins; an item waits in the order it was first read.

    :meth:`checkpoint` and :meth:`rollback` undo what a catalog slice the engine failed on changed
    here (``Engine.apply_catalog``); each item is journaled as it first changes.
    """

    def __init__(self) -> None:
        # Item -> (its number in the order first read, its latest version), in that order.
        self._waiting: dict[str, tuple[int, CatalogUpdate]] = {}
        self._numbered = 0
        # Since checkpoint(): each item changed, with what it was before (None: not waiting).
        self._undo: dict[str, tuple[int, CatalogUpdate] | None] | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def waiting(self) -> list[CatalogUpdate]:
        """The items waiting, in the order they are placed."""
        return [update for _, update in self._waiting.values()]

    def offer(self, mapped: ContentScorer | None, updates: Iterable[CatalogUpdate]) -> None:
        """Queue the updates' items that the model does not know (nothing without a content model)."""
        if mapped is None:
            return
        latest: dict[str, CatalogUpdate] = {}
        for update in updates:
            latest[update.item_id] = update
        if not latest:
            return
        ids = list(latest)
        waiting, undo = self._waiting, self._undo
        for item, index in zip(ids, mapped.item_indices(ids), strict=True):
            if index < 0:
                was = waiting.get(item)
                if undo is not None and item not in undo:
                    undo[item] = was
                if was is None:
                    self._numbered += 1
                    waiting[item] = (self._numbered, latest[item])
                else:
                    waiting[item] = (was[0], latest[item])

    def preparation(self, mapped: ContentScorer | None, ahead: int, limit: int) -> Callable[[], int] | None:
        """Work for another thread that encodes the titles of the next ``ahead`` waiting items (at most
        ``limit`` not encoded yet) and returns how many it encoded; None when there is none to do.

        Encoding a title is nearly all of an item's placement: done ahead, off the event loop, the
        placement (:meth:`place_some`, on the loop) finds it in the encoder's cache. Which items are
        placed when, and how, does not change: a title's vector is its alone, whoever encodes it.
        """
        prepare = getattr(mapped, "prepare_items", None)
        if prepare is None or not self._waiting or ahead <= 0 or limit <= 0:
            return None
        contents = [_content_of(u) for _, u in itertools.islice(self._waiting.values(), ahead)]
        return functools.partial(prepare, contents, limit)

    def forget(self, item_id: str) -> None:
        """Drop a waiting item (removed from the catalog)."""
        was = self._waiting.pop(item_id, None)
        if was is not None and self._undo is not None:
            self._undo.setdefault(item_id, was)

    def clear(self) -> None:
        """Drop every waiting item (a new model: the engine offers the catalog again)."""
        if self._undo is not None:
            for item, was in self._waiting.items():
                self._undo.setdefault(item, was)
        self._waiting.clear()

    def place_some(self, mapped: ContentScorer | None, limit: int) -> list[CatalogUpdate]:
        """Place at most ``limit`` waiting items; returns the updates of those placed."""
        if mapped is None or not self._waiting or limit <= 0:
            return []
        batch = [update for _, update in itertools.islice(self._waiting.values(), limit)]
        for update in batch:
            was = self._waiting.pop(update.item_id)
            if self._undo is not None:
                self._undo.setdefault(update.item_id, was)
        # Only unknown items were queued, each once (the model skips any it knows by now). The items
        # known to the model never change: an item's vector stays put when its title is edited.
        mapped.add_items([u.item_id for u in batch], [_content_of(u) for u in batch])
        return batch

    def checkpoint(self) -> None:
        """Start journaling: :meth:`rollback` returns here, :meth:`release` keeps what changed since."""
        self._undo = {}

    def release(self) -> None:
        """End the journal, keeping what changed since :meth:`checkpoint`."""
        self._undo = None

    def rollback(self, mapped: ContentScorer | None) -> None:
        """Put back what waited at :meth:`checkpoint`, in its order, and end the journal.

        Except the items ``mapped`` (the model) knows by now: placed since, they stay placed (a model
        cannot forget an item; the engine filed them as new items when it placed them).
        """
        undo, self._undo = self._undo, None
        if undo is None:
            raise RuntimeError("rollback without a checkpoint")
        waiting = self._waiting
        back = False
        for item, was in undo.items():
            if was is None:
                waiting.pop(item, None)
            else:
                back = back or item not in waiting
                waiting[item] = was
        if back:
            self._waiting = dict(sorted(waiting.items(), key=lambda entry: entry[1][0]))
        restored = [item for item, was in undo.items() if was is not None]
        if mapped is not None and restored:
            for item, index in zip(restored, mapped.item_indices(restored), strict=True):
                if index >= 0:
                    del self._waiting[item]


def _content_of(update: CatalogUpdate) -> Any:
    """The model side's :class:`model.content.ItemContent` of a catalog update."""
    from model.content import ItemContent  # numpy only

    image = None if update.image is None else np.asarray(update.image, dtype=np.float32)
    return ItemContent(title=update.title, category=update.category, image=image)


def warms_up(scorer: object) -> bool:
    """Whether the model lifts its content-placed items (``model.warmup``: a gamma or an offset)."""
    return (
        float(getattr(scorer, "warmup_gamma", 0.0)) > 0.0
        or float(getattr(scorer, "warmup_offset", 0.0)) > 0.0
    )


def placed_from_content(mapped: ContentScorer | None, item_id: str) -> bool:
    """Whether the model knows ``item_id`` only from its content (added, no training history)."""
    if mapped is None:
        return False
    return int(mapped.item_indices([item_id])[0]) >= mapped.n_artifact_items


Forgotten = list[tuple[str, int]]  # items a model forgot, with their rows (``remove_items``)


@runtime_checkable
class ForgetsItems(Protocol):
    """A model that can forget the items it placed from content (``model.scorer.IncrementalScorer``)."""

    def remove_items(self, item_ids: Sequence[str]) -> Forgotten: ...
    def restore_items(self, forgotten: Sequence[tuple[str, int]]) -> None: ...
    def reuse_rows(self, rows: Sequence[int]) -> None: ...


def forget_placed(mapped: ContentScorer | None, item_id: str) -> Forgotten:
    """Forget an item removed from the catalog when the model placed it from content and can forget
    (:class:`ForgetsItems`): unknown to it from now on, as an item never placed. What it returns goes
    to :func:`reuse_forgotten` once the catalog slice holds, or to :func:`restore_forgotten` if it fails.

    Without this a producer that creates and deletes items without end grows the model by a row per
    item until the next model swap. An item catalogued again is placed again, from its new content.
    """
    return mapped.remove_items([item_id]) if isinstance(mapped, ForgetsItems) else []


def restore_forgotten(mapped: ContentScorer | None, forgotten: Forgotten) -> None:
    """Undo :func:`forget_placed` (a catalog slice rolled back): each item gets back the row it had
    before the slice; a row it was placed on again during the slice is freed."""
    if not forgotten or not isinstance(mapped, ForgetsItems):
        return
    first: dict[str, int] = {}
    for item, row in forgotten:
        first.setdefault(item, row)
    now = mapped.item_indices(list(first)).tolist()
    mapped.restore_items(list(first.items()))
    freed = {row for item, row in forgotten if row != first[item]}
    freed.update(row for (item, was), row in zip(first.items(), now, strict=True) if row >= 0 and row != was)
    mapped.reuse_rows(sorted(freed))


def reuse_forgotten(mapped: ContentScorer | None, forgotten: Forgotten) -> None:
    """Hand the rows of items forgotten for good to the model's later placements (``reuse_rows``)."""
    if forgotten and isinstance(mapped, ForgetsItems):
        mapped.reuse_rows([row for _, row in forgotten])


def arrival_pool(
    mapped: ContentScorer | None, item_id: str, category_items: Sequence[str], k: int
) -> list[str]:
    """The items whose users hear of a new item: the ``k`` closest to it in the model's item space,
    then the ``k`` closest of its own catalog category (``category_items``), without repeats.

    A small or young model's item space need not group a category together; the catalog's category
    always does. Empty when the item is not new to the model: one it was trained on has a history
    (first seen by this worker is not new: a catalog published again, or read late, must not announce
    the whole shop), and one it cannot place (no content) reaches no one. Empty when ``k`` is 0. The
    same for every partition: the engine computes it once per announced item.
    """
    if k == 0 or mapped is None or not placed_from_content(mapped, item_id):
        return []
    pool = mapped.similar_items(item_id, k)
    peers = [item for item in category_items if item != item_id]
    if peers:
        pool += mapped.similar_items(item_id, k, among=peers)
    return list(dict.fromkeys(pool))


def arrival_pools(
    mapped: ContentScorer | None, arrivals: Sequence[tuple[str, Sequence[str]]], k: int
) -> list[list[str]]:
    """:func:`arrival_pool` of each ``(item, category_items)``: the same pools, with the model asked for
    the similar items of all of them at once, and once per list of category items (the same object
    for arrivals that share it): a burst of new items in one matrix product, when the model has
    ``similar_items_many`` (``model.scorer.IncrementalScorer``), else one item at a time.
    """
    pools: list[list[str]] = [[] for _ in arrivals]
    if k == 0 or mapped is None or not arrivals:
        return pools
    indices = mapped.item_indices([item for item, _ in arrivals]).tolist()
    new = [i for i, index in enumerate(indices) if index >= mapped.n_artifact_items]
    many = getattr(mapped, "similar_items_many", None)

    def similar(items: list[str], among: Sequence[str] | None = None) -> list[list[str]]:
        if many is not None:
            return list(many(items, k, among=among))
        return [mapped.similar_items(item, k, among=among) for item in items]

    for i, closest in zip(new, similar([arrivals[i][0] for i in new]), strict=True):
        pools[i] = closest
    # The items of a category, once per list: an arrival among them is no peer of its own (a one-off).
    groups: dict[int, list[int]] = {}
    lists: dict[int, Sequence[str]] = {}
    for i in new:
        category_items = arrivals[i][1]
        groups.setdefault(id(category_items), []).append(i)
        lists[id(category_items)] = category_items
    for key, members in groups.items():
        category_items = lists[key]
        if not category_items:
            continue
        listed = set(category_items)
        shared = [i for i in members if arrivals[i][0] not in listed]
        if shared:
            peers_of = similar([arrivals[i][0] for i in shared], category_items)
            for i, more in zip(shared, peers_of, strict=True):
                pools[i] += more
        for i in members:
            item = arrivals[i][0]
            if item in listed and (peers := [p for p in category_items if p != item]):
                pools[i] += similar([item], peers)[0]
    return [list(dict.fromkeys(pool)) for pool in pools]


def arrival_users(pool: Sequence[str], interest: InterestIndex, now: float, cfg: PolicyConfig) -> list[str]:
    """Users to ask about a new item: the interest index's users of the ``pool`` items, best decayed
    interest first (ties by id), at most ``new_arrival_max_users``. Each is then scored on the new
    item from their own state like any candidate."""
    return arrival_audience(pool, interest, now, cfg)[0]


def arrival_audience(
    pool: Sequence[str],
    interest: InterestIndex,
    now: float,
    cfg: PolicyConfig,
    asked: Mapping[str, int] | None = None,
) -> tuple[list[str], int]:
    """:func:`arrival_users` less those already asked about ``new_arrival_asks_per_user_hour`` new items
    (``asked``: user -> new items asked about), and how many of them that leaves out. They keep their
    place among the ``new_arrival_max_users`` best: the bound never lets a user in who was not."""
    best = interest.best_of(pool, now, cfg.interest_index_min_interest)
    limit = cfg.new_arrival_max_users
    if len(best) > limit:
        best = dict(_best_first(best, limit))
    left_out = 0
    if asked:
        bound = cfg.new_arrival_asks_per_user_hour
        open_ = {user: value for user, value in best.items() if asked.get(user, 0) < bound}
        left_out, best = len(best) - len(open_), open_
    return [user for user, _ in _best_first(best, limit)], left_out


def _best_first(best: Mapping[str, float], n: int) -> list[tuple[str, float]]:
    """The ``n`` users of highest interest, best first, ties by id."""
    if len(best) <= n:
        return sorted(best.items(), key=lambda row: (-row[1], row[0]))
    return heapq.nsmallest(n, best.items(), key=lambda row: (-row[1], row[0]))

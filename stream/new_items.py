"""The items the model knows only from their content, by catalog category: the in-session ``new``
candidate source (``stream.candidates.gather_candidates``); the engine files them as it places them
(``stream.engine.content_placement``) and as the catalog changes (``stream.engine.catalog_flow``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate


class NewItems:
    """Items the model knows only from their content, by catalog category, newest first.

    No other candidate source can propose such an item before shoppers engage with it (it has no
    co-visits, no trend, no history in the model's session memory), so the in-session candidates of a
    user browsing a category include its newest items (``quota_new``). Filed at the first version this
    worker read, and under the category of each later version that moves it (:meth:`refile`); lookups
    check the catalog as of the decision's time, so an item not yet catalogued then is not proposed,
    and a moved one only in the category it had then. An item removed from the catalog
    (a tombstone, which has no time: the catalog forgets it when read) is forgotten here too
    (:meth:`forget`): kept, a producer creating and deleting items would grow these lists, and every
    in-session ask's scan of them, without bound.

    :meth:`checkpoint` and :meth:`rollback` undo what a catalog slice the engine failed on changed here
    (``Engine.apply_catalog``); each item is journaled as it first changes.
    """

    def __init__(self) -> None:
        self._by_category: dict[str, list[tuple[float, str]]] = {}  # (-updated_at, item), sorted
        self._filed: dict[str, tuple[list[str], tuple[float, str]]] = {}  # item -> its categories, entry
        # Since checkpoint(): each item changed, with its filing before (None: not filed).
        self._undo: dict[str, tuple[list[str], tuple[float, str]] | None] | None = None

    def __len__(self) -> int:
        return len(self._filed)

    def add(self, update: CatalogUpdate) -> None:
        """File an item placed from content (again: no change)."""
        if update.item_id in self._filed:
            return
        self._journal(update.item_id)
        self._file(update.item_id, [update.category], (-update.updated_at, update.item_id))

    def refile(self, update: CatalogUpdate) -> None:
        """A later version of a filed item: file it under its category too when that is new (moved).

        Kept under the earlier ones as well, at its first filing's place: a decision at a time before
        the move still finds it where the catalog put it then (the lookups check the catalog). Nothing
        for an item not filed.
        """
        filed = self._filed.get(update.item_id)
        if filed is None or update.category in filed[0]:
            return
        self._journal(update.item_id)
        categories, entry = filed
        categories.append(update.category)
        bisect.insort(self._by_category.setdefault(update.category, []), entry)

    def forget(self, item_id: str) -> None:
        """Unfile an item (removed from the catalog); nothing when it is not filed."""
        if item_id in self._filed:
            self._journal(item_id)
            self._unfile(item_id)

    def clear(self) -> None:
        """Forget every item (a new model knows other items; the engine files them again)."""
        for item in self._filed:
            self._journal(item)
        self._by_category.clear()
        self._filed.clear()

    def checkpoint(self) -> None:
        """Start journaling: :meth:`rollback` returns here, :meth:`release` keeps what changed since."""
        self._undo = {}

    def release(self) -> None:
        """End the journal, keeping what changed since :meth:`checkpoint`."""
        self._undo = None

    def rollback(self) -> None:
        """Every item filed as it was at :meth:`checkpoint`, and end the journal."""
        undo, self._undo = self._undo, None
        if undo is None:
            raise RuntimeError("rollback without a checkpoint")
        for item, was in undo.items():
            self._unfile(item)
            if was is not None:
                self._file(item, *was)

    def _journal(self, item_id: str) -> None:
        undo = self._undo
        if undo is not None and item_id not in undo:
            filed = self._filed.get(item_id)
            undo[item_id] = None if filed is None else (list(filed[0]), filed[1])

    def _file(self, item_id: str, categories: list[str], entry: tuple[float, str]) -> None:
        self._filed[item_id] = (categories, entry)
        for category in categories:
            bisect.insort(self._by_category.setdefault(category, []), entry)

    def _unfile(self, item_id: str) -> None:
        filed = self._filed.pop(item_id, None)
        if filed is None:
            return
        categories, entry = filed
        for category in categories:
            entries = self._by_category[category]
            del entries[bisect.bisect_left(entries, entry)]
            if not entries:
                del self._by_category[category]

    def in_categories(self, categories: Iterable[str], catalog: CatalogView, now: float, n: int) -> list[str]:
        """Up to ``n`` items of ``categories`` (in that order), each newest first, catalogued at ``now``."""
        out: list[str] = []
        for category in categories:
            for negative_ts, item in self._by_category.get(category, ()):
                if -negative_ts > now:
                    continue
                version = catalog.at(item, now)
                if version is None or version.category != category:
                    continue
                out.append(item)
                if len(out) >= n:
                    return out
        return out

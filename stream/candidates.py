"""Candidate items for a user's next push, from five bounded sources, merged with a source label.

* :class:`~stream.engagement.Engagement` (per user, stored in the user's state): items the user
  viewed or carted and has not bought, with view counts and last-engagement times.
* :class:`~stream.covisitation.CoVisitationIndex` (per partition): item -> top-N items seen in the
  same sessions, with time-decayed counts, updated from the stream.
* new items placed from their content (``stream.content_items``), in the categories the user browses.
* :class:`PromotionBoard` (per worker): items on an active promotion, deepest discount first.
* :class:`~stream.trending.TrendingItems` (per partition): time-decayed popularity, for users with
  little history.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from stream.contract import CatalogUpdate
from stream.covisitation import CoVisitationIndex
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.trending import TrendingItems


class Promotions(Protocol):
    """Items on a running promotion: :class:`PromotionBoard`, or the worker's catalog view by time."""

    def active(self, now: float, n: int) -> list[str]:
        """Up to ``n`` items whose promotion runs at ``now``, deepest discount first."""
        ...


class PromotionBoard:
    """Items on a promotion (from catalog updates), answered deepest discount first, bounded."""

    def __init__(self, max_items: int = 10_000) -> None:
        self.max_items = max_items
        self._promos: dict[str, tuple[float, float, float]] = {}  # item -> (discount, starts_at, ends_at)
        self._order: list[str] | None = None

    def __len__(self) -> int:
        return len(self._promos)

    def update(self, entry: CatalogUpdate) -> None:
        """Track the item's promotion (or its absence) from its latest catalog entry."""
        promo = entry.promotion
        if promo is None or entry.stock <= 0:
            if self._promos.pop(entry.item_id, None) is not None:
                self._order = None
            return
        self._promos[entry.item_id] = (promo.discount, promo.starts_at, promo.ends_at)
        self._order = None
        if len(self._promos) > self.max_items:
            # Keep the promotions that end last: the others are the first to go anyway.
            keep = heapq.nlargest(self.max_items, self._promos.items(), key=lambda kv: kv[1][2])
            self._promos = dict(keep)

    def remove(self, item_id: str) -> None:
        """Forget an item that left the catalog."""
        if self._promos.pop(item_id, None) is not None:
            self._order = None

    def active(self, now: float, n: int) -> list[str]:
        """Up to ``n`` items whose promotion runs at ``now``, deepest discount first."""
        if self._order is None:
            self._order = sorted(self._promos, key=lambda k: (-self._promos[k][0], k))
        out: list[str] = []
        for item in self._order:
            _, starts, ends = self._promos[item]
            if starts <= now < ends:
                out.append(item)
                if len(out) >= n:
                    break
        return out


@dataclass(init=False, slots=True)
class CandidateSource:
    """One merged candidate: the item and the source that proposed it first.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__`` (about three times
    the cost), and a decision builds one per candidate; nothing changes or hashes it. The ``__init__``
    is written (``stream.native``).
    """

    item_id: str
    source: str  # "engaged" | "covisited" | "new" | "promoted" | "trending"
    score: float  # the source's own score (recency rank, decayed count, discount, popularity)

    def __init__(self, item_id: str, source: str, score: float) -> None:
        self.item_id = item_id
        self.source = source
        self.score = score


def gather_candidates(
    engagement: Engagement,
    covisitation: CoVisitationIndex,
    promotions: Promotions,
    trending: TrendingItems,
    now: float,
    config: PolicyConfig,
    exclude: Iterable[str] = (),
    new_items: Iterable[str] = (),
) -> list[CandidateSource]:
    """Merge the five sources into at most ``max_candidates`` distinct items, each with its source.

    Order and quotas: engaged items (most recent first, ``quota_engaged``), then items co-visited with
    the session's recent items (``quota_covisited``), new items in the categories the user browses
    (``new_items``, newest first, ``quota_new``: items without history, which no other source can
    propose until shoppers engage with them), items on promotion (``quota_promoted``) and, for users
    with fewer than ``trending_min_history`` engaged items, trending items (``quota_trending``).
    Bought items and ``exclude`` never appear; an item proposed by two sources keeps the first.
    """
    skip = engagement.bought() | set(exclude)
    out: list[CandidateSource] = []
    seen: set[str] = set()

    def take(items: Iterable[tuple[str, float]], source: str, quota: int) -> None:
        taken = 0
        for item, score in items:
            if taken >= quota or len(out) >= config.max_candidates:
                return
            if item in skip or item in seen:
                continue
            seen.add(item)
            out.append(CandidateSource(item, source, score))
            taken += 1

    engaged = engagement.engaged()
    take(((item, 1.0 / (rank + 1)) for rank, item in enumerate(engaged)), "engaged", config.quota_engaged)
    anchors = engagement.recent(config.covisit_window)
    if config.quota_covisited and anchors:
        take(
            covisitation.related(anchors, now, config.quota_covisited, skip),
            "covisited",
            config.quota_covisited,
        )
    if config.quota_new:
        take(((item, 1.0) for item in new_items), "new", config.quota_new)
    if config.quota_promoted:
        promoted = promotions.active(now, config.quota_promoted + len(skip) + len(seen))
        take(((item, 1.0) for item in promoted), "promoted", config.quota_promoted)
    if config.quota_trending and len(engaged) < config.trending_min_history:
        top = trending.top(config.quota_trending + config.max_candidates, now)
        take(zip(top, trending.scores(top, now), strict=True), "trending", config.quota_trending)
    return out

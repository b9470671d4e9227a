"""Discovery: the items a shopper has not seen that are worth a push when they left nothing behind.

The ``discovery`` trigger (``stream/triggers.py``) fires at a reminder moment (the shopper stayed away
``reminder_seconds``) when nothing was abandoned. Its candidates are the in-stock items of the
categories the shopper engaged with most recently that they have not engaged with, valued by what the
shop observes of them, not by the model:

    value = log1p(popularity) + discovery_discount_weight x discount
            - discovery_price_weight x log(price / the category's median price)
            + discovery_category_weight x log(the category's recent items / the top category's)

Popularity is the partition's decayed trending count (views 1, carts 3, purchases 5); the discount
and the price relative to the category are what every shopper weighs. The last term is the
shopper's own: of the categories of their recent items, the one they browsed most is most likely
what they are shopping for now (its items lose nothing, the others' the less the fewer of the
shopper's recent items they have). Off by default (weight 0): in the policy lab it added +5 to +9
purchases over eight worlds at the same pushes, in the engine's push benchmark -8 (+217 against +225,
seeds 11-18), both within the noise (``benchmarks/README.md``). The GRU is not used here: it is
trained on next clicks inside sessions and ranks items the shopper never touched poorly (policy lab,
``benchmarks/README.md``: the model's best unengaged item -20 ± 60 purchases against the marketer's
rules, this ranking +50 ± 70; the same features with weights learned online from the shop's organic
discoveries +46 ± 70, so the defaults need nothing of the simulator). The candidate's interest, which
the trigger's threshold and the decider read like a model's calibrated interest, is
``value / (1 + value)`` (0 for a value <= 0): monotone, in [0, 1).

Pure functions: the engine passes its catalog view and its partition's popularity.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.trending import PopularityAt


def discovery_value(
    popularity: float, discount: float, relative_price: float, discount_weight: float, price_weight: float
) -> float:
    """An unengaged item's value to a shopper from what the shop observes (module doc); ``relative_price``
    is the item's effective price over its category's median."""
    return (
        math.log1p(max(popularity, 0.0))
        + discount_weight * discount
        - price_weight * math.log(relative_price)
    )


def discovery_interest(value: float) -> float:
    """A discovery value mapped to an interest in [0, 1): ``value / (1 + value)``, 0 when not positive."""
    return value / (1.0 + value) if value > 0.0 else 0.0


def discovery_pool(
    engagement: Engagement,
    categories: Mapping[str, int] | Iterable[str],
    catalog: CatalogView,
    popularity: PopularityAt,
    now: float,
    config: PolicyConfig,
    values: dict[str, CategoryMoment] | None = None,
    prices: CategoryPrices | None = None,
    left_out: list[str] | None = None,
) -> list[tuple[str, float]]:
    """(item, interest) of the best ``discovery_items`` unengaged in-stock items of ``categories``.

    ``categories``: how many of the shopper's recent items each category has (a plain iterable counts
    each once). Best first, ties by item id (the order never depends on iteration order). Each
    category's median effective price is taken over its in-stock items at ``now``. Empty when
    ``discovery_items`` is 0.

    The result is the first ``discovery_items`` of every unengaged item of the categories valued
    (:func:`category_values`) and sorted, to the last bit, but without valuing them all: an item the
    partition never counted has the value of its catalog terms alone, ranked once per span of the
    catalog (:class:`CategoryTerms`), so of those only the best few of each category are taken (with
    any that tie the last taken); the counted ones are valued one by one. In a replay the pool's
    categories hold hundreds of items, of which a few are counted.

    ``values``: a cache of each category's valued items at this moment, valid while the catalog, the
    popularity and ``now`` stay as they are (the shoppers of one moment share their categories);
    ``prices``: the catalog's part of them, kept across moments (:class:`CategoryPrices`).

    A category with more than ``discovery_max_category_items`` catalogued items is not valued (it
    offers no item; its count still weighs the others' share): valuing it scans all of its items, again
    after any change to one of them, and a broken or hostile catalog producer can put every item in
    one category. Such categories are appended to ``left_out`` for the caller to count.
    """
    wanted = config.discovery_items
    if wanted <= 0:
        return []
    cache = {} if values is None else values
    counts = categories if isinstance(categories, Mapping) else dict.fromkeys(categories, 1)
    top = max(counts.values(), default=1)
    known = engagement.knows  # recent items and earlier purchases
    # (-value, item): sorted as they are, best first with ties by id, with no key call per item.
    scored: list[tuple[float, str]] = []
    for category in sorted(counts):
        if catalog.category_size(category) > config.discovery_max_category_items:
            if left_out is not None:
                left_out.append(category)
            continue
        moment = cache.get(category)
        if moment is None:
            moment = cache[category] = CategoryMoment.of(category, catalog, popularity, now, config, prices)
        share = config.discovery_category_weight * math.log(max(counts[category], 1) / top)
        scored += [(-(value + share), item) for value, item in moment.counted if not known(item)]
        # The uncounted in value order: the first ``wanted`` unengaged, and those that tie the last.
        taken, last = 0, 0.0
        counted = moment.counted_items
        for value, item in moment.terms.ranked():
            if item in counted or known(item):
                continue
            shared = value + share
            if taken >= wanted and shared != last:
                break
            scored.append((-shared, item))
            taken, last = taken + 1, shared
    scored.sort()
    return [(item, discovery_interest(-negated)) for negated, item in scored[:wanted]]


@dataclass(frozen=True, slots=True)
class CategoryMoment:
    """A category at one moment: its in-stock items' catalog terms and the counted items' values."""

    terms: CategoryTerms
    counted: list[tuple[float, str]]  # (discovery value, item) of its items the partition counted
    counted_items: frozenset[str]

    @classmethod
    def of(
        cls,
        category: str,
        catalog: CatalogView,
        popularity: PopularityAt,
        now: float,
        config: PolicyConfig,
        prices: CategoryPrices | None = None,
    ) -> CategoryMoment:
        """The category's terms at ``now`` and the values of its counted items."""
        terms = (prices or CategoryPrices()).terms(category, catalog, now, config)
        position = terms.position()
        here = terms.counted_in(popularity)
        counts, factor = popularity.counts, popularity.factor
        # Any order gives the same pool; this one is the same every run.
        counted = [(terms.value(position[item], counts[item] * factor), item) for item in sorted(here)]
        return cls(terms, counted, here)


def category_values(
    category: str,
    catalog: CatalogView,
    popularity: PopularityAt,
    now: float,
    config: PolicyConfig,
    prices: CategoryPrices | None = None,
) -> list[tuple[float, str]]:
    """(discovery value, item) of every in-stock item of ``category`` at ``now`` (module doc).

    ``prices``: a cache of the catalog's part of the values (:class:`CategoryPrices`); the values are
    the same with or without it, to the last bit.
    """
    terms = (prices or CategoryPrices()).terms(category, catalog, now, config)
    items = terms.items
    return [
        (terms.value(k, p), item) for k, (item, p) in enumerate(zip(items, popularity.of(items), strict=True))
    ]


class CategoryTerms:
    """A category's in-stock items at a moment, by id, with their discount and price terms as columns,
    and (built when first asked, once per span of the catalog) the items ranked by their value with
    no popularity: what an item the partition never counted is worth."""

    __slots__ = ("items", "discounts", "prices", "_ranked", "_position", "_counted")

    def __init__(self, items: list[str], discounts: list[float], prices: list[float]) -> None:
        self.items = items
        self.discounts = discounts
        self.prices = prices
        self._ranked: list[tuple[float, str]] | None = None
        self._position: dict[str, int] | None = None
        # Per counter's key-set epoch: how far into its ``added`` log the set was taken, and the set.
        self._counted: dict[int, tuple[int, frozenset[str]]] = {}

    def value(self, k: int, popularity: float) -> float:
        """The discovery value of the ``k``-th item at ``popularity`` (module doc): the one place the
        formula is evaluated, so the pool, its ranking and :func:`category_values` give the same floats
        (the same operations as :func:`discovery_value`, in the same order)."""
        return math.log1p(popularity if popularity > 0.0 else 0.0) + self.discounts[k] - self.prices[k]

    def ranked(self) -> list[tuple[float, str]]:
        """(value without popularity, item), best first, ties by id."""
        if self._ranked is None:
            ranked = [(self.value(k, 0.0), item) for k, item in enumerate(self.items)]
            ranked.sort(key=lambda vi: (-vi[0], vi[1]))
            self._ranked = ranked
        return self._ranked

    def counted_in(self, popularity: PopularityAt) -> frozenset[str]:
        """The category's items that ``popularity`` counts.

        Intersecting the counts' keys with the category's items looks up every item of the category
        (hundreds in a replay) at every decision that values it. Within a key-set epoch the counts only
        gain keys, each named once in ``popularity.added`` (:class:`stream.trending.PopularityAt`), so
        the set taken once is brought up to date with the keys added since, while they are fewer than
        the category's items; the same set either way.
        """
        position = self.position()
        epoch, added = popularity.keys_epoch, popularity.added
        known = self._counted.get(epoch) if epoch else None
        if known is not None and len(added) - known[0] <= len(position):
            here = known[1]
            new = [item for item in added[known[0] :] if item in position]
            if new:
                here = here.union(new)
        else:
            here = frozenset(popularity.counts.keys() & position.keys())  # intersected in C
            if epoch and len(self._counted) >= 8:
                # One counter per partition, each with its own epochs: keep the newest few.
                del self._counted[min(self._counted)]
        if epoch:
            self._counted[epoch] = (len(added), here)
        return here

    def position(self) -> dict[str, int]:
        """Each item's index in the columns."""
        if self._position is None:
            self._position = {item: k for k, item in enumerate(self.items)}
        return self._position


class CategoryPrices:
    """The catalog's part of each category's discovery values, kept while it holds.

    A category's in-stock items at ``now``, its median effective price and each item's discount and
    price terms change only when a version comes into force or a promotion starts or ends, not with
    every event: a reminder moment reads them from here and adds only the popularity, which moves
    with every event. An entry holds for the span of times around the ``now`` it was made at over
    which every item of the category reads the same version with the same promotion state, and
    while the category's items are unchanged (:meth:`stream.catalog_view.CatalogView.generation_of`). One
    instance serves one policy configuration (the engine's): the terms hold its weights.
    """

    def __init__(self) -> None:
        self._catalog: CatalogView | None = None
        # category -> (its generation, lo, hi, terms), valid for lo <= now < hi while the generation holds.
        self._terms: dict[str, tuple[int, float, float, CategoryTerms]] = {}

    def terms(self, category: str, catalog: CatalogView, now: float, config: PolicyConfig) -> CategoryTerms:
        """The category's in-stock items at ``now`` by id, their ``discovery_discount_weight`` x discount
        and their ``discovery_price_weight`` x log of the relative price, as three columns."""
        if catalog is not self._catalog:
            self._catalog = catalog
            self._terms.clear()
        # Per category: a shop publishes stock and price changes all the time, and a whole-catalog
        # generation made every decision recompute its category (a scan of its items) after any of them.
        generation = catalog.generation_of(category)
        cached = self._terms.get(category)
        if cached is not None and cached[0] == generation and cached[1] <= now < cached[2]:
            return cached[3]
        lo, hi, terms = _category_terms(category, catalog, now, config)
        self._terms[category] = (generation, lo, hi, terms)
        return terms


def _category_terms(
    category: str, catalog: CatalogView, now: float, config: PolicyConfig
) -> tuple[float, float, CategoryTerms]:
    """:meth:`CategoryPrices.terms` computed, with the span ``[lo, hi)`` of times it holds for."""
    lo, hi = -math.inf, math.inf
    entries: list[tuple[str, CatalogUpdate]] = []
    for item in catalog.in_category(category):
        version, since, until = catalog.at_span(item, now)
        lo, hi = max(lo, since), min(hi, until)
        if version is None or version.stock <= 0 or version.category != category:
            continue  # (in_category also lists items in the category at other times only)
        promo = version.promotion
        if promo is not None:  # whether it runs (the discount, the effective price) changes at its ends
            if now < promo.starts_at:
                hi = min(hi, promo.starts_at)
            elif now < promo.ends_at:
                lo, hi = max(lo, promo.starts_at), min(hi, promo.ends_at)
            else:
                lo = max(lo, promo.ends_at)
        entries.append((item, version))
    if not entries:
        return lo, hi, CategoryTerms([], [], [])
    median = statistics.median(max(v.effective_price(now), 0.01) for _, v in entries)
    items: list[str] = []
    discounts: list[float] = []
    prices: list[float] = []
    for item, version in entries:
        promo = version.promotion
        discount = promo.discount if promo is not None and promo.active_at(now) else 0.0
        relative = max(version.effective_price(now), 0.01) / median
        items.append(item)
        discounts.append(config.discovery_discount_weight * discount)
        prices.append(config.discovery_price_weight * math.log(relative))
    return lo, hi, CategoryTerms(items, discounts, prices)

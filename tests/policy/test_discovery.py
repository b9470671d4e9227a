"""The discovery pool (``stream/discovery.py``): unseen in-stock items of the shopper's recent
categories, valued by popularity, discount and price relative to the category."""

from __future__ import annotations

import math
import random

from stream import discovery
from stream.catalog_view import CatalogView
from stream.contract import CatalogUpdate, Promotion
from stream.discovery import CategoryPrices, category_values, discovery_interest, discovery_pool
from stream.engagement import Engagement
from stream.policy_config import PolicyConfig
from stream.trending import PopularityAt, TrendingItems

T0 = 1_781_006_400.0
CFG = PolicyConfig.model_validate({})


def _catalog(*entries: tuple[str, str, float, int, float]) -> CatalogView:
    """(item, category, price, stock, discount) entries, all catalogued an hour before T0."""
    view = CatalogView()
    for item, category, price, stock, discount in entries:
        promo = (
            Promotion(promotion_id=f"p-{item}", discount=discount, starts_at=T0 - 7200, ends_at=T0 + 7200)
            if discount
            else None
        )
        view.put(
            CatalogUpdate(
                item_id=item,
                title=item,
                category=category,
                price=price,
                stock=stock,
                promotion=promo,
                updated_at=T0 - 3600,
            )
        )
    return view


def _seen(*items: str) -> Engagement:
    engagement = Engagement(20)
    for k, item in enumerate(items):
        engagement.observe("view", item, T0 - 100 + k)
    return engagement


def test_the_pool_holds_unseen_in_stock_items_of_the_categories_ranked_by_popularity_discount_and_price() -> (
    None
):
    catalog = _catalog(
        ("seen", "jackets", 100.0, 5, 0.0),
        ("popular", "jackets", 100.0, 5, 0.0),
        ("on-sale", "jackets", 100.0, 5, 0.4),
        ("cheap", "jackets", 50.0, 5, 0.0),
        ("sold-out", "jackets", 10.0, 0, 0.5),
        ("other-aisle", "shoes", 100.0, 5, 0.0),
    )
    popularity = PopularityAt({"popular": math.e - 1.0}, 1.0)  # log1p -> 1.0
    pool = discovery_pool(_seen("seen"), ["jackets"], catalog, popularity, T0, CFG)
    ranked = [item for item, _ in pool]
    # The in-stock jackets' median effective price: 80 (seen 100, popular 100, on-sale 60, cheap 50).
    # on-sale: 3 x 0.4 - 0.9 x log(60 / 80) = 1.46; popular: 1 - 0.9 x log(100 / 80) = 0.80;
    # cheap: -0.9 x log(50 / 80) = 0.42. The seen, the sold-out and the other aisle's items are out.
    assert ranked == ["on-sale", "popular", "cheap"]
    assert math.isclose(dict(pool)["popular"], discovery_interest(1.0 - 0.9 * math.log(100 / 80)))


def test_the_pool_never_holds_an_item_the_shopper_bought_even_one_forgotten_among_the_recent_ones() -> None:
    catalog = _catalog(*[(f"i{k}", "c", 100.0, 5, 0.0) for k in range(4)])
    zero = PopularityAt({}, 1.0)
    engagement = Engagement(2)
    engagement.observe("purchase", "i0", T0 - 100)
    engagement.observe("view", "x", T0 - 99)
    engagement.observe("view", "y", T0 - 98)  # i0 leaves the recent items
    assert engagement.get("i0") is None
    assert [item for item, _ in discovery_pool(engagement, ["c"], catalog, zero, T0, CFG)] == [
        "i1",
        "i2",
        "i3",
    ]
    forgetful = Engagement(2, max_purchases=0)
    for k, item in enumerate(["i0", "x", "y"]):
        forgetful.observe("purchase" if item == "i0" else "view", item, T0 - 100 + k)
    assert "i0" in [item for item, _ in discovery_pool(forgetful, ["c"], catalog, zero, T0, CFG)]


def test_the_pool_is_bounded_ordered_by_id_on_ties_and_off_with_no_items() -> None:
    catalog = _catalog(*[(f"i{k}", "c", 100.0, 5, 0.0) for k in (3, 1, 2)])
    zero = PopularityAt({}, 1.0)
    two = CFG.model_copy(update={"discovery_items": 2})
    assert discovery_pool(Engagement(20), ["c"], catalog, zero, T0, two) == [("i1", 0.0), ("i2", 0.0)]
    off = CFG.model_copy(update={"discovery_items": 0})
    assert discovery_pool(Engagement(20), ["c"], catalog, zero, T0, off) == []
    assert discovery_pool(Engagement(20), [], catalog, zero, T0, CFG) == []


def test_discovery_interest_is_monotone_in_zero_to_one() -> None:
    values = [-2.0, 0.0, 0.1, 1.0, 5.0, 100.0]
    interests = [discovery_interest(v) for v in values]
    assert interests[:2] == [0.0, 0.0]
    assert all(a < b for a, b in zip(interests[1:], interests[2:], strict=False))
    assert all(0.0 <= p < 1.0 for p in interests)


def test_the_category_the_shopper_browsed_most_weighs_more() -> None:
    catalog = _catalog(
        ("j1", "jackets", 100.0, 5, 0.0),
        ("j2", "jackets", 100.0, 5, 0.0),
        ("s1", "shoes", 100.0, 5, 0.0),
        ("s2", "shoes", 100.0, 5, 0.0),
    )
    popularity = PopularityAt({"j2": math.e - 1.0, "s2": math.e**2 - 1.0}, 1.0)  # log1p: 1.0, 2.0

    def pool(counts: dict[str, int], weight: float) -> list[tuple[str, float]]:
        cfg = CFG.model_copy(update={"discovery_category_weight": weight})
        return discovery_pool(_seen("j1", "s1"), counts, catalog, popularity, T0, cfg)

    # Three of the shopper's recent items were jackets, one shoes: shoes lose 2 x log(1/3) = -2.2.
    assert pool({"jackets": 3, "shoes": 1}, 2.0) == [
        ("j2", 0.5),
        ("s2", discovery_interest(2.0 + 2 * math.log(1 / 3))),
    ]
    # Without the weight, or with the categories equally browsed (or as a plain list): popularity.
    assert [i for i, _ in pool({"jackets": 3, "shoes": 1}, 0.0)] == ["s2", "j2"]
    assert [i for i, _ in pool({"jackets": 2, "shoes": 2}, 2.0)] == ["s2", "j2"]
    assert pool({"jackets": 1, "shoes": 1}, 2.0) == discovery_pool(
        _seen("j1", "s1"), ["shoes", "jackets"], catalog, popularity, T0, CFG
    )


def test_a_category_past_the_size_bound_offers_nothing_and_still_weighs_the_others_share() -> None:
    catalog = _catalog(
        ("j1", "jackets", 100.0, 5, 0.0),
        ("j2", "jackets", 100.0, 5, 0.0),
        ("j3", "jackets", 100.0, 5, 0.0),
        ("s1", "shoes", 100.0, 5, 0.0),
        ("s2", "shoes", 100.0, 5, 0.0),
    )
    popularity = PopularityAt({"j2": math.e - 1.0, "s2": math.e**2 - 1.0}, 1.0)  # log1p: 1.0, 2.0
    cfg = CFG.model_copy(update={"discovery_category_weight": 2.0, "discovery_max_category_items": 2})
    left_out: list[str] = []
    pool = discovery_pool(
        _seen("j1", "s1"), {"jackets": 3, "shoes": 1}, catalog, popularity, T0, cfg, left_out=left_out
    )
    # Jackets (3 items) are past the bound: none offered, counted; shoes keep their share of log(1/3).
    assert pool == [("s2", discovery_interest(2.0 + 2 * math.log(1 / 3)))]
    assert left_out == ["jackets"]
    assert catalog.category_size("jackets") == 3 and catalog.category_size("socks") == 0


POPULAR = PopularityAt({"a": 2.0, "b": 0.5, "c": 7.0}, 1.0)


def _uncached(view: CatalogView, category: str, now: float) -> list[tuple[float, str]]:
    return category_values(category, view, POPULAR, now, CFG)


def test_cached_category_prices_give_the_same_values_as_computing_them_at_every_moment() -> None:
    """The catalog's part of the values is kept across moments; it must never be stale: not across a
    version coming into force, a promotion starting or ending, a sell-out, or a new catalog record."""
    view = CatalogView()

    def put(item: str, price: float, stock: int, at: float, promo: tuple[float, float] | None = None) -> None:
        promotion = (
            Promotion(promotion_id=f"p-{item}", discount=0.3, starts_at=promo[0], ends_at=promo[1])
            if promo
            else None
        )
        view.put(
            CatalogUpdate(
                item_id=item,
                title=item,
                category="c",
                price=price,
                stock=stock,
                promotion=promotion,
                updated_at=at,
            )
        )

    put("a", 100.0, 5, T0)
    put("b", 80.0, 5, T0, promo=(T0 + 50, T0 + 150))
    put("c", 60.0, 5, T0 + 100)  # new at T0 + 100
    put("a", 90.0, 5, T0 + 120)  # a price change
    put("b", 80.0, 0, T0 + 200)  # sold out
    prices = CategoryPrices()
    moments = [T0 - 10, T0, T0 + 49, T0 + 50, T0 + 99, T0 + 100, T0 + 119, T0 + 120, T0 + 149, T0 + 150]
    moments += [T0 + 199, T0 + 200, T0 + 300, T0 + 120, T0 + 50, T0 - 10]  # and back in time
    for now in moments:
        cached = category_values("c", view, POPULAR, now, CFG, prices)
        assert cached == _uncached(view, "c", now), now
    # A record read later changes what holds at a moment already cached: the cache starts over.
    now = T0 + 300
    category_values("c", view, POPULAR, now, CFG, prices)
    put("a", 10.0, 5, T0 + 300)
    assert category_values("c", view, POPULAR, now, CFG, prices) == _uncached(view, "c", now)
    assert [item for _, item in _uncached(view, "c", now)] == ["a", "c"]


def test_category_prices_stay_exact_per_category_under_a_busy_catalog() -> None:
    """The cache is kept per category (CatalogView.generation_of): a change to one category's items
    must leave the others' entries, and no change (a new version, an item moving between categories,
    a removal, versions forgotten) may leave a stale one."""
    rng = random.Random(5)
    view = CatalogView()
    prices = CategoryPrices()
    categories = ["c0", "c1", "c2"]
    for step in range(600):
        op = rng.random()
        item = f"i{rng.randrange(12)}"
        at = T0 + rng.randrange(0, 400)
        if op < 0.55:
            view.put(
                CatalogUpdate(
                    item_id=item,
                    title=item,
                    category=rng.choice(categories),
                    price=rng.choice([10.0, 25.0, 80.0]),
                    stock=rng.choice([0, 3]),
                    updated_at=at,
                )
            )
        elif op < 0.65:
            view.remove(item)
        elif op < 0.7:
            view.forget_until(T0 + rng.randrange(0, 200))
        now = T0 + rng.randrange(0, 450)
        for category in rng.sample(categories, 2):
            assert category_values(category, view, POPULAR, now, CFG, prices) == _uncached(
                view, category, now
            ), (step, category)


def test_a_change_in_one_category_keeps_the_cached_values_of_another(monkeypatch) -> None:
    view = _catalog(("a", "c", 10.0, 5, 0.0), ("b", "c", 20.0, 5, 0.0), ("x", "other", 5.0, 5, 0.0))
    prices = CategoryPrices()
    computed: list[str] = []
    compute = discovery._category_terms

    def counted(category, catalog, now, config):  # type: ignore[no-untyped-def]
        computed.append(category)
        return compute(category, catalog, now, config)

    monkeypatch.setattr(discovery, "_category_terms", counted)
    category_values("c", view, POPULAR, T0, CFG, prices)
    for k in range(5):  # stock moving in another category, as a busy shop's catalog does
        view.put(
            CatalogUpdate(item_id="x", title="x", category="other", price=5.0, stock=k, updated_at=T0 + k)
        )
        category_values("c", view, POPULAR, T0 + 10, CFG, prices)
    assert computed == ["c"]
    view.put(CatalogUpdate(item_id="x", title="x", category="c", price=5.0, stock=3, updated_at=T0 + 20))
    cached = category_values("c", view, POPULAR, T0 + 30, CFG, prices)
    assert computed == ["c", "c"]  # x joined c: computed again
    assert cached == _uncached(view, "c", T0 + 30) and "x" in [item for _, item in cached]


def _every_item_valued(
    engagement: Engagement,
    counts: dict[str, int],
    view: CatalogView,
    popularity: PopularityAt,
    now: float,
    cfg: PolicyConfig,
) -> list[tuple[str, float]]:
    """The pool as its definition says: every unengaged item of every category valued, sorted, cut."""
    top = max(counts.values())
    scored = []
    for category in sorted(counts):
        share = cfg.discovery_category_weight * math.log(counts[category] / top)
        values = category_values(category, view, popularity, now, cfg)
        scored += [(value + share, item) for value, item in values if engagement.get(item) is None]
    scored.sort(key=lambda vi: (-vi[0], vi[1]))
    return [(item, discovery_interest(value)) for value, item in scored[: cfg.discovery_items]]


def _ulps_above(x: float, n: int) -> float:
    for _ in range(n):
        x = math.nextafter(x, math.inf)
    return x


def test_the_pool_values_only_what_can_reach_it_and_gives_the_same_bits_as_valuing_everything() -> None:
    """Uncounted items are taken in catalog-value order, only the first few of each category (and
    those tying the last taken): the pool must be that of every item valued, to the last bit, with
    engaged and counted items among the best, ties in value (equal prices) and the category weight."""
    rng = random.Random(11)
    for trial in range(200):
        n_categories = rng.randint(1, 4)
        view = _catalog(
            *[
                (
                    f"i{k:03d}",
                    f"c{rng.randrange(n_categories)}",
                    # Many ties, and near-ties that adding the category's weight rounds into ties.
                    _ulps_above(rng.choice([10.0, 20.0, 20.0, 80.0, 80.0]), rng.choice([0, 0, 1, 2])),
                    rng.choice([0, 3, 3, 3]),
                    rng.choice([0.0, 0.0, 0.1, 0.25, 0.5]),
                )
                for k in range(rng.randint(1, 120))
            ]
        )
        items = [f"i{k:03d}" for k in range(120)]
        popular = PopularityAt({i: rng.choice([0.5, 2.0, 9.0]) for i in rng.sample(items, 15)}, 0.7)
        engagement = _seen(*rng.sample(items, rng.randint(0, 25)))
        counts = {f"c{c}": rng.randint(1, 4) for c in range(n_categories) if rng.random() < 0.8} or {"c0": 1}
        cfg = CFG.model_copy(
            update={
                "discovery_items": rng.choice([1, 3, 10]),
                "discovery_category_weight": rng.choice([0.0, 2.0, 2.0]),
            }
        )
        expected = _every_item_valued(engagement, counts, view, popular, T0, cfg)
        moments: dict = {}
        prices = CategoryPrices()
        assert discovery_pool(engagement, counts, view, popular, T0, cfg, moments, prices) == expected, trial
        # A second shopper of the same moment reads the first one's categories from the caches.
        other = _seen(*rng.sample(items, 5))
        assert discovery_pool(other, counts, view, popular, T0, cfg, moments, prices) == _every_item_valued(
            other, counts, view, popular, T0, cfg
        )


def test_an_item_that_ties_the_last_taken_only_after_the_category_weight_is_still_ranked_by_id() -> None:
    """Two uncounted items whose catalog values differ in the last bit tie once the category's weight is
    added: the pool must break the tie by id, as valuing every item does, so the item ranked second by
    catalog value alone is still taken when its id comes first."""
    view = _catalog(
        *[(f"m{k}", "c", 20.0, 5, 0.0) for k in range(4)],  # engaged: they only set the median, 20
        ("b", "c", _ulps_above(80.0, 2), 5, 0.0),
        ("a", "c", _ulps_above(80.0, 4), 5, 0.0),
        ("t", "top", 50.0, 5, 0.0),
    )
    cfg = CFG.model_copy(update={"discovery_items": 1, "discovery_category_weight": 2.0})
    none = PopularityAt({}, 1.0)
    engagement = _seen("m0", "m1", "m2", "m3", "t")
    values = dict((item, value) for value, item in category_values("c", view, none, T0, cfg))
    assert values["b"] > values["a"]  # b first by catalog value alone
    share = 2.0 * math.log(1 / 3)
    assert values["b"] + share == values["a"] + share  # a tie once weighted: a by id
    counts = {"c": 1, "top": 3}
    expected = _every_item_valued(engagement, counts, view, none, T0, cfg)
    assert [item for item, _ in expected] == ["a"]
    assert discovery_pool(engagement, counts, view, none, T0, cfg) == expected


def test_a_categorys_counted_items_follow_the_counters_keys_through_prunes_and_restores() -> None:
    """``CategoryTerms.counted_in`` brings a set up to date from the items the counter added since it
    was taken, not by intersecting again: at every moment it must be the intersection, for each of
    several partitions' counters read in turn, across prunes (a new key epoch) and a restore."""
    rng = random.Random(3)
    view = _catalog(*[(f"i{k:03d}", f"c{k % 3}", 10.0 + k, 5, 0.0) for k in range(90)])
    prices = CategoryPrices()
    counters = [TrendingItems(max_items=20) for _ in range(3)]  # pruned past 25 items
    ts = T0
    for step in range(3000):
        counter = rng.choice(counters)
        item = f"i{rng.randrange(120):03d}"  # a third of them in no category of the catalog
        counter.observe(item, rng.choice(["view", "view", "add_to_cart"]), ts)
        ts += rng.random()
        if step % 500 == 499:  # rebuilt from rows of another moment (some of its items not in them)
            data = counter.to_dict()
            counter.restore(data["cache"], [(item, n) for item, n in data["counts"] if rng.random() < 0.5])
        reader = rng.choice(counters)
        popularity = reader.popularity_at(ts)
        terms = prices.terms(f"c{rng.randrange(3)}", view, T0, CFG)
        assert terms.counted_in(popularity) == popularity.counts.keys() & set(terms.items), step

"""Candidate sources: engagement, co-visitation, promotions, trending (bounded), and their merge."""

from __future__ import annotations

import json
import random

from stream.candidates import PromotionBoard, gather_candidates
from stream.contract import Promotion
from stream.covisitation import CoVisitationIndex
from stream.engagement import Engagement
from stream.trending import TrendingItems
from tests.policy.conftest import T0, catalog, config

HOUR = 3600.0


def test_engagement_tracks_views_carts_and_purchases():
    e = Engagement(max_items=3)
    for kind, item in [
        ("view", "a"),
        ("view", "a"),
        ("view", "b"),
        ("add_to_cart", "b"),
        ("view", "c"),
        ("purchase", "c"),
        ("search", None),
    ]:
        e.observe(kind, item, T0)
    assert e.engaged() == ["b", "a"] and e.bought() == {"c"}
    assert e.get("a").views == 2 and e.get("b").in_cart
    e.observe("remove_from_cart", "b", T0 + 1)
    assert not e.get("b").in_cart
    e.observe("view", "d", T0 + 2)  # the least recent item goes beyond max_items
    assert list(e.items) == ["c", "b", "d"] and e.recent(2) == ["d", "b"]
    restored = Engagement.from_dict(json.loads(json.dumps(e.to_dict())), max_items=3)
    assert restored.to_dict() == e.to_dict() and restored.last_ts == T0 + 2


def test_a_purchase_outlives_its_place_among_the_recent_items():
    e = Engagement(max_items=2, max_purchases=2)
    e.observe("purchase", "coat", T0)
    e.observe("view", "hat", T0 + 1)
    e.observe("view", "scarf", T0 + 2)  # the coat leaves the recent items, its purchase stays
    assert list(e.items) == ["hat", "scarf"] and e.get("coat") is None
    assert e.knows("coat") and e.bought() == {"coat"} and not e.knows("boots")
    assert e.to_dict()["p"] == ["coat"]
    # Viewed again, it is among the recent items once more, still bought (not an abandoned view).
    e.observe("view", "coat", T0 + 3)
    assert e.get("coat").bought and e.earlier_purchases == {} and "coat" not in e.engaged()
    assert e.bought() == {"coat"}
    # Bounded: the oldest forgotten purchase goes first.
    for k, item in enumerate(["a", "b", "c", "d", "e"]):
        e.observe("purchase", item, T0 + 10 + k)
    assert list(e.items) == ["d", "e"] and list(e.earlier_purchases) == ["b", "c"]
    restored = Engagement.from_dict(json.loads(json.dumps(e.to_dict())), max_items=2, max_purchases=2)
    assert restored.to_dict() == e.to_dict() and restored.bought() == {"b", "c", "d", "e"}
    # A lower limit on load trims both; 0 keeps no purchase beyond the recent items; a record from
    # before the field has none.
    smaller = Engagement.from_dict(e.to_dict(), max_items=1, max_purchases=1)
    assert list(smaller.items) == ["e"] and list(smaller.earlier_purchases) == ["d"]
    assert Engagement.from_dict(e.to_dict(), max_items=2, max_purchases=0).bought() == {"d", "e"}
    old = {k: v for k, v in e.to_dict().items() if k != "p"}
    assert Engagement.from_dict(old, max_items=2).earlier_purchases == {}
    assert "p" not in Engagement(2).to_dict()


def test_covisitation_ranks_by_decayed_counts():
    index = CoVisitationIndex(top_n=3, max_items=100, half_life_seconds=HOUR)
    # "old" co-occurs with "a" twice long ago, "new" once recently: decay makes the recent one win.
    index.observe("a", ["old"], T0)
    index.observe("a", ["old"], T0)
    index.observe("a", ["new"], T0 + 5 * HOUR)
    ranked = index.neighbours("a", T0 + 5 * HOUR)
    assert [k for k, _ in ranked] == ["new", "old"]
    assert abs(ranked[0][1] - 1.0) < 1e-9 and abs(ranked[1][1] - 2.0 / 32) < 1e-9
    assert index.neighbours("new", T0 + 5 * HOUR)[0][0] == "a"  # both directions
    assert index.similarity("a", "new") == 1.0 and index.similarity("a", "zzz") == 0.0
    related = index.related(["a"], T0 + 5 * HOUR, 5, exclude=["old"])
    assert [k for k, _ in related] == ["new"]


def test_covisitation_memory_is_bounded():
    index = CoVisitationIndex(top_n=4, max_items=50, half_life_seconds=HOUR)
    for n in range(5000):
        index.observe(f"i{n % 700}", [f"i{(n * 7) % 700}", f"i{(n * 13) % 700}", f"i{n % 11}"], T0 + n)
    assert len(index) <= 50
    assert index.entries() <= 50 * 2 * 4
    assert all(len(index.neighbours(f"i{n}", T0 + 5000)) <= 4 for n in range(700))


def test_covisitation_survives_long_runs_and_round_trips():
    index = CoVisitationIndex(top_n=2, max_items=10, half_life_seconds=60.0)
    for n in range(200):  # 200 half-lives: the landmark must move without overflow
        index.observe("a", ["b" if n % 2 else "c"], T0 + 60.0 * n)
    ranked = index.neighbours("a", T0 + 60.0 * 199)
    assert ranked[0] == ("b", ranked[0][1]) and 1.0 <= ranked[0][1] < 2.0
    copy = CoVisitationIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert copy.neighbours("a", T0 + 60.0 * 199) == ranked


class _RanksEverything(TrendingItems):
    """The top list ranked over every item each time (what the incremental ranking must equal)."""

    def _refresh(self, k: int) -> list[str]:
        self._rank_all = True
        return super()._refresh(k)


def test_trending_ranks_only_the_last_list_and_what_moved_and_gets_the_same_list() -> None:
    """The top list is re-ranked from the last list and the items counted since; it must be the list
    of ranking every item: across prunes, rescales of the counts (the landmark moving), ties in
    count, equal weights, and a restore from the stored rows in the middle."""
    rng = random.Random(4)
    kinds = ["view", "view", "view", "add_to_cart", "purchase"]
    incremental = TrendingItems(max_items=300, half_life_seconds=HOUR, refresh_seconds=5.0)
    reference = _RanksEverything(max_items=300, half_life_seconds=HOUR, refresh_seconds=5.0)
    ts = T0
    for n in range(6000):
        # Mostly seconds apart, now and then days (rescales: the landmark moves past 60 half-lives).
        ts += rng.choice([0.0, 1.0, 2.0, 3.0]) if rng.random() > 0.002 else 70 * HOUR
        item = f"i{min(int(rng.paretovariate(0.6)), 900)}"
        kind = rng.choice(kinds)
        incremental.observe(item, kind, ts)
        reference.observe(item, kind, ts)
        assert incremental.top(64, ts) == reference.top(64, ts), n
        if n == 3000:  # restored from its stored form, as a worker rebuilds a partition
            incremental = TrendingItems.from_dict(json.loads(json.dumps(incremental.to_dict())))


def test_trending_decays_prunes_and_caches():
    trending = TrendingItems(max_items=100, half_life_seconds=HOUR, refresh_seconds=30.0)
    for n in range(1000):
        # The top list is re-ranked on every observation until it holds 64 items (T0 + 63), then once
        # both 30 s of event time and 32 observations have passed: T0 + 95, ..., T0 + 991.
        trending.observe(f"i{n}", "view", T0 + n)
    assert len(trending) <= 125
    assert trending.top(1, T0 + 999) == ["i991"]
    trending.observe("hot", "add_to_cart", T0 + 1000)  # 9 observations since the last ranking
    for k in range(22):
        trending.observe("hot", "view", T0 + 1001 + k)  # 31: not yet
    assert trending.top(1, T0 + 1022) == ["i991"]
    trending.observe("hot", "purchase", T0 + 1023)  # the 32nd, 32 s later: ranked, this one counted
    assert trending.top(1, T0 + 1023) == ["hot"]
    for _ in range(10):
        trending.observe("hotter", "purchase", T0 + 1024)
    assert trending.top(1, T0 + 1030) == ["hot"]  # cached
    assert trending.top(1, T0 + 5000) == ["hot"]  # reads never refresh: only observations do
    assert trending.top(100, T0 + 1030)[0] == "hotter"  # more than the cache holds: ranked on the spot
    for k in range(22):
        trending.observe(f"x{k}", "view", T0 + 1060)
    assert trending.top(1, T0 + 1060) == ["hotter"]
    at = T0 + 1023 + HOUR
    expected = (
        3 * 2 ** (-(at - T0 - 1000) / HOUR)
        + sum(2 ** (-(at - T0 - 1001 - k) / HOUR) for k in range(22))
        + 5 * 2 ** (-(at - T0 - 1023) / HOUR)
    )
    assert abs(trending.score("hot", at) - expected) < 1e-9
    trending.observe("y", "search", T0)  # not counted
    assert trending.score("y", T0) == 0.0
    copy = TrendingItems.from_dict(json.loads(json.dumps(trending.to_dict())))
    assert copy.top(3, T0 + 2000) == trending.top(3, T0 + 2000)
    # Many scores at once are the scores one by one, to the bit (the decay computed once), whenever
    # they are read: before the landmark, long after it (decayed to nothing) and without one.
    items = ["hot", "hotter", "y", "i991", "never"]
    for at in (T0 - HOUR, T0 + 1030, T0 + 3000 * HOUR):
        assert trending.scores(items, at) == [trending.score(i, at) for i in items]
    assert TrendingItems().scores(items, T0) == [0.0] * 5


def test_promotion_board_answers_active_promotions_deepest_first():
    board = PromotionBoard()
    board.update(
        catalog("a", promotion=Promotion(promotion_id="p", discount=0.1, starts_at=T0, ends_at=T0 + 10))
    )
    board.update(
        catalog("b", promotion=Promotion(promotion_id="q", discount=0.5, starts_at=T0, ends_at=T0 + 10))
    )
    board.update(
        catalog("c", promotion=Promotion(promotion_id="r", discount=0.3, starts_at=T0 + 5, ends_at=T0 + 9))
    )
    assert board.active(T0, 5) == ["b", "a"]
    assert board.active(T0 + 6, 2) == ["b", "c"]
    board.update(catalog("b"))  # promotion removed
    board.update(
        catalog(
            "a", stock=0, promotion=Promotion(promotion_id="p", discount=0.1, starts_at=T0, ends_at=T0 + 10)
        )
    )
    assert board.active(T0 + 6, 5) == ["c"] and len(board) == 1


def test_gather_merges_sources_with_quotas():
    cfg = config(
        max_candidates=6,
        quota_engaged=2,
        quota_covisited=2,
        quota_promoted=1,
        quota_trending=3,
        trending_min_history=3,
    )
    e = Engagement()
    for item in ("v1", "v2", "v3"):
        e.observe("view", item, T0)
    e.observe("purchase", "bought", T0)
    covis = CoVisitationIndex()
    covis.observe("v3", ["n1", "n2", "v1", "bought", "n3"], T0)
    board = PromotionBoard()
    board.update(
        catalog(
            "promo", promotion=Promotion(promotion_id="p", discount=0.2, starts_at=T0 - 1, ends_at=T0 + 99)
        )
    )
    trending = TrendingItems()
    for item in ("t1", "t2", "promo", "bought"):
        trending.observe(item, "purchase", T0)
    got = gather_candidates(e, covis, board, trending, T0, cfg)
    sources = [(c.item_id, c.source) for c in got]
    assert sources[:2] == [("v3", "engaged"), ("v2", "engaged")]
    assert [s for _, s in sources[2:4]] == ["covisited", "covisited"]
    assert all(i not in ("v1", "v2", "v3", "bought") for i, s in sources if s == "covisited")
    assert ("promo", "promoted") in sources
    assert not any(s == "trending" for _, s in sources)  # three engaged items: enough history
    assert len(got) <= 6 and len({c.item_id for c in got}) == len(got)

    newcomer = Engagement()
    newcomer.observe("view", "v1", T0)
    got = gather_candidates(newcomer, CoVisitationIndex(), PromotionBoard(), trending, T0, cfg)
    assert [(c.item_id, c.source) for c in got][0] == ("v1", "engaged")
    assert len([c for c in got if c.source == "trending"]) == 3  # the quota
    wide = config(quota_trending=4)
    got = gather_candidates(newcomer, CoVisitationIndex(), PromotionBoard(), trending, T0, wide)
    # Bought by someone else, not by this user: still a candidate.
    assert {c.item_id for c in got if c.source == "trending"} == {"t1", "t2", "promo", "bought"}
    assert gather_candidates(
        newcomer, CoVisitationIndex(), PromotionBoard(), trending, T0, wide, exclude=["t1"]
    )[1:] == [c for c in got[1:] if c.item_id != "t1"]

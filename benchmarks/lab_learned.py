"""The policy lab's learned discovery ranking: weights a shop could fit on its own behaviour data.

:class:`LearnedDiscoveryPusher` ranks :class:`benchmarks.lab_pushers.ValueDiscoveryPusher`'s candidates
(popular unengaged items of the shopper's recent categories) like it, but with weights learned online
instead of the simulator's coefficients: the check that an observable discovery ranking survives being
learned, before it is built into the engine.

:class:`TitleTasteDiscoveryPusher` adds the shopper's taste as their engaged items' titles show it
(a content profile: tf-idf of title words), the observable stand-in for the taste term the utility
oracles find decisive (``benchmarks/lab_oracles.py``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.lab_pushers import LabCandidate, ValueDiscoveryPusher
from stream.contract import CatalogUpdate, Event


class LearnedDiscoveryPusher(ValueDiscoveryPusher):
    """:class:`ValueDiscoveryPusher`'s candidates ranked by weights learned from the shop's own behaviour.

    Features of an item for a shopper: log popularity, discount, log price relative to the category's
    median, the log share of the category in the shopper's history, and whether it is one of their
    recent categories. The weights start at popularity alone and learn online, pairwise: each time a
    shopper views an item they had not engaged with (an organic discovery), that item should score
    above an item of the same category drawn by the event id's hash (logistic loss, step ``rate``).
    Nothing is read from the simulator's coefficients: this is what a shop could fit on its own data.
    """

    rate = 0.05

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.weights = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
        self.categories: dict[str, dict[str, float]] = {}  # user -> category -> engaged items
        self.in_category: dict[str, list[str]] = {}
        self.updates = 0

    def observe_catalog(self, update: CatalogUpdate) -> None:
        if update.item_id not in self.catalog:
            self.in_category.setdefault(update.category, []).append(update.item_id)
        super().observe_catalog(update)

    def features(self, user_id: str, item_id: str, now: float, recent: set[str]) -> np.ndarray:
        """The item's features for the shopper at ``now`` (see the class docstring)."""
        entry = self.catalog[item_id]
        score, at = self.popularity.get(item_id, (0.0, now))
        popularity = score * 0.5 ** (max(0.0, now - at) / self.half_life)
        promo = entry.promotion
        discount = promo.discount if promo is not None and promo.active_at(now) else 0.0
        relative = max(entry.effective_price(now), 0.01) / self.median_prices(now)[entry.category]
        mine = self.categories.get(user_id, {})
        share = (mine.get(entry.category, 0.0) + 0.5) / (sum(mine.values()) + 0.5 * max(len(mine), 1))
        return np.array(
            [
                math.log1p(popularity),
                discount,
                math.log(relative),
                math.log(share),
                float(entry.category in recent),
            ]
        )

    def observe_event(self, event: Event) -> None:
        user, item = event.user_id, event.item_id
        engaged = self.engaged.get(user, set())
        if event.type == "view" and item in self.catalog and item not in engaged and user in self.categories:
            assert item is not None
            pool = self.in_category[self.catalog[item].category]
            digest = hashlib.blake2b(event.event_id.encode("utf-8"), digest_size=8).digest()
            other = pool[int.from_bytes(digest, "big") % len(pool)]
            if other != item and other not in engaged:
                recent = self.recent_categories(user)
                diff = self.features(user, item, event.ts, recent) - self.features(
                    user, other, event.ts, recent
                )
                margin = float(self.weights @ diff)
                self.weights += self.rate * diff / (1.0 + math.exp(margin))
                self.updates += 1
        super().observe_event(event)
        if event.type in ("view", "add_to_cart", "purchase") and item in self.catalog:
            assert item is not None
            mine = self.categories.setdefault(user, {})
            category = self.catalog[item].category
            mine[category] = mine.get(category, 0.0) + 1.0

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        recent = self.recent_categories(user_id)
        return [
            LabCandidate(
                c.item_id, c.trigger, float(self.weights @ self.features(user_id, c.item_id, now, recent))
            )
            for c in super().candidates(user_id, now)
        ]


TITLE_WEIGHTS = {"view": 1.0, "add_to_cart": 3.0, "purchase": 3.0}


class TitleTasteDiscoveryPusher(ValueDiscoveryPusher):
    """:class:`ValueDiscoveryPusher`'s value plus ``weight`` x the cosine between the shopper's title
    profile and the item's title.

    The profile: the words of the titles of the items the shopper viewed (1), carted or bought (3),
    each weighted by its inverse document frequency over the catalog (a brand or a category name says
    less than a rare adjective); an item is the idf vector of its title's words. In the simulated shop
    a title names the item's brand, category and strongest latent direction (``docs/simulator.md``),
    the kind of attribute (colour, cut, style) a real title carries.
    """

    weight = 4.0

    def __init__(self, holdout: Callable[[str], bool], **kwargs: Any) -> None:
        super().__init__(holdout, **kwargs)
        self.words: dict[str, tuple[str, ...]] = {}  # item -> its title's distinct words
        self.items_with: dict[str, int] = {}  # word -> items whose title has it
        self.profile: dict[str, dict[str, float]] = {}  # user -> word -> weight

    def observe_catalog(self, update: CatalogUpdate) -> None:
        if update.item_id not in self.words:
            words = tuple(sorted(set(update.title.lower().split())))
            self.words[update.item_id] = words
            for w in words:
                self.items_with[w] = self.items_with.get(w, 0) + 1
        super().observe_catalog(update)

    def idf(self, word: str) -> float:
        """log(items / items whose title has ``word``)."""
        return math.log(len(self.words) / self.items_with.get(word, 1))

    def observe_event(self, event: Event) -> None:
        super().observe_event(event)
        weight = TITLE_WEIGHTS.get(event.type)
        if weight is None or event.item_id is None:
            return
        profile = self.profile.setdefault(event.user_id, {})
        for w in self.words.get(event.item_id, ()):
            profile[w] = profile.get(w, 0.0) + weight

    def candidates(self, user_id: str, now: float) -> list[LabCandidate]:
        pool = super().candidates(user_id, now)
        profile = self.profile.get(user_id)
        if not pool or not profile:
            return pool
        norm = math.sqrt(sum((v * self.idf(w)) ** 2 for w, v in profile.items()))
        out = []
        for c in pool:
            words = self.words.get(c.item_id, ())
            item_norm = math.sqrt(sum(self.idf(w) ** 2 for w in words))
            dot = sum(profile.get(w, 0.0) * self.idf(w) ** 2 for w in words)
            cosine = dot / (norm * item_norm) if norm > 0 and item_norm > 0 else 0.0
            out.append(LabCandidate(c.item_id, c.trigger, c.value + self.weight * cosine))
        return out

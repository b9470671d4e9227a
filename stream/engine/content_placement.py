"""The engine's items placed from their content: model swaps, the waiting items, warm-up.

A model that maps catalog content places items it has no history for (``stream.content_items``).
:class:`ContentPlacementMixin` gives :class:`stream.engine.core.Engine` what follows from that: a model
swap (the new model knows none of the items the old one placed), the catalogued items still waiting
for a place (a few per tick), and which items the model warms up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stream.catalog_view import CatalogView
from stream.content_items import (
    ContentScorer,
    Unplaced,
    content_scorer,
    placed_from_content,
    warms_up,
)
from stream.engine.catalog_asks import CatalogAsks
from stream.engine.ports import Scorer
from stream.new_items import NewItems
from stream.outcome import Outcome
from stream.scoring import AskScorer
from stream.settings import Settings

# Titles one call of the preparation encodes: 0.1-0.5 s of a thread, so a model swap or a shutdown
# is never kept waiting long for it.
PREPARE_TITLES = 16


class ContentPlacementMixin:
    """Engine mixin: :meth:`swap_model`, and the items placed from their content."""

    # What it uses of the engine (stream.engine.core.Engine): its attributes and methods.
    settings: Settings
    scorer: Scorer
    scoring: AskScorer
    catalog: CatalogView
    catalog_asks: CatalogAsks
    new_items: NewItems
    unplaced: Unplaced
    _content: ContentScorer | None

    def swap_model(self, scorer: Scorer) -> None:
        """Serve a new model from the next batch on; states re-derive lazily (``UserRecords.sync_model``)."""
        self.scorer = scorer
        self.scoring.scorer = scorer
        self._content = content_scorer(scorer)
        self.catalog_asks.forget_pools()
        # The new model knows none of the items the old one placed from their content.
        self.new_items.clear()
        self.unplaced.clear()
        self.unplaced.offer(
            self._content, (u for item in list(self.catalog.items()) if (u := self.catalog.latest(item)))
        )
        self._place_waiting(Outcome())

    def _warm_items(self, items: Sequence[str]) -> list[str]:
        """The content-placed items among ``items`` when the model warms them up (``model.warmup``)."""
        content = self._content
        if content is None or not items or not warms_up(self.scorer):
            return []
        indices = content.item_indices(items)
        return [item for item, index in zip(items, indices, strict=True) if index >= content.n_artifact_items]

    def _place_waiting(self, out: Outcome) -> None:
        """Place up to ``model.content_items_per_tick`` waiting items; file them as new items."""
        placed = self.unplaced.place_some(self._content, self.settings.model.content_items_per_tick)
        for update in placed:
            if placed_from_content(self._content, update.item_id):
                self.new_items.add(update)
                out.content_items_added += 1

    def content_preparation(self) -> Callable[[], int] | None:
        """Work for another thread: encode the titles of the items placed next (the next two ticks'
        worth, ``model.content_items_per_tick`` each), :data:`PREPARE_TITLES` at a time; None when
        there is nothing to encode (``stream.content_items.Unplaced.preparation``)."""
        ahead = 2 * self.settings.model.content_items_per_tick
        return self.unplaced.preparation(self._content, ahead, PREPARE_TITLES)

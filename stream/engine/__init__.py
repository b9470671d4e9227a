"""The decision core of the worker: events in, user state advanced, pushes out. No Kafka here.

One module per part of a batch: :mod:`stream.engine.core` (the :class:`Engine`: batches, clocks,
catalog updates, the periodic tick), its mixins :mod:`stream.engine.due_timers` (due timers),
:mod:`stream.engine.throttling` (the push throttle), :mod:`stream.engine.catalog_flow` (catalog
announcements), :mod:`stream.engine.content_placement` (model swaps, items placed from their content)
and :mod:`stream.engine.partitions` (recovery, adoption, release, applied offsets),
:mod:`stream.engine.intake` (pass 1: one event's bookkeeping and in-session ask),
:mod:`stream.engine.rounds` (pass 2: GRU steps in rounds and the decisions behind them),
:mod:`stream.engine.catalog_asks` (a catalog change's asks), :mod:`stream.engine.users` (user
records: load, save, expiry, erasure) and :mod:`stream.engine.ports` (what the engine needs from the
model and the store).
"""

from stream.engine.catalog_flow import CatalogFailure
from stream.engine.core import Engine
from stream.engine.ports import PartitionRows, Scorer, StateAccess
from stream.engine.users import TYPE_INDEX
from stream.outcome import Inbound, Outcome, refused

__all__ = [
    "TYPE_INDEX",
    "CatalogFailure",
    "Engine",
    "Inbound",
    "Outcome",
    "PartitionRows",
    "Scorer",
    "StateAccess",
    "refused",
]

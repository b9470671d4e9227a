"""The worker's garbage-collector settings: fewer young collections, start-up objects left unscanned.

Python frees almost every object the engine makes per event by reference counting; its cyclic
collector still runs a young collection every 700 container allocations and, now and then, a full
one that walks every live object: torch's, pydantic's and faust's modules, the model, the catalog
view. In the engine those scans were a fifth of the time per event (``benchmarks/stream_throughput.py
--engine-only``, see ``docs/operations.md``). So the worker raises the young threshold
(``worker.gc_young_threshold``) and, once the model and the catalog are loaded, freezes what exists
(``gc.freeze``: moved to a permanent generation that collections skip). Cycles are still collected,
only less often; the objects frozen are the ones that live as long as the process anyway.
"""

from __future__ import annotations

import gc


def configure(young_threshold: int) -> None:
    """Set the young generation's threshold (0 leaves Python's default); older ones keep theirs."""
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


def freeze_long_lived(enabled: bool = True) -> int:
    """Freeze every object alive now; returns how many are frozen.

    What was frozen before is thawed and collected first: a model replaced since the last freeze
    would otherwise keep any reference cycles of its own forever. Called at start-up and after a model
    is adopted; the full collection it runs takes a fraction of a second, once per call.
    """
    if not enabled:
        return 0
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()

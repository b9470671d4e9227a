"""What the engine needs from the model and from the state store, as protocols (no Kafka, no torch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np


class Scorer(Protocol):
    """What the engine needs from a model (``model.scorer.IncrementalScorer`` provides it).

    Row by row: a row's step, scores and interest must not depend on the other rows of the call (the
    engine steps and scores any number of users at once; ``stream.scoring``).
    """

    version: str
    hidden_size: int

    def initial_state(self, n: int) -> np.ndarray: ...
    def item_indices(self, item_ids: Sequence[str]) -> np.ndarray: ...
    def step(self, states: np.ndarray, items: np.ndarray, event_types: np.ndarray) -> np.ndarray: ...
    def score(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def stack_states(self, states: list[np.ndarray | None]) -> np.ndarray:
        """Users' states as the rows of one (B, H) array, the initial state for None (a model can do it
        faster)."""
        init = self.initial_state(1)[0]
        rows = [init if s is None else s for s in states]
        return np.stack(rows) if rows else self.initial_state(0)

    def interest(self, states: np.ndarray, candidates: np.ndarray) -> np.ndarray: ...

    def score_and_interest(
        self, states: np.ndarray, candidates: np.ndarray, lift: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both at once; a model can override this to compute the candidate scores once.

        ``lift`` (B, C) is added to the raw scores before calibration; only a model with a stream
        warm-up (``warmup_gamma`` or ``warmup_offset`` > 0) is ever given one.
        """
        if lift is not None:
            raise NotImplementedError("this model has no stream warm-up")
        return self.score(states, candidates), self.interest(states, candidates)


class PartitionRows(Protocol):
    """A partition's stored rows (``stream.store.PartitionStore`` provides it)."""

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...
    def partition_rows(self) -> Iterable[tuple[bytes, bytes]]: ...


class StateAccess(Protocol):
    """Read and stage user state records (``stream.store.Transaction`` provides it)."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...
    def put(self, partition: int, key: bytes, value: bytes | None) -> None: ...

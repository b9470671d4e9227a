"""Outcome learning that a replay repeats exactly: estimates change only between learning epochs.

Decisions read :class:`~stream.response_estimates.ResponseEstimates`, and decisions (pushes, ghosts)
and attributed purchases update them. Updated as they happen, the estimates a decision reads would
depend on how the stream was cut into batches: the engine decides a batch's users in rounds, not in
stream order, so a decision could see an update from an input that came after it. Instead, every
update made during the current **learning epoch** (``learning_epoch_seconds`` of the partition's
event-time clock) waits in a pending list, in stream order, and decisions read the estimates as they
were when the epoch began. When the partition's clock enters a new epoch, the engine first finishes
the work before that input (as it does for an erasure) and then folds the pending updates in, in
stream order. Where a batch is cut changes nothing: the same inputs give the same estimates, bit for
bit. Learning is therefore up to one epoch late, which is nothing next to how slowly conversion rates
move.

Persistence: the pending updates are rows of their own (``\\x00rq<epoch><n>``), written once and
deleted when folded, so the changelog carries one small row per update, never a growing list.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from stream.encoding import compact_json
from stream.policy_config import PolicyConfig
from stream.response_estimates import ResponseEstimates

log = logging.getLogger(__name__)

PENDING_PREFIX = b"\x00rq"  # inside the response estimates' \x00r prefix: one partition-row family
EPOCH_ROW = b"\x00rq"  # the current epoch (the prefix alone)

# Update kinds, in the order of ResponseEstimates' record_* methods.
KINDS = ("push", "conversion", "ghost", "ghost_conversion")


@dataclass(frozen=True)
class Update:
    """One change to the estimates: a decision (push, ghost) or an attributed purchase."""

    kind: str  # one of KINDS
    context: str
    at: float  # the decision's time (for conversions: when the push or ghost was decided)
    revenue: float = 0.0

    def to_list(self) -> list[object]:
        """Compact JSON-able form."""
        return [self.kind, self.context, self.at, self.revenue]


@dataclass
class EpochLearner:
    """A partition's outcome estimates, read as of the epoch start; updates folded in at the next."""

    estimates: ResponseEstimates
    epoch_seconds: float = 3600.0
    epoch: int | None = None
    pending: list[Update] = field(default_factory=list)
    _batch: list[tuple[int, Update]] = field(default_factory=list)
    _writes: dict[bytes, bytes | None] = field(default_factory=dict)

    @classmethod
    def empty(cls, config: PolicyConfig) -> EpochLearner:
        """No history."""
        return cls(ResponseEstimates.empty(config), config.learning_epoch_seconds)

    def epoch_of(self, ts: float) -> int:
        """The learning epoch an event time falls in."""
        return math.floor(ts / self.epoch_seconds)

    def enters_new_epoch(self, ts: float) -> bool:
        """Whether moving the clock to ``ts`` starts a later epoch.

        Then the caller finishes the work before the input first, even with nothing pending yet: that
        work's decisions make updates of the old epoch.
        """
        return self.epoch is not None and self.epoch_of(ts) > self.epoch

    def add(self, seq: int, update: Update) -> None:
        """Queue an update made by the decision or input with stream sequence ``seq`` (this batch)."""
        self._batch.append((seq, update))

    def close_batch(self) -> None:
        """The batch's decisions are done: its updates join the pending list in stream order."""
        if not self._batch:
            return
        self._batch.sort(key=lambda pair: pair[0])
        epoch = self.epoch if self.epoch is not None else 0
        for _, update in self._batch:
            key = PENDING_PREFIX + f"{epoch:012x}{len(self.pending):08x}".encode()
            self.pending.append(update)
            self._writes[key] = compact_json(update.to_list())
        self._batch.clear()

    def advance(self, ts: float) -> None:
        """The partition's clock moved to ``ts``: on entering a new epoch, fold the pending updates in.

        The caller has finished (and closed) the work before the input that moved the clock.
        """
        epoch = self.epoch_of(ts)
        if self.epoch is not None and epoch <= self.epoch:
            return
        self.close_batch()
        old = self.epoch if self.epoch is not None else 0
        for n, update in enumerate(self.pending):
            self._apply(update)
            self._writes[PENDING_PREFIX + f"{old:012x}{n:08x}".encode()] = None
        self.pending = []
        self.epoch = epoch
        self._writes[EPOCH_ROW] = json.dumps(epoch).encode()

    def _apply(self, update: Update) -> None:
        e = self.estimates
        if update.kind == "push":
            e.record_push(update.context, update.at)
        elif update.kind == "conversion":
            e.record_conversion(update.context, update.at, update.revenue)
        elif update.kind == "ghost":
            e.record_ghost(update.context, update.at)
        else:
            e.record_ghost_conversion(update.context, update.at, update.revenue)

    # -- persistence ----------------------------------------------------------------------------

    def drain(self) -> dict[bytes, bytes | None]:
        """Rows changed since the last drain (the estimates', the pending updates', the epoch)."""
        self.close_batch()
        writes = self.estimates.drain()
        writes.update(self._writes)
        self._writes = {}
        return writes

    def load(self, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """Restore from stored rows (the estimates' rows and this module's)."""
        own: list[tuple[bytes, bytes]] = []
        theirs: list[tuple[bytes, bytes]] = []
        for key, raw in rows:
            (own if key.startswith(PENDING_PREFIX) else theirs).append((key, raw))
        self.estimates.load(theirs)
        self.pending = []
        self.epoch = None
        for key, raw in sorted(own):
            if key == EPOCH_ROW:
                self.epoch = int(json.loads(raw))
                continue
            try:
                kind, ctx, at, revenue = json.loads(raw)
                self.pending.append(Update(str(kind), str(ctx), float(at), float(revenue)))
            except (ValueError, TypeError) as exc:  # one damaged update is lost alone, not all of them
                log.warning("pending outcome row %r does not decode, skipped: %s", key[:80], exc)
        self._batch.clear()
        self._writes = {}

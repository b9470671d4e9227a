"""Consumer lag per owned partition, published to ``kairos_consumer_lag_messages``
(``stream.metrics``)."""

from __future__ import annotations

from collections.abc import Iterable

from stream.metrics import REBALANCES
from stream.metrics_record import forget_partitions, set_consumer_lag


class LagTracker:
    """Consumer lag per owned partition from the worker's own offsets and fetch-response high-watermarks.

    High-watermarks come from fetch responses (aiokafka/faust: ``consumer.highwater(tp)``), exact
    on every broker, and from the broker probe's ListOffsets answers, which keep the lag growing when
    fetches stall (a lower bound on the embedded broker; the maximum of both is kept). Lag is
    ``high_watermark - (last processed offset + 1)``, floored at 0. Only partitions in the current
    assignment are tracked: :meth:`set_assignment` (called at every assignment and before every
    publish) drops the others, and :meth:`publish` removes their series from
    ``kairos_consumer_lag_messages``, so a partition that moved to another worker is reported by that
    worker alone. Records of a partition no longer owned (in flight at a rebalance) are ignored.
    """

    def __init__(self) -> None:
        self._owned: set[tuple[str, int]] = set()
        self._high: dict[tuple[str, int], int] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._published: set[tuple[str, int]] = set()

    def on_assigned(self, topic_partitions: Iterable[tuple[str, int]]) -> None:
        """A new assignment (the whole of it, as faust reports it): counts a rebalance."""
        REBALANCES.inc()
        self.set_assignment(topic_partitions)

    def on_revoked(self, topic_partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions taken away: forget them here and in the gauge."""
        gone = set(topic_partitions)
        self.set_assignment(self._owned - gone)
        self.publish()

    def set_assignment(self, topic_partitions: Iterable[tuple[str, int]]) -> None:
        """The partitions owned now; everything else is forgotten (its offsets may move elsewhere)."""
        self._owned = {(str(t), int(p)) for t, p in topic_partitions}
        for table in (self._high, self._next):
            for tp in [tp for tp in table if tp not in self._owned]:
                del table[tp]
        for tp in self._owned:
            self._high.setdefault(tp, 0)

    @property
    def owned(self) -> set[tuple[str, int]]:
        """The partitions whose lag is tracked."""
        return set(self._owned)

    def on_high_watermark(self, topic: str, partition: int, high_watermark: int | None) -> None:
        """The high-watermark (offset of the next message to be written) seen in a fetch response."""
        tp = (topic, partition)
        if tp in self._owned and high_watermark is not None and high_watermark >= 0:
            self._high[tp] = max(self._high.get(tp, 0), int(high_watermark))

    def on_processed(self, topic: str, partition: int, offset: int) -> None:
        """A message at ``offset`` was processed (or committed); ignored for partitions not owned."""
        tp = (topic, partition)
        if tp not in self._owned:
            return
        self._next[tp] = max(self._next.get(tp, 0), int(offset) + 1)
        # A processed offset proves the partition holds at least this many messages.
        self._high[tp] = max(self._high.get(tp, 0), int(offset) + 1)

    def on_processed_batch(self, records: Iterable[tuple[str, int, int]]) -> None:
        """:meth:`on_processed` for a batch's ``(topic, partition, offset)``, once per partition."""
        highest: dict[tuple[str, int], int] = {}
        for topic, partition, offset in records:
            tp = (topic, partition)
            if offset > highest.get(tp, -1):
                highest[tp] = offset
        for (topic, partition), offset in highest.items():
            self.on_processed(topic, partition, offset)

    def on_position(self, topic: str, partition: int, next_offset: int | None) -> None:
        """The consumer's committed/next offset for a partition (known before any record is processed)."""
        tp = (topic, partition)
        if tp in self._owned and next_offset is not None and next_offset >= 0:
            self._next[tp] = max(self._next.get(tp, 0), int(next_offset))

    def lag(self, topic: str, partition: int) -> int | None:
        """Current lag of one partition (None: not owned)."""
        tp = (topic, partition)
        if tp not in self._owned:
            return None
        return max(0, self._high.get(tp, 0) - self._next.get(tp, 0))

    def lags(self) -> dict[tuple[str, int], int]:
        """Lag of every owned partition."""
        return {tp: max(0, self._high.get(tp, 0) - self._next.get(tp, 0)) for tp in self._owned}

    def publish(self) -> None:
        """Write every owned partition's lag into the gauge and remove the series of the others."""
        lags = self.lags()
        for (topic, partition), lag in lags.items():
            set_consumer_lag(topic, partition, lag)
        stale = self._published - set(lags)
        if stale:
            forget_partitions(stale)
        self._published = set(lags)

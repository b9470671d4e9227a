"""A small progress bar on stderr (no dependency): fraction done, loss and events per second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line at most every ``every`` seconds; ``close`` ends it with a newline."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, every: float = 0.5) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.start = time.perf_counter()
        self.last = 0.0
        self.done = 0

    def update(self, done: int, loss: float, force: bool = False) -> None:
        """Report ``done`` events so far and the running loss."""
        self.done = done
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        rate = done / max(now - self.start, 1e-9)
        bar = "#" * int(frac * 20)
        self.stream.write(f"\r{self.label} [{bar:<20}] {frac:6.1%} loss {loss:.4f} {rate:,.0f} ev/s")
        self.stream.flush()

    def close(self, loss: float) -> None:
        """Draw the final state and move to a new line."""
        self.update(self.done, loss, force=True)
        self.stream.write("\n")
        self.stream.flush()

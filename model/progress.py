"""Training progress on stderr with tqdm: a live bar on a terminal, plain lines in a log file.

tqdm redraws its bar with carriage returns; written to a file or a pipe (``make demo > log``, a
service's journal) that is one endless line. So on anything that is not a terminal this prints a
plain line every ``1 / lines`` of the epoch and one at its end, formatted by tqdm all the same.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Events done of ``total`` and the running loss; ``close`` ends the epoch's output."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, every: float = 0.5, lines: int = 10
    ) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self.lines = max(lines, 1)
        self.next_line = 1  # the next tenth (of ``lines``) that earns a line in a log
        self.bar: tqdm[None] | None = None
        if _is_terminal(self.stream):
            self.bar = tqdm(
                total=self.total,
                desc=label,
                file=self.stream,
                unit=" ev",
                unit_scale=True,
                mininterval=every,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, done: int, loss: float) -> None:
        """Report ``done`` events so far and the running loss."""
        step = done - self.done
        self.done = done
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(step)  # redraws at most every ``every`` seconds
            return
        if done * self.lines >= self.next_line * self.total and done < self.total:
            self.next_line = done * self.lines // self.total + 1
            self._line(loss)

    def close(self, loss: float) -> None:
        """Draw the final state (one last line in a log) and end the output."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.close()
            return
        self._line(loss)

    def _line(self, loss: float) -> None:
        text = tqdm.format_meter(
            min(self.done, self.total),
            self.total,
            time.perf_counter() - self.start,
            prefix=self.label,
            unit=" ev",
            unit_scale=True,
            postfix=f"loss {loss:.4f}",
            ncols=0,  # no bar: a log line needs the numbers only
        )
        self.stream.write(text + "\n")
        self.stream.flush()

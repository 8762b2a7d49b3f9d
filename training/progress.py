"""Progress of long work (train, evaluate, tune) on stderr, in one of three modes.

* ``bar``: stderr is a terminal: one line redrawn in place, ``[#####.....] 3/8 fitting  12s, ETA 20s``;
  notes are printed above it.
* ``lines``: stderr is a file or a pipe (CI logs): one plain line per step and note, no control
  characters.
* ``quiet`` (``--quiet``): nothing.

Work is counted in units (``total``); ``advance`` moves on by some units and names what is being
done next. The ETA assumes the remaining units take as long as the finished ones did, so it is
shown only once a unit is done, and it is exact for uniform units (tuning candidates, folds).

    progress = Progress.to_stderr(total=5, quiet=args.quiet)
    progress.advance(0, "loading")     # a step with nothing finished yet
    progress.note("1234 rows")
    progress.advance(1, "fitting")
    progress.finish("done")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

MODES = ("bar", "lines", "quiet")
BAR_WIDTH = 20


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s"


class Progress:
    """Steps, notes and an ETA of one piece of long work (see the module docstring)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        mode: str,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.total = max(1, total)
        self.done = 0
        self.stream = stream
        self.mode = mode
        self._clock = clock
        self._started = clock()
        self._message = ""
        self._drawn = False  # a bar line is on screen (bar mode)

    @classmethod
    def to_stderr(cls, total: int, quiet: bool = False) -> Progress:
        """A bar when stderr is a terminal, plain lines otherwise, nothing when ``quiet``."""
        stream = sys.stderr
        if quiet:
            return cls(total, stream, "quiet")
        return cls(total, stream, "bar" if stream.isatty() else "lines")

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def eta(self) -> float | None:
        """Seconds left, from the pace so far (None before the first unit is done)."""
        if self.done <= 0:
            return None
        return self.elapsed / self.done * max(0, self.total - self.done)

    def add_total(self, units: int) -> None:
        """More work turned up (e.g. the number of folds once the data is loaded)."""
        self.total += units

    def advance(self, units: int, message: str = "") -> None:
        """``units`` more are done; ``message`` says what runs now (kept if empty)."""
        self.done = min(self.total, self.done + units)
        if message:
            self._message = message
        if self.mode == "lines":
            eta = self.eta()
            tail = f", ETA {_seconds(eta)}" if eta is not None and self.done < self.total else ""
            self._write(f"[{self.done}/{self.total}] {self._message} ({_seconds(self.elapsed)}{tail})\n")
        elif self.mode == "bar":
            self._draw()

    def note(self, message: str) -> None:
        """A line of detail under the current step."""
        if self.mode == "lines":
            self._write(f"      {message}\n")
        elif self.mode == "bar":
            self._clear()
            self._write(f"{message}\n")
            self._draw()

    def finish(self, message: str) -> None:
        """All done: the last line (the bar is left complete on screen)."""
        self.done = self.total
        self._message = message
        if self.mode == "lines":
            self._write(f"[{self.total}/{self.total}] {message} ({_seconds(self.elapsed)})\n")
        elif self.mode == "bar":
            self._draw()
            self._write("\n")
            self._drawn = False

    def _draw(self) -> None:
        filled = round(BAR_WIDTH * self.done / self.total)
        eta = self.eta()
        tail = f", ETA {_seconds(eta)}" if eta is not None and self.done < self.total else ""
        line = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
            f"{self._message}  {_seconds(self.elapsed)}{tail}"
        )
        self._write(f"\r\x1b[2K{line}")
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

"""A progress line for long commands on a terminal: what, how far, how long left.

Only for a person watching: a command shows it when its stderr is a terminal and it was
not asked for ``--json``; piped or scripted runs stay quiet. The line is redrawn in
place (carriage return, erase to the end of line) at most every ``interval`` seconds, and
:meth:`TerminalProgress.close` erases it, so what the command prints afterwards starts
on a clean line.

The line is dispensable: written to the CLI's stderr (its ``unaltered`` twin, which
survives a closed pipe), and when the terminal itself went away (a hang-up: ``EIO``)
it stops being drawn; the command carries on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["TerminalProgress", "wanted"]


def wanted(stream: TextIO, *, json_output: bool) -> bool:
    """Whether a progress line belongs on ``stream``: a terminal, and no ``--json``."""
    isatty = getattr(stream, "isatty", None)
    return not json_output and callable(isatty) and bool(isatty())


class TerminalProgress:
    """``<what>: 3/12 captures, 1.2 GiB of 4.0 GiB (30%), about 2m10s left``."""

    def __init__(self, stream: TextIO, what: str, *, unit: str = "captures",
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.2) -> None:
        self.stream = stream
        self.what = what
        self.unit = unit
        self.clock = clock
        self.interval = interval
        self.items = 0
        self.items_done = 0
        self.total_bytes = 0
        self.bytes_done = 0
        self._began = clock()
        self._drawn_at: float | None = None
        self._shown = False
        self._gone = False  # the terminal went away: draw nothing more

    def start(self, captures: int, total_bytes: int) -> None:
        self.items, self.total_bytes = captures, total_bytes
        self._began = self.clock()
        self._draw(force=True)

    def advance(self, nbytes: int) -> None:
        self.bytes_done += nbytes
        self._draw()

    def capture_done(self) -> None:
        """One more item (a capture, or whatever ``unit`` counts) is done."""
        self.items_done += 1
        self._draw()

    def update(self, items_done: int, items: int, bytes_done: int, total_bytes: int) -> None:
        """Where the work stands, all at once (for a library that reports totals)."""
        if (items, total_bytes) != (self.items, self.total_bytes):
            if not self.items and not self.total_bytes:
                self._began = self.clock()  # the first report: the work starts now
            self.items, self.total_bytes = items, total_bytes
        self.items_done, self.bytes_done = items_done, bytes_done
        self._draw()

    def line(self) -> str:
        """The text of the progress line as it stands."""
        parts = [f"{self.what}: {self.items_done}/{self.items} {self.unit}"]
        if self.bytes_done and not self.total_bytes:  # a size not known in advance
            parts.append(f"{_size(self.bytes_done)} so far")
        if self.total_bytes:
            # The total is an estimate made before reading: never show past 100%.
            done = min(self.bytes_done, self.total_bytes)
            share = 100 * done // self.total_bytes
            parts.append(f"{_size(done)} of {_size(self.total_bytes)} ({share}%)")
            elapsed = self.clock() - self._began
            if done and elapsed >= 1:
                left = elapsed * (self.total_bytes - done) / done
                parts.append(f"about {_duration(left)} left")
        return ", ".join(parts)

    def _draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if self._gone or (not force and self._drawn_at is not None
                          and now - self._drawn_at < self.interval):
            return
        self._drawn_at = now
        self._shown = self._write("\r" + self.line() + "\x1b[K")

    def close(self) -> None:
        """Erase the line (if one was drawn)."""
        if self._shown and not self._gone:
            self._write("\r\x1b[K")
        self._shown = False

    def _write(self, text: str) -> bool:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:  # the terminal hung up (a closed pipe is the stream's own affair)
            self._gone = True
            return False
        return True


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

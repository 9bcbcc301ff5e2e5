"""One capture's budget: requests, bytes and time, shared by every fetcher.

A hostile page can name any number of things to fetch (100,000 ``<img>`` tags, a
thousand videos, a script that requests forever), and several fetchers act on what it
names: the page fetcher's subresources, the media fetcher's page images and videos and
yt-dlp's requests, the browser's requests. Each fetcher's own limits bound its own
work only; the capture as a whole is bounded here, once, by
:class:`CaptureBudget`, which the capture's
:class:`~archiver.recorder.session.RecordingSession` owns and consults before every
exchange, whichever fetcher asks:

``capture.max_requests``
    exchanges of the capture (each redirect hop and each retry is one).
``capture.max_total_bytes``
    bytes received on the wire, metered as they arrive (:meth:`CaptureBudget.meter`),
    so exchanges running at once (the browser's) cannot pass the total together: the
    one that would is cut there, kept truncated like any response past its limit.
``capture.deadline_seconds``
    wall time from the capture's start; no exchange starts after it, and a running one
    is cut there (each fetcher's own time limit runs within it).
``capture.max_subresources``
    distinct resources the page names that the capture fetches as such: the page
    fetcher's subresources and the media fetcher's page images and ``<video>`` sources
    draw on the same allowance (a URL already counted costs nothing more).

An exchange the budget cannot afford is refused with :class:`~archiver.errors.
BudgetExhausted` (reason ``budget``) before any connection is made. What a fetcher
leaves out because of the budget is *counted* (:meth:`CaptureBudget.skip`), never
listed one by one, so what the capture reports stays bounded whatever the page holds.
Every method is thread-safe.

What the budget meters can also be watched as it arrives (:func:`watching`), by whatever
runs the captures in this process (the ``capture`` command's progress line on a terminal).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from archiver.errors import BudgetExhausted
from archiver.recorder.wire import Deadline

REQUESTS = "capture.max_requests"
BYTES = "capture.max_total_bytes"
DEADLINE = "capture.deadline_seconds"
RESOURCES = "capture.max_subresources"


class Watcher(Protocol):
    """Told of the bytes every capture of the process receives (from any thread)."""

    def announced(self, transfer: Transfer) -> None:
        """``transfer``'s response began (its ``length``: the Content-Length, or None)."""

    def received(self, transfer: Transfer, nbytes: int) -> None:
        """``nbytes`` more arrived on the wire for ``transfer``."""

    def ended(self, transfer: Transfer) -> None:
        """``transfer`` is over (complete, cut short or failed)."""


_watchers: tuple[Watcher, ...] = ()
_watchers_lock = threading.Lock()


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Tell ``watcher`` of every capture's bytes while the block runs."""
    global _watchers
    with _watchers_lock:
        _watchers = (*_watchers, watcher)
    try:
        yield
    finally:
        with _watchers_lock:
            _watchers = tuple(w for w in _watchers if w is not watcher)


class CaptureBudget:
    """The limits of one capture and what has been spent of them (see the module doc)."""

    def __init__(self, *, max_requests: int, max_total_bytes: int, seconds: float,
                 max_subresources: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_requests = max_requests
        self.max_total_bytes = max_total_bytes
        self.max_subresources = max_subresources
        self.deadline = Deadline(seconds, monotonic)
        self._monotonic = monotonic
        self._began = monotonic()
        self._lock = threading.Lock()
        self._current = threading.local()  # each thread's exchange in progress
        self._requests: dict[str, int] = {}
        self._bytes = 0
        self._resources: set[str] = set()
        self._refused: dict[str, int] = {}
        self._skipped: dict[tuple[str, str, str], int] = {}

    # -- spending ------------------------------------------------------------------------

    def exhausted(self) -> str | None:
        """The setting whose limit is spent (requests, bytes or time), or None."""
        with self._lock:
            return self._exhausted()

    def _exhausted(self) -> str | None:
        if sum(self._requests.values()) >= self.max_requests:
            return REQUESTS
        if self._bytes >= self.max_total_bytes:
            return BYTES
        if self.deadline.expired:
            return DEADLINE
        return None

    def take_request(self, role: str, url: str) -> None:
        """Count one exchange of ``role``.

        Raises BudgetExhausted (before anything is sent) when the capture has no
        request, byte or second left."""
        with self._lock:
            spent = self._exhausted()
            if spent is not None:
                self._refused[spent] = self._refused.get(spent, 0) + 1
                raise BudgetExhausted(f"not fetched: {url[:200]}: {self.describe(spent)}")
            self._requests[role] = self._requests.get(role, 0) + 1

    def meter(self, size: int) -> int:
        """``size`` bytes arrived for some exchange: how many of them the capture can
        still take (all, or what is left); those are counted as received."""
        with self._lock:
            granted = max(0, min(size, self.max_total_bytes - self._bytes))
            self._bytes += granted
            return granted

    def transfer(self) -> Transfer:
        """The meter of one exchange (this thread's current one, for :meth:`announce`)."""
        transfer = Transfer(self)
        self._current.transfer = transfer
        return transfer

    def announce(self, content_length: str | None) -> None:
        """This thread's exchange got its response headers, with this ``Content-Length``
        (or none): for the watchers (:func:`watching`) only; nothing is spent."""
        transfer = getattr(self._current, "transfer", None)
        if transfer is not None and _watchers:
            digits = content_length.strip() if content_length else ""
            transfer.length = int(digits) if re.fullmatch(r"[0-9]{1,18}", digits) else None
            for watcher in _watchers:
                watcher.announced(transfer)

    @property
    def bytes_left(self) -> int:
        with self._lock:
            return max(0, self.max_total_bytes - self._bytes)

    def take_resource(self, url: str) -> bool:
        """Whether the page-named resource ``url`` may be fetched within
        ``capture.max_subresources`` (a URL already counted is free); counts it if so."""
        with self._lock:
            if url in self._resources:
                return True
            if len(self._resources) >= self.max_subresources:
                return False
            self._resources.add(url)
            return True

    def resources_left(self) -> int:
        with self._lock:
            return self.max_subresources - len(self._resources)

    def skip(self, fetcher: str, what: str, limit: str, count: int = 1) -> None:
        """Count ``count`` things (``what``: "page images", "subresources", …) that
        ``fetcher`` left out because ``limit`` (a setting's name) was spent."""
        if count <= 0:
            return
        with self._lock:
            key = (fetcher, what, limit)
            self._skipped[key] = self._skipped.get(key, 0) + count

    # -- reading -------------------------------------------------------------------------

    @property
    def bytes_received(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def requests(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def skipped(self, fetcher: str) -> list[tuple[str, str, int]]:
        """What ``fetcher`` left out: ``(what, limit, count)``, in the order first met."""
        with self._lock:
            return [(what, limit, n) for (f, what, limit), n in self._skipped.items()
                    if f == fetcher]

    def skipped_text(self, fetcher: str) -> str | None:
        """``skipped 99,700 page images: capture.max_subresources (300) reached; …``"""
        parts = [f"skipped {count:,} {what}: {self.describe(limit)}"
                 for what, limit, count in self.skipped(fetcher)]
        return "; ".join(parts) or None

    def requests_of(self, role: str) -> int:
        """Exchanges made so far for ``role`` (``page``, ``subresource``, ``media``,
        ``browser``)."""
        with self._lock:
            return self._requests.get(role, 0)

    def describe(self, setting: str) -> str:
        """``capture.max_requests (5,000) reached``; a fetcher's own setting by name."""
        value = {REQUESTS: self.max_requests, BYTES: self.max_total_bytes,
                 DEADLINE: self.deadline.seconds, RESOURCES: self.max_subresources,
                 }.get(setting)
        if value is None:
            return f"{setting} reached"
        shown = f"{value:g} s" if setting == DEADLINE else f"{int(value):,}"
        return f"{setting} ({shown}) reached"

    def as_json(self) -> dict[str, Any]:
        """The limits, what was spent (requests by role), what was refused and skipped."""
        with self._lock:
            return {
                "limits": {"max_requests": self.max_requests,
                           "max_total_bytes": self.max_total_bytes,
                           "deadline_seconds": self.deadline.seconds,
                           "max_subresources": self.max_subresources},
                "spent": {"requests": sum(self._requests.values()),
                          "requests_by_role": dict(sorted(self._requests.items())),
                          "bytes": self._bytes,
                          "seconds": round(self._monotonic() - self._began, 3),
                          "subresources": len(self._resources)},
                "refused": dict(sorted(self._refused.items())),
                "skipped": [{"fetcher": f, "what": what, "limit": limit, "count": n}
                            for (f, what, limit), n in self._skipped.items()],
            }


class Transfer:
    """One exchange's bytes: metered by the capture's budget as they arrive (the meter a
    :class:`~archiver.recorder.wire.Wire` calls), and shown to the watchers."""

    def __init__(self, budget: CaptureBudget) -> None:
        self.budget = budget
        self.length: int | None = None  # the announced Content-Length
        self.received = 0

    def __call__(self, size: int) -> int:
        granted = self.budget.meter(size)
        self.received += granted
        for watcher in _watchers:
            watcher.received(self, granted)
        return granted

    def end(self) -> None:
        if getattr(self.budget._current, "transfer", None) is self:
            self.budget._current.transfer = None
        for watcher in _watchers:
            watcher.ended(self)

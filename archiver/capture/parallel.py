"""Several captures at once, polite to each host.

A capture spends most of its time waiting (on the target's server, on the page falling
quiet, on a video), so one process runs several: ``capture.concurrency`` of them, each
on its own thread with its own scratch directory, WARC and transaction, sharing the
process's one Chromium (each in an isolated context) and the database. Per host, the
daemon's limits hold here too: at most ``daemon.per_host_concurrency`` captures of one
host at once, and at most ``daemon.per_host_rate`` started per second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

MAX_AUTO = 8
MEMORY_PER_CAPTURE = 512 * 1024 * 1024


def host_of(url: str) -> str:
    """The lower-case host name a URL's requests go to ('' if it has none)."""
    try:
        return (urlsplit(url).hostname or "").lower()[:255]
    except ValueError:
        return ""


def auto_concurrency(*, cpus: int | None = None, available: int | None = None) -> int:
    """What this machine can take: twice its cores (captures mostly wait), at most one
    per 512 MiB of available memory (a capture with its browser context and media
    fetch), at most 8, at least 1."""
    cores = cpus if cpus is not None else (len(os.sched_getaffinity(0))
                                           if hasattr(os, "sched_getaffinity")
                                           else os.cpu_count() or 1)
    memory = available if available is not None else _available_memory()
    by_memory = memory // MEMORY_PER_CAPTURE if memory is not None else MAX_AUTO
    return max(1, min(2 * cores, by_memory, MAX_AUTO))


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


class HostLimiter:
    """At most ``per_host`` holders of one host's slot at a time, and starts spaced by
    ``1 / rate`` seconds per host (``rate`` 0: no spacing). Thread-safe."""

    def __init__(self, *, per_host: int, rate: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if per_host < 1:
            raise ValueError("per_host must be >= 1")
        self._per_host = per_host
        self._gap = 1.0 / rate if rate > 0 else 0.0
        self._monotonic = monotonic
        self._cond = threading.Condition()
        self._running: dict[str, int] = {}
        self._next_start: dict[str, float] = {}

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        """Wait for a free slot of ``url``'s host and its next start time; hold the slot
        for the block."""
        host = host_of(url)
        with self._cond:
            while True:
                now = self._monotonic()
                wait = self._next_start.get(host, now) - now
                if self._running.get(host, 0) < self._per_host and wait <= 0:
                    break
                self._cond.wait(timeout=wait if wait > 0 else None)
            self._running[host] = self._running.get(host, 0) + 1
            self._next_start[host] = self._monotonic() + self._gap
        try:
            yield
        finally:
            with self._cond:
                self._running[host] -= 1
                self._cond.notify_all()


def run_in_order(items: Sequence[str], work: Callable[[str], T], *, concurrency: int,
                 limiter: HostLimiter) -> Iterator[T]:
    """Run ``work(item)`` for every item, up to ``concurrency`` at once, each within its
    host's slot; yield the results in the order of ``items`` (each as soon as it and
    every one before it are done). An exception of ``work`` is raised when its result's
    turn comes; items not started by then are cancelled, those running finish first (a
    capture is never abandoned half-way)."""

    def limited(item: str) -> T:
        with limiter.slot(item):
            return work(item)

    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="capture")
    try:
        futures: list[Future[T]] = [pool.submit(limited, item) for item in items]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

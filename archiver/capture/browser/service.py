"""One Chromium per process, a fresh isolated context per capture.

Starting Chromium costs most of a second, more than rendering a simple post, so a
process (``archiver capture URL…``, a daemon worker) starts it once and lends it to
every capture: each gets a new browser *context* (Playwright's incognito profile: its
own cookies, cache, local storage, service-worker and permission state, nothing shared
with any other context), closed when the capture's view is taken. So a cookie a hostile
page sets in one capture can never ride along in another's requests.

The browser lives on an asyncio loop in a thread of its own (Playwright's objects belong
to the loop that made them); a capture's thread submits its view to that loop and waits
for it with a deadline. A browser is retired, and the next capture starts a new one:

* when it crashed or was killed (its ``disconnected`` event);
* after ``browser.recycle_after`` captures (a long-lived renderer accumulates state and
  memory);
* when its processes' resident memory passes ``browser.max_memory_mib`` (checked when
  a capture asks for it).

A retired browser is closed once the captures still using it are done, never under one;
one that does not close within :data:`CLOSE_SECONDS` is killed.

Limits while a capture runs. Chromium cannot live under ``RLIMIT_AS`` (V8 reserves far
more address space than it touches), so its memory is watched instead: while captures
use a browser, a watchdog measures its processes every :data:`WATCH_SECONDS` and past
``browser.kill_memory_mib`` kills them all at once; the captures it served fail their
browser view with :class:`BrowserOverMemory` (reason ``browser-memory``). Its time is
bounded by the view's own deadline (``browser.timeout_seconds``, the page's renderer
closed with its context) and by :meth:`BrowserService.run`'s.
Each generation has its own dead-end proxy port (see :mod:`.chromium`), which also names
its processes in ``/proc``: that is how its memory is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from archiver.capture.browser.chromium import chromium_flags, first_line, launch
from archiver.capture.browser.errors import BrowserError, BrowserOverMemory, BrowserUnavailable
from archiver.capture.browser.options import BrowserOptions

if TYPE_CHECKING:
    from playwright.async_api import Browser, Playwright

T = TypeVar("T")
CLOSE_SECONDS = 10.0
MEMORY_CHECK_SECONDS = 2.0
"""At most this often is /proc walked to measure the browser's memory between captures."""
WATCH_SECONDS = 0.5
"""How often the watchdog measures a browser while captures use it."""
MiB = 1024 * 1024


@dataclass(slots=True)
class _Generation:
    """One started Chromium and the port that makes its proxy a dead end."""

    number: int
    browser: Browser
    flags: list[str]
    dead_end: socket.socket
    launch_seconds: float
    served: int = 0
    active: int = 0
    retired: str | None = None  # why, once it takes no new captures
    dead: bool = False
    pid: int | None = None  # Chromium's main process, once found
    killed: str | None = None  # why the watchdog killed it
    watchdog: asyncio.Task[None] | None = None

    def alive(self) -> bool:
        """Not disconnected, and its main process neither gone nor a zombie (the
        ``disconnected`` event can trail a kill by a moment)."""
        if self.dead or not self.browser.is_connected():
            return False
        return self.pid is None or _running(self.pid)

    @property
    def port(self) -> int:
        return int(self.dead_end.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Lease:
    """The browser lent to one capture, and what provenance says about it."""

    browser: Browser
    flags: list[str]
    generation: int
    capture_number: int
    """1 for the first capture this Chromium served."""
    launch_seconds: float
    """Seconds this capture waited for Chromium to start (0.0: it was running)."""


@dataclass(slots=True)
class _State:
    playwright: Playwright | None = None
    current: _Generation | None = None
    retiring: list[_Generation] = field(default_factory=list)
    generations: int = 0
    memory_checked: float = 0.0


class BrowserService:
    """Lends one Chromium to every capture of this process (see the module docstring).

    Thread-safe: :meth:`run` may be called from any number of threads at once."""

    def __init__(self, options: BrowserOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state = _State()
        self._launching: asyncio.Lock | None = None
        self.restarts: dict[str, int] = {}
        """How many browsers were retired, by reason (crash, recycle, memory)."""

    # -- the capture's side --------------------------------------------------------------

    def run(self, view: Callable[[Lease], Awaitable[T]], *, timeout: float) -> T:
        """Run ``view`` with a browser lent for it, on the browser's loop, and return its
        result; raise what it raised (BrowserUnavailable when Chromium cannot start).

        Raises ``TimeoutError`` when ``timeout`` seconds pass first: the view is then
        cancelled (its context closed by its own ``finally``) and the caller goes on."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(self._lend(view), self._ensure_loop())
        try:
            return future.result(timeout=timeout)
        except FutureTimeout as exc:
            future.cancel()
            raise TimeoutError(f"the browser view did not finish within {timeout:.0f} s") from exc

    def close(self) -> None:
        """Close every browser and the loop's thread (waits at most a few seconds)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(FutureTimeout, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(
                timeout=2 * CLOSE_SECONDS)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=CLOSE_SECONDS)

    # -- the loop's side ---------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()

                # A daemon thread: a process that exits without close() (a test, a
                # crash) must not hang on it; Playwright's driver then sees its pipe
                # close and takes Chromium down with it.
                self._thread = threading.Thread(target=serve, name="browser-loop",
                                                daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    async def _lend(self, view: Callable[[Lease], Awaitable[T]]) -> T:
        generation, launched = await self._acquire()
        generation.served += 1
        generation.active += 1
        if generation.served >= self.options.recycle_after and generation.retired is None:
            self._retire(generation, "recycle")
        if generation.watchdog is None or generation.watchdog.done():
            generation.watchdog = asyncio.create_task(self._watch(generation))
        try:
            return await view(Lease(generation.browser, list(generation.flags),
                                    generation.number, generation.served, launched))
        except BrowserError as exc:
            if generation.killed is not None:  # what the view saw was the kill
                raise BrowserOverMemory(generation.killed) from exc
            raise
        finally:
            generation.active -= 1
            await self._close_retired()

    async def _acquire(self) -> tuple[_Generation, float]:
        if self._launching is None:
            self._launching = asyncio.Lock()
        async with self._launching:
            state = self._state
            current = state.current
            if current is not None and current.retired is None:
                if not current.alive():
                    self._retire(current, "crash")
                elif self._over_memory(current):
                    self._retire(current, "memory")
            if state.current is not None and state.current.retired is None:
                return state.current, 0.0
            await self._close_retired()
            started = time.monotonic()
            state.current = await self._start()
            return state.current, time.monotonic() - started

    async def _start(self) -> _Generation:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import async_playwright

        state = self._state
        if state.playwright is None:
            try:
                state.playwright = await async_playwright().start()
            except PlaywrightError as exc:
                raise BrowserUnavailable(
                    f"Playwright could not start its driver: {first_line(exc.message)}"
                ) from exc
        # A loopback port held bound but never listening: every connection Chromium
        # makes on its own is refused there (see chromium.py).
        dead_end = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        dead_end.bind(("127.0.0.1", 0))
        flags = chromium_flags(int(dead_end.getsockname()[1]))
        started = time.monotonic()
        try:
            browser = await launch(state.playwright, self.options.executable, flags)
        except BaseException:
            dead_end.close()
            raise
        state.generations += 1
        generation = _Generation(state.generations, browser, flags, dead_end,
                                 time.monotonic() - started)
        generation.pid = browser_pid(generation.port)

        def disconnected(_browser: Browser) -> None:
            generation.dead = True

        browser.on("disconnected", disconnected)
        return generation

    def _retire(self, generation: _Generation, why: str) -> None:
        generation.retired = why
        self.restarts[why] = self.restarts.get(why, 0) + 1
        if self._state.current is generation:
            self._state.current = None
        self._state.retiring.append(generation)

    async def _close_retired(self) -> None:
        state = self._state
        idle = [g for g in state.retiring if g.active == 0]
        state.retiring = [g for g in state.retiring if g.active > 0]
        for generation in idle:
            await _close(generation)

    async def _shutdown(self) -> None:
        state = self._state
        if state.current is not None:
            state.retiring.append(state.current)
            state.current = None
        for generation in state.retiring:
            await _close(generation)
        state.retiring = []
        if state.playwright is not None:
            from playwright.async_api import Error as PlaywrightError

            with contextlib.suppress(PlaywrightError, OSError):  # best effort, at exit
                await state.playwright.stop()
            state.playwright = None

    async def _watch(self, generation: _Generation) -> None:
        """While captures use ``generation``: kill it past ``kill_memory_mib``."""
        limit = self.options.kill_memory_mib * MiB
        loop = asyncio.get_running_loop()
        port = generation.port
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if generation.active == 0 or generation.dead or generation.dead_end.fileno() < 0:
                return  # idle or gone (then its port may belong to another one soon)
            used = await loop.run_in_executor(None, browser_memory, port)
            if used is not None and used > limit and generation.killed is None:
                generation.killed = (
                    f"Chromium used {used // MiB} MiB, more than browser.kill_memory_mib "
                    f"({self.options.kill_memory_mib} MiB): killed, no browser view")
                kill_tree(port)
                generation.dead = True
                if generation.retired is None:
                    self._retire(generation, "memory-kill")

    def _over_memory(self, generation: _Generation) -> bool:
        now = time.monotonic()
        if now - self._state.memory_checked < MEMORY_CHECK_SECONDS:
            return False
        self._state.memory_checked = now
        used = browser_memory(generation.port)
        return used is not None and used > self.options.max_memory_mib * 1024 * 1024

    def memory(self) -> int | None:
        """Resident bytes of the running Chromium and its children (None: not running)."""
        current = self._state.current
        return browser_memory(current.port) if current is not None else None


async def _close(generation: _Generation) -> None:
    from playwright.async_api import Error as PlaywrightError

    watchdog = generation.watchdog
    if watchdog is not None and not watchdog.done():
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    try:
        await asyncio.wait_for(generation.browser.close(), CLOSE_SECONDS)
    except (PlaywrightError, TimeoutError):
        kill_tree(generation.port)  # one that will not close in time is killed
    generation.dead_end.close()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def browser_pid(port: int) -> int | None:
    """The main process of the Chromium whose dead-end proxy is ``port``."""
    flag = f"--proxy-server=http://127.0.0.1:{port}".encode()
    with os.scandir("/proc") as entries:
        pids = [int(e.name) for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue
        if flag in args and not any(a.startswith(b"--type=") for a in args):
            return pid
    return None


def _tree(port: int) -> tuple[list[int], dict[int, int]] | None:
    """Every process of the Chromium whose dead-end proxy is ``port`` (its main process
    first), with each one's resident bytes; None if none is found."""
    root = browser_pid(port)
    if root is None:
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    with os.scandir("/proc") as entries:
        pids = [int(e.name) for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree, rss


def kill_tree(port: int) -> None:
    """SIGKILL every process of the Chromium whose dead-end proxy is ``port``."""
    found = _tree(port)
    for pid in found[0] if found is not None else ():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def browser_memory(port: int) -> int | None:
    """Resident bytes of the Chromium whose dead-end proxy is ``port``, with every
    process under it (renderers, GPU and utility processes); None if none is found."""
    found = _tree(port)
    if found is None:
        return None
    tree, rss = found
    return sum(rss.get(pid, 0) for pid in tree)

"""Starting Debian's Chromium through Playwright so that nothing leaves it unrecorded.

Threat model. The browser renders pages chosen by whoever controls the target, on the
operator's machine. Everything it fetches must be (a) recorded as evidence and (b) behind
the recorder's SSRF guard; nothing it fetches for itself (Google's update, account and
safe-browsing services) may reach the network or be recorded as evidence; and nothing
may leak the investigation (DNS look-ups of the target, WebRTC packets). So:

* every request of every page of the capture's browser context is *routed*
  (``context.route``) to the recorder, which makes the exchange itself (see
  :mod:`archiver.capture.browser.router`);
* everything Chromium would send on its own is pointed at a **dead-end proxy**: a local
  port we hold bound but never listen on, so every connection to it is refused at once.
  ``--proxy-bypass-list=<-loopback>`` removes Chromium's implicit loopback bypass, so even
  127.0.0.1 goes to the dead end; requests Playwright does not route (a redirect's next
  hop, which Playwright continues on its own; background services; shared workers) fail
  there instead of reaching the network;
* ``--host-resolver-rules=MAP * ~NOTFOUND``: Chromium resolves no host name itself (no DNS
  query about a target leaves from the browser);
* ``--webrtc-ip-handling-policy=disable_non_proxied_udp``: WebRTC may not send UDP (STUN)
  around the proxy; without it a page's RTCPeerConnection reaches any host:port;
* QUIC off, background networking, component updates, sync, first-run tasks off;
* ``--disable-dev-shm-usage``: Chromium keeps its shared memory in /tmp, not in
  /dev/shm, which containers make small (Docker gives 64 MiB) and which a long page
  fills until the renderer crashes.

WebSockets go through the proxy too (and fail); they are also refused explicitly with
``route_web_socket`` so the capture can say which were attempted.

The sandbox: Chromium's sandbox cannot run as root (nor, usually, inside containers
without user namespaces), so it is off (``--no-sandbox``, as Playwright passes with
``chromium_sandbox=False``). A renderer exploit then runs as the archiver's user: run
captures under an unprivileged account or in the Docker image.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.async_api import Browser, Playwright
from playwright.async_api import Error as PlaywrightError

from archiver.capture.browser.errors import BrowserUnavailable

LAUNCH_TIMEOUT_SECONDS = 30.0

# Flags besides the dead-end proxy (see the module docstring for why each is here).
BASE_FLAGS: tuple[str, ...] = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-quic",
    "--mute-audio",
    "--disable-dev-shm-usage",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-bypass-list=<-loopback>",
)


def chromium_flags(dead_end_port: int) -> list[str]:
    """The command-line flags the browser is started with (recorded in provenance)."""
    return [*BASE_FLAGS, f"--proxy-server=http://127.0.0.1:{dead_end_port}"]


@contextmanager
def dead_end() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs.

    Bound and never listening: the kernel answers a connection attempt with a reset, and
    no other process can take the port while we hold it (a fixed port such as 9 could
    have a listener).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def unavailable_reason(executable: Path) -> str | None:
    """Why ``executable`` cannot be started at all (None: it looks runnable)."""
    if not executable.exists():
        return (f"no browser at {executable} (install Debian's chromium package, "
                "or set browser.executable)")
    if not executable.is_file() or not os.access(executable, os.X_OK):
        return f"{executable} is not an executable file (browser.executable)"
    return None


async def launch(playwright: Playwright, executable: Path, flags: list[str], *,
                 timeout: float = LAUNCH_TIMEOUT_SECONDS) -> Browser:
    """Start headless Chromium within ``timeout`` seconds. Raises BrowserUnavailable when
    it cannot be started."""
    try:
        return await playwright.chromium.launch(
            executable_path=str(executable),
            args=flags,
            headless=True,
            chromium_sandbox=False,
            timeout=max(1.0, min(timeout, LAUNCH_TIMEOUT_SECONDS) * 1000),
            # The daemon drains captures on SIGTERM/SIGINT itself; the driver must not
            # kill the browser behind its back.
            handle_sigint=False,
            handle_sigterm=False,
            handle_sighup=False,
        )
    except PlaywrightError as exc:
        raise BrowserUnavailable(
            f"Chromium at {executable} could not be started: {first_line(exc.message)}"
        ) from exc


def first_line(message: str) -> str:
    """Playwright messages carry a multi-line call log; a report keeps the first line."""
    return message.strip().splitlines()[0] if message.strip() else "unknown error"

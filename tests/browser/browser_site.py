"""Local pages for the browser view (content only a browser sees, lazy images, an endless
feed, a page that never falls quiet, walls, a page reaching for a private address), the
servers that serve them, and the capture helper. Loaded by ``conftest.py`` under the name
``browser_site`` (pywb's installed ``tests`` package shadows ours, see tests/conftest.py).

Every server listens on a loopback address, port 0, and records every request it got
(``hits``), so a test can say what the browser did and did not fetch.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from archiver.capture.browser import BrowserFetcher, BrowserOptions
from archiver.capture.fetcher import FetcherReport
from archiver.capture.page import PageCapture, capture_page
from archiver.recorder import RecorderOptions, open_session
from archiver.recorder.addresses import AddressPolicy, non_global_reason

CHROMIUM = Path("/usr/bin/chromium")
WARCINFO = {"software": "evidence-archiver/test", "operator": "tests"}
POST_TEXT = "Soldiers fired on the crowd at 14:05 near the market"
POST_COLOUR = (192, 57, 43)  # #c0392b, the post box's background
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

PAGES: dict[str, str] = {
    # The post arrives as JSON and is put into the page by a script: the HTML and the
    # script hold no word of it, so only a browser shows it.
    "/post.html": """<!doctype html><html><head><meta charset="utf-8"><title>Post 4711</title>
<style>body{margin:0;font-family:sans-serif;background:#ffffff}
#post{background:#c0392b;color:#ffffff;padding:40px;margin:40px;width:700px;height:200px;
font-size:32px}</style><script src="/app/render.js" defer></script></head>
<body><div id="root">Loading…</div></body></html>""",
    "/cookie-wall.html": """<!doctype html><html><head><title>Walled post</title></head>
<body><p>The post behind the banner.</p>
<div id="cookie-banner" style="position:fixed;inset:0;background:#222;color:#fff">
<p>We use cookies to improve your experience.</p>
<button onclick="fetch('/consent/accepted')">Accept all</button>
<button onclick="fetch('/consent/rejected')">Reject all</button></div></body></html>""",
    "/login": """<!doctype html><html><head><title>Log in</title></head><body>
<form><input name="user"><input type="password" name="pw"><button>Log in</button></form>
</body></html>""",
    # Images that load only when scrolled into view (the usual lazy-loading script), and
    # one native loading=lazy image at the very bottom.
    "/lazy.html": """<!doctype html><html><head><title>Lazy</title></head><body>
<div style="height:2000px">top</div>
<img class="lazy" data-src="/lazy/1.png" width="10" height="10">
<div style="height:2000px">middle</div>
<img class="lazy" data-src="/lazy/2.png" width="10" height="10">
<div style="height:2000px">lower</div>
<img class="lazy" data-src="/lazy/3.png" width="10" height="10">
<div style="height:2000px">bottom</div>
<img loading="lazy" src="/lazy/native.png" width="10" height="10">
<script>
const seen = new IntersectionObserver((entries) => entries.forEach((e) => {
  if (e.isIntersecting) { e.target.src = e.target.dataset.src; seen.unobserve(e.target); }
}));
document.querySelectorAll('img.lazy').forEach((img) => seen.observe(img));
</script></body></html>""",
    # An endless feed: reaching the bottom loads the next page, forever.
    "/feed.html": """<!doctype html><html><head><title>Feed</title></head><body>
<div id="feed"><div style="height:1500px">post 0</div></div>
<script>
let next = 1, busy = false;
window.addEventListener('scroll', () => {
  if (busy || window.scrollY + window.innerHeight < document.body.scrollHeight - 100) return;
  busy = true;
  fetch('/feed/' + next + '.json').then((r) => r.json()).then((p) => {
    const d = document.createElement('div'); d.style.height = '1500px'; d.textContent = p.text;
    document.getElementById('feed').appendChild(d); next += 1; busy = false;
  });
});
</script></body></html>""",
    # Never falls quiet: a request every 100 ms, for as long as the page lives.
    "/endless.html": """<!doctype html><html><head><title>Endless</title></head><body>
<p>Polling</p><script>
(async () => {
  for (;;) { await fetch('/tick'); await new Promise((r) => setTimeout(r, 100)); }
})();
</script></body></html>""",
    "/subredirect.html": """<!doctype html><html><head><title>Sub</title></head><body>
<img src="/img-redirect" width="10" height="10"></body></html>""",
    "/dialog.html": """<!doctype html><html><head><title>Dialog</title></head><body>
<p>Before the alert</p><script>alert('Are you a robot?');
document.body.append('after the alert');</script></body></html>""",
    "/media.html": """<!doctype html><html><head><title>Media</title></head><body>
<video src="/media/clip.mp4" preload="auto" width="160" height="120"></video>
<video><source src="/media/other.mp4" type="video/mp4"></video>
<script>fetch('/media/playlist.m3u8');</script></body></html>""",
}
# Isolation between captures sharing one Chromium: the first page leaves a cookie (by
# script and by a Set-Cookie header) and local storage behind; the probe page must see
# none of it, while the first page's own later request does carry its cookies.
PAGES["/leave-state.html"] = """<!doctype html><html><head><title>Leaves state</title>
</head><body><img src="/set-cookie-header" width="1" height="1" onload="after()">
<script>
document.cookie = "witness=A; path=/";
localStorage.setItem("witness", "A");
function after() { fetch("/cookie-probe-a").then(() => { document.title = "done"; }); }
</script></body></html>"""
PAGES["/probe.html"] = """<!doctype html><html><head><title>Probe</title></head><body>
<p id="out">waiting</p><script>
document.getElementById("out").textContent =
  "storage=" + localStorage.getItem("witness") + " cookie=" + document.cookie;
fetch("/cookie-probe-b");
</script></body></html>"""

TEMPLATES: dict[str, str] = {
    # {private} is the base URL of the server on 127.0.0.2, {port} this server's port.
    "/private.html": """<!doctype html><html><head><title>Private</title></head><body>
<p>Page on a public address</p><img src="{private}/inner.png" width="10" height="10">
<script>fetch('{private}/admin').catch(() => document.body.append(' blocked'));</script>
</body></html>""",
    "/ws.html": """<!doctype html><html><head><title>WS</title></head><body><script>
const ws = new WebSocket('ws://127.0.0.1:{port}/socket');
ws.onclose = (e) => document.body.append('closed ' + e.code);
</script></body></html>""",
    # Pages that move the main frame away on their own: to a private address (refused by
    # the guard) or to another page of this site.
    "/refresh-private.html": """<!doctype html><html><head><title>Refreshes away</title>
<meta http-equiv="refresh" content="0;url={private}/landing.html"></head>
<body><p>Public page before the refresh</p></body></html>""",
    "/script-nav-private.html": """<!doctype html><html><head><title>Moves away</title>
</head><body><p>Public page before the script</p>
<script>location = 'http://10.0.0.1/';</script></body></html>""",
    "/refresh-public.html": """<!doctype html><html><head><title>Refreshes on</title>
<meta http-equiv="refresh" content="0;url=http://127.0.0.1:{port}/post.html"></head>
<body><p>Public page before the refresh</p></body></html>""",
    "/sse.html": """<!doctype html><html><head><title>SSE</title></head><body><script>
new EventSource('/events');</script></body></html>""",
    "/webrtc.html": """<!doctype html><html><head><title>WebRTC</title></head><body><script>
const pc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{stun}'}}]}});
pc.createDataChannel('x');
pc.createOffer().then((offer) => pc.setLocalDescription(offer));
</script></body></html>""",
}
FILES: dict[str, tuple[str, bytes]] = {
    "/app/render.js": ("application/javascript", b"""
fetch('/api/post.json').then((r) => r.json()).then((post) => {
  const root = document.getElementById('root');
  root.textContent = '';
  const box = document.createElement('div');
  box.id = 'post';
  box.textContent = post.text;
  root.appendChild(box);
});
"""),
    "/api/post.json": ("application/json", json.dumps({"text": POST_TEXT}).encode()),
    "/lazy/1.png": ("image/png", PNG + b"1"),
    "/lazy/2.png": ("image/png", PNG + b"2"),
    "/lazy/3.png": ("image/png", PNG + b"3"),
    "/lazy/native.png": ("image/png", PNG + b"n"),
    "/pixel.png": ("image/png", PNG),
    "/tick": ("text/plain", b"tick"),
    "/consent/accepted": ("text/plain", b"accepted"),
    "/consent/rejected": ("text/plain", b"rejected"),
    "/media/clip.mp4": ("video/mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64),
    "/media/other.mp4": ("video/mp4", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64),
    "/media/playlist.m3u8": ("application/vnd.apple.mpegurl", b"#EXTM3U\n"),
    "/evidence.bin": ("application/octet-stream", b"\x00binary evidence\x01"),
}
REDIRECTS = {
    "/redirect-start": "/redirect-mid",
    "/redirect-mid": "/post.html",
    "/img-redirect": "/pixel.png",
}


@dataclass(frozen=True)
class Hit:
    host: str
    path: str
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: str, pages: dict[str, bytes]) -> None:
        super().__init__((address, 0), _Handler)
        self.pages = pages
        self.hits: list[Hit] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.hits.append(Hit(self.headers.get("Host", ""), path,
                                        {k.lower(): v for k, v in self.headers.items()}))
        if path == "/download-for-browsers":
            browser = "HeadlessChrome" in self.headers.get("User-Agent", "")
            if browser:
                self._send(200, "application/octet-stream", b"\x00file for browsers")
            else:
                self._send(200, "text/html", b"<p>a page for other clients</p>")
        elif path == "/set-cookie-header":
            self._send(200, "image/png", PNG, ("Set-Cookie", "tracker=A1; Path=/"))
        elif path.startswith("/cookie-probe"):
            self._send(200, "text/plain", b"seen")
        elif path in REDIRECTS:
            self._send(302, "text/html", b"moved", ("Location", REDIRECTS[path]))
        elif path in self.server.pages:
            self._send(200, "text/html; charset=utf-8", self.server.pages[path])
        elif path.startswith("/feed/") and path.endswith(".json"):
            self._send(200, "application/json", json.dumps({"text": path}).encode())
        elif path in FILES:
            media_type, body = FILES[path]
            self._send(200, media_type, body)
        else:
            self._send(404, "text/plain", b"no such page\n")

    def _send(self, status: int, media_type: str, body: bytes, *extra: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class Site:
    """A running server: its base URL and the requests it received."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.port = int(port)
        self.base = f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def hits(self) -> list[Hit]:
        with self._server.lock:
            return list(self._server.hits)

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    def clear(self) -> None:
        with self._server.lock:
            self._server.hits.clear()


def serve(address: str, pages: dict[str, bytes]) -> tuple[_Server, threading.Thread]:
    server = _Server(address, pages)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return server, thread


def fast_options(**overrides: object) -> BrowserOptions:
    """Browser options for tests: short deadlines, Debian's Chromium."""
    values: dict[str, object] = {
        "executable": CHROMIUM, "timeout_seconds": 30.0, "network_idle_seconds": 5.0,
        "request_timeout_seconds": 5.0, "max_scrolls": 10,
    }
    values.update(overrides)
    return BrowserOptions(**values)  # type: ignore[arg-type]


@dataclass
class Captured:
    """One capture made by the page fetcher and the browser fetcher into one WARC."""

    page: PageCapture
    report: FetcherReport
    warc: Path
    work: Path
    discovered_media: list[str]
    seconds: float


Capture = Callable[..., Captured]


def capturer(tmp_path: Path, fetcher: BrowserFetcher | None = None) -> Capture:
    """``capture(url, options=…, address_policy=…, allow_private=True)``: the page, then
    the browser, into ``tmp_path/<n>/capture.warc.gz``; the work directory is kept. With
    ``fetcher``, every capture uses it (one Chromium); else each gets its own, closed
    after it."""
    count = 0

    def run(url: str, *, options: BrowserOptions | None = None,
            address_policy: AddressPolicy = non_global_reason,
            allow_private: bool = True, capture_seconds: float = 60.0) -> Captured:
        nonlocal count
        count += 1
        folder = tmp_path if count == 1 else tmp_path / f"capture-{count}"
        folder.mkdir(exist_ok=True)
        warc = folder / "capture.warc.gz"
        work = folder / "work"
        work.mkdir()
        recorder = RecorderOptions(allow_private_networks=allow_private,
                                   timeout_seconds=capture_seconds)
        started = time.monotonic()
        browser = fetcher or BrowserFetcher(options or fast_options())
        try:
            with open_session(warc, options=recorder, warcinfo=WARCINFO,
                              address_policy=address_policy) as session:
                page = capture_page(session, url)
                report = browser.run(session, page, work)
                discovered = list(session.discovered_media)
                session.publish()
        finally:
            if fetcher is None:
                browser.close()
        return Captured(page, report, warc, work, discovered, time.monotonic() - started)

    return run

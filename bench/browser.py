"""Browser captures per minute, against the same pages captured without the browser.

    .venv/bin/python bench/browser.py            # 50 local pages
    .venv/bin/python bench/browser.py --quick    # 5 pages, to check it runs

Each page is a post whose text a script fetches as JSON and inserts (what a browser is
for), with a stylesheet and an image. Both loops run in this process, one after the
other, on the same pages from the same local server: the page fetch alone (the recorder,
subresources included, into a WARC), then the page fetch followed by the browser view
with default options (one Chromium for the loop, started by the first capture, a fresh
context per capture; load, network idle, scroll, screenshot, DOM, PDF, every browser
request recorded into the same WARC). The browser view's own cost per page is printed
for the first capture (Chromium cold) and as the median of the others (warm): the
target is at most 1 s warm.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from benchlib import ROOT, serve

sys.path.insert(0, str(ROOT))

from archiver.capture.browser import BrowserFetcher, BrowserOptions
from archiver.capture.page import capture_page
from archiver.recorder import RecorderOptions, open_session

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
SCRIPT = b"""
const id = location.pathname.split('/')[2];
fetch('/api/' + id + '.json').then((r) => r.json()).then((post) => {
  const box = document.createElement('article');
  box.textContent = post.text;
  document.getElementById('root').appendChild(box);
});
"""
CSS = b"body { font-family: sans-serif; } article { padding: 20px; background: #eee; }"


def _page(i: int) -> bytes:
    return (f"<!doctype html><title>post {i}</title><link rel=stylesheet href=/app.css>"
            f"<body><div id=root></div><img src=/img/{i}.png width=64 height=64>"
            "<script src=/app.js></script>").encode()


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/post/"):
            body, kind = _page(int(path.split("/")[2])), "text/html; charset=utf-8"
        elif path.startswith("/api/"):
            i = path.split("/")[2].split(".")[0]
            text = f"Post {i}: witness statement, place, time. " * 20
            body, kind = json.dumps({"text": text}).encode(), "application/json"
        elif path.startswith("/img/"):
            body, kind = PNG + path.encode(), "image/png"
        elif path == "/app.js":
            body, kind = SCRIPT, "application/javascript"
        elif path == "/app.css":
            body, kind = CSS, "text/css"
        else:
            body, kind = b"not found", "text/plain"
        self.send_response(200 if kind != "text/plain" else 404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _capture(url: str, workdir: Path, browser: BrowserFetcher | None) -> dict[str, Any]:
    workdir.mkdir()
    recorder = RecorderOptions(allow_private_networks=True, timeout_seconds=120)
    with open_session(workdir / "capture.warc.gz", options=recorder,
                      warcinfo={"software": "bench"}) as session:
        page = capture_page(session, url)
        report = browser.run(session, page, workdir) if browser is not None else None
        session.publish()
    shutil.rmtree(workdir)
    if report is None:
        return {}
    if report.outcome.status != "ok":
        raise SystemExit(f"{url}: browser outcome {report.outcome}")
    durations = dict(report.provenance["durations_s"])
    durations["cold"] = report.provenance["browser"]["started_for_this_capture"]
    return durations


def _loop(base: str, pages: int, workdir: Path, browser: BrowserFetcher | None
          ) -> tuple[float, list[dict[str, Any]]]:
    durations = []
    started = time.perf_counter()
    for i in range(pages):
        durations.append(_capture(f"{base}/post/{i}", workdir / f"c{i}", browser))
    return time.perf_counter() - started, durations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 pages instead of 50")
    args = parser.parse_args()
    pages = 5 if args.quick else 50
    browser = BrowserFetcher(BrowserOptions())
    with serve(_Pages) as base, tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        work = Path(tmp)
        (work / "plain").mkdir()
        (work / "browser").mkdir()
        plain_s, _ = _loop(base, pages, work / "plain", None)
        try:
            with_s, durations = _loop(base, pages, work / "browser", browser)
        finally:
            browser.close()
    plain_rate = pages / plain_s * 60
    with_rate = pages / with_s * 60
    print(f"browser capture, {pages} local pages (JS-inserted post, stylesheet, image)")
    print(f"  page fetch only:      {plain_rate:9.1f} captures/min  ({plain_s:.2f} s)")
    print(f"  page fetch + browser: {with_rate:9.1f} captures/min  ({with_s:.2f} s)")
    print(f"  ratio:                {with_rate / plain_rate:9.3f} "
          f"(browser is {plain_rate / with_rate:.1f}x slower)")
    cold = [d for d in durations if d["cold"]]
    warm = [d for d in durations if not d["cold"]] or cold
    for step in ("launch", "navigate", "network_idle_wait", "scroll", "artifacts", "total"):
        values = [d[step] for d in warm if step in d]
        first = f"{cold[0][step] * 1000:7.0f} ms cold" if cold and step in cold[0] else ""
        print(f"  browser {step:18s} median {statistics.median(values) * 1000:7.0f} ms warm"
              f"  {first}")
    view = statistics.median(d["total"] for d in warm)
    print(f"  browser view per page (warm): {view:.2f} s (target <= 1 s)")
    print(json.dumps({"pages": pages, "plain_per_min": plain_rate, "browser_per_min": with_rate,
                      "view_warm_s": view,
                      "view_cold_s": cold[0]["total"] if cold else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

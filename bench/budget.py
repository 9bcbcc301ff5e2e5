"""The capture budget against a hostile page: 100,000 ``<img>`` tags.

    .venv/bin/python bench/budget.py            # 100,000 images, browser off
    .venv/bin/python bench/budget.py --quick    # 5,000 images
    .venv/bin/python bench/budget.py --images 20000 --browser

A local server answers one page holding N ``<img>`` tags, each naming an image of its own
(a 1x1 PNG, too small to be kept as media, so no item limit ends the work early), and
counts every request it receives. One ``archiver capture`` (the real CLI, a fresh
archive, default settings but for private networks) runs against it. Printed: the
requests the server saw, the capture's wall time, the size of its ``provenance.json``
and of its manifest, and what each fetcher's outcome says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchlib import ROOT

ARCHIVER = ROOT / ".venv" / "bin" / "archiver"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


class _Site(BaseHTTPRequestHandler):
    images = 100_000
    seen = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with _Site.lock:
            _Site.seen += 1
        if self.path == "/page.html":
            tags = "".join(f'<img src="/i/{i}.png">' for i in range(_Site.images))
            body = f"<!doctype html><title>many images</title><body>{tags}</body>".encode()
            kind = "text/html; charset=utf-8"
        else:
            body, kind = PNG, "image/png"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--browser", action="store_true", help="keep the browser view on")
    args = parser.parse_args()
    _Site.images = args.images or (5_000 if args.quick else 100_000)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/page.html"
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
        env.update(ARCHIVER_HOME=home, ARCHIVER_SIGNING__PASSPHRASE="bench",
                   ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS="true",
                   ARCHIVER_BROWSER__ENABLED="true" if args.browser else "false")
        subprocess.run([str(ARCHIVER), "init"], env=env, check=True, capture_output=True)
        _Site.seen = 0
        began = time.perf_counter()
        done = subprocess.run([str(ARCHIVER), "capture", url, "--json"], env=env,
                              capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - began
        if done.returncode not in (0, 1):
            raise SystemExit(f"archiver capture exited {done.returncode}:\n{done.stderr}")
        capture = json.loads(done.stdout.strip().splitlines()[-1])
        sizes = {a["name"]: a["size"] for a in capture["artifacts"]}
        manifest = subprocess.run(
            [str(ARCHIVER), "get", capture["id"], "manifest.json", "-o", "-"], env=env,
            capture_output=True, check=False).stdout
    server.shutdown()
    result = {
        "images": _Site.images,
        "requests_seen": _Site.seen,
        "seconds": round(seconds, 1),
        "provenance_bytes": sizes.get("provenance.json"),
        "manifest_bytes": len(manifest) or None,
        "status": capture["status"],
        "outcomes": capture["outcomes"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())

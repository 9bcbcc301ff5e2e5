"""Decompression bombs through the whole capture: time, peak memory, what is stored.

    .venv/bin/python bench/bombs.py            # 1 GiB of zeros in about 1 MB of gzip
    .venv/bin/python bench/bombs.py --quick    # 64 MiB
    .venv/bin/python bench/bombs.py --size-mib 4096

A local server answers the same gzip bomb (N MiB of zeros, ``Content-Encoding: gzip``)
as ``image/png``, ``text/html`` and ``video/mp4``, and a page whose ``<img>`` is one.
Each runs through one ``archiver capture --json`` (the real CLI, a fresh archive,
default settings but for private networks; the browser view on), watched from outside
every 50 ms through ``/proc``. Printed per case: the capture's wall time, the peak RSS
of the archiver process itself (VmHWM) and of its largest child process (Chromium's,
ffmpeg's, ffprobe's), the most its children held at once, the WARC's size, what the
archive stored, and the media outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchlib import ROOT

ARCHIVER = ROOT / ".venv" / "bin" / "archiver"
MiB = 1024 * 1024


def gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes as one gzip member, built a MiB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block, parts = bytes(MiB), []
    for _ in range(size // MiB):
        parts.append(packer.compress(block))
    parts.append(packer.flush())
    return b"".join(parts)


class _Site(BaseHTTPRequestHandler):
    bomb = b""

    def do_GET(self) -> None:
        if self.path == "/post.html":
            body, kind, coding = b"<html><body><p>a post</p><img src='/img.png'></body></html>", \
                "text/html", None
        else:
            kind = {"/bomb.png": "image/png", "/img.png": "image/png", "/bomb.html": "text/html",
                    "/bomb.mp4": "video/mp4"}[self.path]
            body, coding = _Site.bomb, "gzip"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        if coding:
            self.send_header("Content-Encoding", coding)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        with contextlib.suppress(ConnectionError, TimeoutError):  # the capture stopped reading
            self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _status(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                ppid = int(stat.read().rpartition(b")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in parents.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return "?"


def capture(url: str, env: dict[str, str]) -> dict[str, Any]:
    began = time.perf_counter()
    process = subprocess.Popen([str(ARCHIVER), "capture", url, "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own, child_peak, child_name, children_at_once = 0, 0, "", 0
    while process.poll() is None:
        own = max(own, _status(process.pid, "VmHWM"))
        at_once = 0
        for pid in _descendants(process.pid):
            peak = _status(pid, "VmHWM")
            at_once += _status(pid, "VmRSS")
            if peak > child_peak:
                child_peak, child_name = peak, _name(pid)
        children_at_once = max(children_at_once, at_once)
        time.sleep(0.05)
    out, err = process.communicate()
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        raise SystemExit(f"archiver capture {url} failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    sizes = {a["name"]: a["size"] for a in result["artifacts"]}
    return {
        "seconds": round(seconds, 2),
        "archiver_peak_rss_mib": round(own / MiB, 1),
        "largest_child_peak_rss_mib": round(child_peak / MiB, 1),
        "largest_child": child_name,
        "children_rss_at_once_mib": round(children_at_once / MiB, 1),
        "warc_bytes": sizes.get("capture.warc.gz"),
        "stored_bytes": sum(sizes.values()),
        "media_artifacts": [n for n in sizes if n.startswith("media-")],
        "media": result["outcomes"].get("media"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size-mib", type=int, default=None)
    args = parser.parse_args()
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    _Site.bomb = gzip_zeros(size)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"bomb: {size // MiB} MiB of zeros in {len(_Site.bomb):,} bytes of gzip")
    with tempfile.TemporaryDirectory(prefix="bench-bombs-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
        env.update(ARCHIVER_HOME=home, ARCHIVER_SIGNING__PASSPHRASE="bench",
                   ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS="true")
        subprocess.run([str(ARCHIVER), "init"], env=env, check=True, capture_output=True)
        for path in ("/bomb.png", "/bomb.html", "/bomb.mp4", "/post.html"):
            figures = capture(base + path, env)
            media = figures.pop("media") or {}
            print(f"{path:<11} {figures['seconds']:>6.2f} s  archiver "
                  f"{figures['archiver_peak_rss_mib']:>6.1f} MiB"
                  f"  largest child {figures['largest_child_peak_rss_mib']:>6.1f} MiB"
                  f" ({figures['largest_child']})  children at once"
                  f" {figures['children_rss_at_once_mib']:>6.1f} MiB  WARC"
                  f" {figures['warc_bytes']:>10,} B  stored {figures['stored_bytes']:>10,} B"
                  f"  media {media.get('status')}/{media.get('reason')}"
                  f"  media artifacts {figures['media_artifacts']}")
    server.shutdown()


if __name__ == "__main__":
    main()

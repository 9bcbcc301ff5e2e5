"""Media capture benchmark: a 1 GiB video from a local server, captured by the media
fetcher (yt-dlp through the recorder, WARC, resource record, sealing digests), against a
plain streamed download of the same file with SHA-256 + SHA-512, in the same run.

    .venv/bin/python bench/media.py            # 1 GiB
    .venv/bin/python bench/media.py --quick    # 64 MiB
    .venv/bin/python bench/media.py --size-mib 2048

Each phase runs in its own process and reports that process's peak RSS (VmHWM, which an
exec resets: ru_maxrss would carry the forking parent's peak). The capture's must stay
under 150 MB whatever the size: bodies stream through files, never memory. Frame
sampling is off (the test file is random bytes, not a decodable video).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchlib import ROOT, peak_rss_mib

MiB = 1024 * 1024
BLOCK = random.Random(1).randbytes(MiB)  # repeats beyond gzip's 32 KiB window
LIMIT_MB = 150


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        size = self.server.size
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size
        )
        left = size
        try:
            while left:
                piece = BLOCK[: min(left, len(BLOCK))]
                self.wfile.write(piece)
                left -= len(piece)
        except (ConnectionError, TimeoutError):
            return

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, size: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.size = size


def _phase_plain(url: str, directory: Path) -> dict[str, Any]:
    import httpx

    from chain_of_custody.digest import Hasher

    began = time.perf_counter()
    hasher = Hasher()
    with httpx.stream("GET", url, timeout=60) as response, \
            (directory / "plain.mp4").open("wb") as out:
        for chunk in response.iter_raw(1024 * 1024):
            hasher.update(chunk)
            out.write(chunk)
    digest = hasher.digest()
    return {"seconds": time.perf_counter() - began, "sha256": digest.sha256,
            "size": digest.size}


def _phase_capture(url: str, directory: Path) -> dict[str, Any]:
    from archiver.capture.media import MediaFetcher, MediaOptions
    from archiver.capture.page import capture_page
    from archiver.recorder import RecorderOptions, open_session

    began = time.perf_counter()
    options = RecorderOptions(allow_private_networks=True, timeout_seconds=3600,
                              max_total_bytes=64 * 1024 * MiB, max_media_bytes=64 * 1024 * MiB)
    with open_session(directory / "capture.warc.gz", options=options,
                      warcinfo={"software": "bench"}) as session:
        page = capture_page(session, url)
        report = MediaFetcher(MediaOptions(frame_samples=0, timeout_seconds=3600)).run(
            session, page, directory)
        session.publish()
    media = [a for a in report.artifacts if a.role == "media"]
    assert report.outcome.status == "ok", report.outcome
    return {"seconds": time.perf_counter() - began, "sha256": media[0].digest.sha256,
            "size": media[0].digest.size,
            "warc_bytes": (directory / "capture.warc.gz").stat().st_size}


def _run_phase(name: str, url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-media-{name}-", dir=ROOT) as directory:
        done = subprocess.run(
            [sys.executable, __file__, "--phase", name, "--url", url, "--dir", directory],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        sys.path.insert(0, str(ROOT))
        phase = _phase_plain if args.phase == "plain" else _phase_capture
        result = phase(args.url, Path(args.dir))
        result["peak_rss_kib"] = round(peak_rss_mib() * 1024)
        print(json.dumps(result))
        return 0
    size = (args.size_mib or (64 if args.quick else 1024)) * MiB
    server = _Server(size)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/video.mp4"
    try:
        plain = _run_phase("plain", url)
        capture = _run_phase("capture", url)
    finally:
        server.shutdown()
    if plain["sha256"] != capture["sha256"] or capture["size"] != size:
        raise SystemExit("the capture's media file is not the bytes served")
    peak_mb = capture["peak_rss_kib"] * 1024 / 1e6
    print(f"media capture of {size // MiB} MiB (same bytes, sha256 {capture['sha256'][:16]}…)")
    print(f"  plain download + sha256/sha512: {plain['seconds']:8.2f} s  "
          f"peak RSS {plain['peak_rss_kib'] * 1024 / 1e6:6.1f} MB")
    print(f"  media capture (WARC, seal):     {capture['seconds']:8.2f} s  "
          f"peak RSS {peak_mb:6.1f} MB  WARC {capture['warc_bytes'] / 1e6:.0f} MB")
    ratio = capture["seconds"] / plain["seconds"]
    warc_ratio = capture["warc_bytes"] / size
    print(f"  ratio capture / plain:          {ratio:8.2f} x  (target <= 1.5 x)")
    print(f"  WARC / video size:              {warc_ratio:8.3f}    (target <= 1.05)")
    verdict = "ok" if peak_mb < LIMIT_MB else "OVER"
    print(f"  capture peak RSS under {LIMIT_MB} MB: {verdict}")
    print(json.dumps({"size": size, "plain_s": plain["seconds"], "capture_s": capture["seconds"],
                      "ratio": ratio, "warc_ratio": warc_ratio, "peak_rss_mb": peak_mb}))
    return 0 if peak_mb < LIMIT_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())

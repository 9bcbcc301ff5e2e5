"""Benchmarks, each against a baseline measured in the same run, printed as ratios.

    .venv/bin/python bench/run.py            # full sizes (several minutes)
    .venv/bin/python bench/run.py --quick    # small sizes, to check the benchmarks run
    .venv/bin/python bench/run.py --only ledger

* capture:  N local pages through the full pipeline (record, seal, sign, store, ledger,
            checkpoint) against a bare loop of httpx + warcio writing the same pages.
* ledger:   appends per second (one transaction each, as captures do; each entry
            signed) against plain INSERTs of the same rows; full verification time (every
            leaf, node, entry signature and checkpoint) against hashing the same leaves
            with hashlib alone; a checkpoint's own checks, first and incremental.
* ingest:   hashing and storing a large blob (SHA-256 + SHA-512 while copying, fsync,
            verify after write) against hashlib alone over the same file; peak memory.

Peak memory is each phase's own process's peak RSS: every measurement runs in a fresh
subprocess so one phase cannot inflate another's figure.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from benchlib import ROOT, peak_rss_mib, run_phase, serve

MiB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------


def _page(i: int) -> bytes:
    paragraph = f"<p>Post {i}: witness statement, location, time. </p>" * 300
    return f"<!doctype html><title>post {i}</title><body>{paragraph}</body>".encode()


class _Pages(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, a keep-alive
    # client (the baseline) would wait for a delayed ACK on every page and look slow.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        i = int(self.path.strip("/").split("/")[-1] or 0)
        body = _page(i)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _phase(name: str, **params: Any) -> dict[str, Any]:
    return run_phase(__file__, name, **params)


# -- phases (each runs in its own process) --------------------------------------------------


def phase_capture_baseline(pages: int, workdir: str) -> dict[str, Any]:
    import httpx
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with serve(_Pages) as base:
        client = httpx.Client()

        def loop() -> None:
            for i in range(pages):
                path = Path(workdir) / f"baseline-{i}.warc.gz"
                with path.open("wb") as fh:
                    writer = WARCWriter(fh, gzip=True)
                    url = f"{base}/post/{i}"
                    response = client.get(url)
                    headers = StatusAndHeaders(
                        f"{response.status_code} {response.reason_phrase}",
                        list(response.headers.raw),
                        protocol="HTTP/1.1",
                    )
                    record = writer.create_warc_record(
                        url, "response", payload=io.BytesIO(response.content),
                        http_headers=headers,
                    )
                    writer.write_record(record)

        seconds = _timed(loop)
        client.close()
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def phase_capture_archiver(pages: int, workdir: str) -> dict[str, Any]:
    os.environ.update({
        "ARCHIVER_HOME": str(Path(workdir) / "archive"),
        "ARCHIVER_SIGNING__PASSPHRASE": "bench-passphrase",
        "ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS": "true",
        # The core pipeline; the browser view and media have benchmarks of their own.
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_MEDIA__ENABLED": "false",
    })
    from archiver.archive import Archive, initialise
    from archiver.settings import load_settings

    settings = load_settings()
    initialise(settings)
    with serve(_Pages) as base, Archive.open(settings) as archive:

        def loop() -> None:
            for i in range(pages):
                capture = archive.capture(f"{base}/post/{i}")
                assert capture.ok, capture.message

        seconds = _timed(loop)
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def _leaf_rows(n: int) -> Iterator[tuple[str, str, str, str, str]]:
    for i in range(n):
        yield (
            f"2026-11-22T12:00:00.{i % 1000000:06d}Z",
            "service:archiver",
            "capture.completed",
            f"capture:{i:08d}",
            json.dumps({"manifest_sha256": hashlib.sha256(str(i).encode()).hexdigest()}),
        )


def phase_ledger_baseline(entries: int, workdir: str) -> dict[str, Any]:
    import sqlite3

    db = sqlite3.connect(Path(workdir) / "baseline.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, time, actor, action, subject, payload)")

    def loop() -> None:
        for seq, row in enumerate(_leaf_rows(entries)):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?,?,?,?,?,?)", (seq, *row))
            db.execute("COMMIT")

    append_seconds = _timed(loop)

    def hash_all() -> None:
        for row in db.execute("SELECT * FROM t ORDER BY seq"):
            hashlib.sha256(b"\x00" + json.dumps(row).encode()).digest()

    verify_seconds = _timed(hash_all)
    return {"append_seconds": append_seconds, "verify_seconds": verify_seconds,
            "peak_rss_mib": peak_rss_mib()}


def phase_ledger_archiver(entries: int, workdir: str) -> dict[str, Any]:
    from archiver.db import make_engine
    from archiver.schema import upgrade
    from chain_of_custody.keys import SigningKey
    from chain_of_custody.ledger import Ledger

    engine = make_engine(f"sqlite:///{Path(workdir) / 'ledger.db'}")
    upgrade(engine)
    key = SigningKey.generate()
    origin = "bench/evidence-archiver"
    ledger = Ledger(engine, origin=origin, signer=key)  # every entry signed, as in an archive
    ledger.append(actor="bench", action="key.created", subject=f"key:{key.key_id}",
                  payload={"key_id": key.key_id, "algorithm": key.algorithm,
                           "public_key_pem": key.public.pem().decode("ascii")})

    def loop() -> None:
        for _seq, (_t, actor, action, subject, payload) in enumerate(_leaf_rows(entries)):
            ledger.append(actor=actor, action=action, subject=subject,
                          payload=json.loads(payload))

    append_seconds = _timed(loop)
    # The first checkpoint by a key checks the whole ledger; later ones only what is new.
    first_checkpoint_seconds = _timed(lambda: ledger.create_checkpoint(key, origin))
    for i in range(10):
        ledger.append(actor="bench", action="note.added", subject="case:bench",
                      payload={"i": i})
    checkpoint_seconds = _timed(lambda: ledger.create_checkpoint(key, origin))
    verify_seconds = _timed(lambda: ledger.verify([key.public]))
    return {"append_seconds": append_seconds, "verify_seconds": verify_seconds,
            "first_checkpoint_seconds": first_checkpoint_seconds,
            "checkpoint_seconds": checkpoint_seconds, "peak_rss_mib": peak_rss_mib()}


def _make_blob(path: Path, size: int) -> tuple[str, str]:
    """Write ``size`` random bytes to ``path`` as a capture does: hashed while written
    (the digests come from sealing, not from re-reading) and fsynced when complete (the
    recorder publishes its files so). Returns (sha256, sha512)."""
    block = os.urandom(4 * MiB)
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    with path.open("wb") as fh:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            fh.write(chunk)
            sha256.update(chunk)
            sha512.update(chunk)
            written += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return sha256.hexdigest(), sha512.hexdigest()


def phase_ingest_baseline(source: str) -> dict[str, Any]:
    def run() -> None:
        sha256, sha512 = hashlib.sha256(), hashlib.sha512()
        with Path(source).open("rb") as fh:
            while chunk := fh.read(MiB):
                sha256.update(chunk)
                sha512.update(chunk)

    return {"seconds": _timed(run), "peak_rss_mib": peak_rss_mib()}


def phase_ingest_archiver(
    source: str, store: str, link: bool, sha256: str, sha512: str, size: int
) -> dict[str, Any]:
    from storage.local import LocalBlobStore

    blobs = LocalBlobStore(Path(store), link_sources=link)
    path = Path(source)
    before = path.stat().st_ino

    def run() -> None:
        # The pipeline's call: the digests are known from sealing; the store checks both.
        blobs.put_file(path, sha256=sha256, size=size, sha512=sha512)

    seconds = _timed(run)
    linked = blobs.path_for(sha256).stat().st_ino == before
    if linked != link:
        raise SystemExit(f"expected the {'link' if link else 'copy'} path, got the other")
    return {"seconds": seconds, "peak_rss_mib": peak_rss_mib()}


PHASES: dict[str, Callable[..., dict[str, Any]]] = {
    name.removeprefix("phase_"): fn for name, fn in globals().items()
    if name.startswith("phase_") and callable(fn)
}


# -- driver ------------------------------------------------------------------------------


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:6.2f}x" if base > 0 else "   n/a"


def bench_capture(pages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = _phase("capture_baseline", pages=pages, workdir=tmp)
        ours = _phase("capture_archiver", pages=pages, workdir=tmp)
    print(f"capture: {pages} local pages")
    print(f"  baseline httpx + warcio loop: {pages / base['seconds']:8.1f} pages/s")
    print(f"  archiver full pipeline:       {pages / ours['seconds']:8.1f} pages/s")
    print(f"  time ratio archiver/baseline: {_ratio(ours['seconds'], base['seconds'])}"
          "  (record + seal + sign + store + ledger + checkpoint per page)")
    print(f"  peak RSS: baseline {base['peak_rss_mib']:.0f} MiB, "
          f"archiver {ours['peak_rss_mib']:.0f} MiB")


def bench_ledger(entries: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = _phase("ledger_baseline", entries=entries, workdir=tmp)
        ours = _phase("ledger_archiver", entries=entries, workdir=tmp)
    print(f"ledger: {entries} entries, one transaction per append (SQLite)")
    print(f"  appends/s: baseline plain INSERT {entries / base['append_seconds']:9.0f}, "
          f"ledger {entries / ours['append_seconds']:9.0f}  "
          f"(time ratio {_ratio(ours['append_seconds'], base['append_seconds'])})")
    print(f"  full verification: {ours['verify_seconds']:.2f} s; hashing the leaves alone "
          f"{base['verify_seconds']:.2f} s  "
          f"(ratio {_ratio(ours['verify_seconds'], base['verify_seconds'])})")
    print(f"  checkpoint: first by the key (whole ledger checked) "
          f"{ours['first_checkpoint_seconds']:.2f} s, after 10 more entries "
          f"{ours['checkpoint_seconds'] * 1000:.1f} ms")
    print(f"  peak RSS: ledger process {ours['peak_rss_mib']:.0f} MiB")


def bench_ingest(size: int, repeats: int = 3) -> None:
    # The pipeline's realistic case: the capture has just written (and fsynced) the file in
    # its scratch directory under the archive home, on the same filesystem as the local
    # store, so put_file links it. The copy path (a store on another filesystem, or
    # linking refused) is forced with link_sources=False. Every round writes a fresh file
    # (a linked one becomes the blob) and measures hashlib and put_file over that same
    # file; the best of the rounds is kept, as other load on the machine only ever adds.
    best: dict[str, dict[str, dict[str, float]]] = {"link": {}, "copy": {}}
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        home = Path(tmp) / "home"
        for round_ in range(repeats):
            for path_kind, link in (("link", True), ("copy", False)):
                scratch = home / "work" / f"capture-{path_kind}-{round_}"
                scratch.mkdir(parents=True)
                source = scratch / "capture.warc.gz"
                sha256, sha512 = _make_blob(source, size)
                results = {
                    "base": _phase("ingest_baseline", source=str(source)),
                    "ours": _phase("ingest_archiver", source=str(source),
                                   store=str(home / f"blobs-{path_kind}-{round_}"), link=link,
                                   sha256=sha256, sha512=sha512, size=size),
                }
                source.unlink()
                for side, result in results.items():
                    kept = best[path_kind].get(side)
                    if kept is None or result["seconds"] < kept["seconds"]:
                        best[path_kind][side] = result
    print(f"ingest: one {size / MiB:.0f} MiB file just written and fsynced by a capture, "
          "into the local store (digests known from sealing; the store checks both); "
          f"best of {repeats}")
    what = {
        "link": "same filesystem: hard link, verify (reads the data once)",
        "copy": "link_sources=False: copy while hashing, verify (reads it twice)",
    }
    for path_kind, sides in best.items():
        base, ours = sides["base"], sides["ours"]
        print(f"  {path_kind} path, {what[path_kind]}")
        print(f"    hashlib sha256+sha512 alone: {base['seconds']:6.2f} s "
              f"{size / MiB / base['seconds']:7.1f} MiB/s")
        print(f"    put_file:                    {ours['seconds']:6.2f} s "
              f"{size / MiB / ours['seconds']:7.1f} MiB/s  "
              f"(time ratio {_ratio(ours['seconds'], base['seconds'])})")
        print(f"    peak RSS: hashlib {base['peak_rss_mib']:.0f} MiB, "
              f"store {ours['peak_rss_mib']:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--only", choices=["capture", "ledger", "ingest"])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](**json.loads(args.params))))
        return 0
    sys.path.insert(0, str(ROOT))
    sizes = {"capture": 200, "ledger": 100_000, "ingest": 1024 * MiB}
    if args.quick:
        sizes = {"capture": 20, "ledger": 2_000, "ingest": 64 * MiB}
    runners = {"capture": bench_capture, "ledger": bench_ledger, "ingest": bench_ingest}
    for name, runner in runners.items():
        if args.only in (None, name):
            runner(sizes[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

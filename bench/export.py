"""Benchmark: exporting and verifying an evidence bundle, against hashing alone.

    .venv/bin/python bench/export.py            # a 2 GiB case (several minutes)
    .venv/bin/python bench/export.py --quick    # a 128 MiB case

The case: 8 captures, each a WARC (one response record with an incompressible body,
written by warcio) and a "video" of random bytes, sealed, stored and put on the ledger
through the library, as captures with media are. It is built by the library rather than
by capturing, so the figure does not move with the fetchers' cost.

Measured, in the same run, each in a fresh process (see bench/run.py):

* baseline: SHA-256 + SHA-512 over the case's stored files (hashlib, 1 MiB reads);
* export:   ``export_case`` (hard-links, a WACZ per capture, custody files, report, the
            ZIP streamed while both digests are computed, the ledger event);
* verify:   ``verify_bundle`` with the trusted key and the WARC record check (every file
            hashed twice over, every WARC record digest, every WACZ's WARC).

Printed: throughput over the case's bytes and the ratio of each to the baseline; peak
RSS of each process and of the tools it ran (wacz).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchlib import ROOT, peak_rss_mib, run_phase

MiB = 1024 * 1024
CASE = "Bench case"
PASSPHRASE = "bench-passphrase"


def _phase(name: str, **params: Any) -> dict[str, Any]:
    return run_phase(__file__, name, **params)


def _peaks() -> dict[str, float]:
    return {"peak_rss_mib": peak_rss_mib(),
            "children_peak_rss_mib":
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def _environment(workdir: str) -> None:
    for name in [n for n in os.environ if n.upper().startswith("ARCHIVER_")]:
        del os.environ[name]
    os.environ.update({"ARCHIVER_HOME": str(Path(workdir) / "archive"),
                       "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
                       "ARCHIVER_OPERATOR": "bench@localhost"})


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(4 * MiB, left))
            handle.write(chunk)
            left -= len(chunk)


# -- phases (each in its own process) ---------------------------------------------------------


def phase_setup(workdir: str, captures: int, warc_bytes: int, media_bytes: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    _environment(workdir)
    import sqlalchemy as sa
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from archiver import models
    from archiver.archive import Archive, initialise
    from archiver.clock import rfc3339
    from archiver.settings import load_settings
    from chain_of_custody.digest import digest_bytes, digest_stream
    from chain_of_custody.manifest import (
        MANIFEST_FILE,
        SIGNATURE_FILE,
        Artifact,
        build_manifest,
        sign_manifest,
    )

    settings = load_settings()
    initialise(settings)
    scratch = Path(workdir) / "scratch"
    scratch.mkdir()
    blobs: list[str] = []
    with Archive.open(settings) as archive:
        key = archive.signing_key
        for number in range(captures):
            capture_id = str(uuid.uuid4())
            url = f"https://example.org/post/{number}"
            body = scratch / "body.bin"
            _random_file(body, warc_bytes)
            warc = scratch / "capture.warc.gz"
            with warc.open("wb") as out, body.open("rb") as payload:
                writer = WARCWriter(out, gzip=True)
                writer.write_record(writer.create_warcinfo_record(
                    "capture.warc.gz", {"software": "bench"}))
                headers = StatusAndHeaders("200 OK", [
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", str(warc_bytes))], protocol="HTTP/1.1")
                writer.write_record(writer.create_warc_record(
                    url, "response", payload=payload, length=warc_bytes, http_headers=headers))
            media = scratch / "video.mp4"
            _random_file(media, media_bytes)
            artifacts = []
            for path, name, role, kind in ((warc, "capture.warc.gz", "warc", "application/warc"),
                                           (media, "video.mp4", "media", "video/mp4")):
                with path.open("rb") as stream:
                    digest = digest_stream(stream)
                archive.store.put_file(path, sha256=digest.sha256, size=digest.size)
                # A local store may link the file in as the blob itself: never write to
                # that name again (the next capture's random file would change the blob).
                path.unlink()
                artifacts.append(Artifact(name, role, kind, digest))
            now = rfc3339(archive.clock())
            signed = sign_manifest(build_manifest(
                capture_id=capture_id,
                requested={"url": url, "by": "bench@localhost", "at": now, "via": "cli",
                           "source": None, "case": CASE, "note": None},
                happened={"started": now, "ended": now, "host": "bench", "software": {},
                          "fetchers": {}},
                target={"final_url": url, "http_status": 200, "peer_ip": None,
                        "tls_certificate_sha256": None, "redirects": [],
                        "content_type": "application/octet-stream"},
                artifacts=artifacts,
                key_id=key.key_id), key)
            sealed = [*artifacts,
                      Artifact(MANIFEST_FILE, "manifest", "application/json", signed.digest),
                      Artifact(SIGNATURE_FILE, "signature", "application/octet-stream",
                               digest_bytes(signed.signature))]
            for data in (signed.canonical, signed.signature):
                small = scratch / "small"
                small.write_bytes(data)
                archive.store.put_file(small, sha256=hashlib.sha256(data).hexdigest(),
                                       size=len(data))
                small.unlink()  # as above: it may now be the blob
            with archive.engine.begin() as conn:
                case_id = conn.execute(sa.select(models.cases.c.id).where(
                    models.cases.c.name == CASE)).scalar_one_or_none()
                if case_id is None:
                    case_id = conn.execute(sa.insert(models.cases).values(
                        name=CASE, created=now)).inserted_primary_key[0]  # type: ignore[index]
                archive.ledger.append(actor="bench@localhost", action="capture.requested",
                                      subject=f"capture:{capture_id}",
                                      payload={"url": url, "case": CASE}, connection=conn)
                entry = archive.ledger.append(
                    actor="service:archiver", action="capture.completed",
                    subject=f"capture:{capture_id}",
                    payload={"url": url, "manifest_sha256": signed.digest.sha256,
                             "signature_sha256": digest_bytes(signed.signature).sha256,
                             "key_id": key.key_id}, connection=conn)
                conn.execute(sa.insert(models.captures).values(
                    id=capture_id, url=url, case_id=case_id, requested_by="bench@localhost",
                    requested_via="cli", requested_at=now, status="completed", started=now,
                    ended=now, final_url=url, http_status=200,
                    manifest_sha256=signed.digest.sha256, key_id=key.key_id,
                    ledger_seq=entry.seq))
                conn.execute(sa.insert(models.artifacts), [
                    {"capture_id": capture_id, "name": a.name, "role": a.role,
                     "media_type": a.media_type, "size": a.digest.size,
                     "sha256": a.digest.sha256, "sha512": a.digest.sha512} for a in sealed])
            blobs += [a.digest.sha256 for a in sealed]
            archive.checkpoint()
    for path in scratch.iterdir():
        path.unlink()
    store = Path(workdir) / "archive" / "blobs" / "sha256"
    files = [str(store / sha[:2] / sha[2:4] / sha) for sha in blobs]
    return {"files": files, "bytes": sum(Path(f).stat().st_size for f in files),
            "key_id": key.key_id}


def phase_baseline(files: list[str]) -> dict[str, Any]:
    def run() -> None:
        for name in files:
            sha256, sha512 = hashlib.sha256(), hashlib.sha512()
            with open(name, "rb") as handle:
                while chunk := handle.read(MiB):
                    sha256.update(chunk)
                    sha512.update(chunk)

    start = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - start, **_peaks()}


def phase_export(workdir: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    _environment(workdir)
    from archiver.archive import Archive
    from archiver.export.case import export_case
    from archiver.settings import load_settings

    out = Path(workdir) / "bundle.zip"
    with Archive.open(load_settings()) as archive:
        start = time.perf_counter()
        report = export_case(archive, case=CASE, out=out)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "bundle": str(out), "bundle_bytes": report.digest.size,
            **_peaks()}


def phase_verify(bundle: str, key_id: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from archiver.export.warc_check import check_warc_records
    from chain_of_custody.bundle import verify_bundle

    start = time.perf_counter()
    report = verify_bundle(Path(bundle), trusted_key_ids=[key_id],
                           warc_checker=check_warc_records)
    seconds = time.perf_counter() - start
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    return {"seconds": seconds, "checks": len(report.checks), **_peaks()}


PHASES = {"setup": phase_setup, "baseline": phase_baseline, "export": phase_export,
          "verify": phase_verify}


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:5.2f}x" if base > 0 else "  n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 128 MiB case")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](**json.loads(args.params))))
        return 0
    captures, warc_mib, media_mib = (4, 8, 24) if args.quick else (8, 64, 192)
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp:
        setup = _phase("setup", workdir=tmp, captures=captures, warc_bytes=warc_mib * MiB,
                       media_bytes=media_mib * MiB)
        base = _phase("baseline", files=setup["files"])
        export = _phase("export", workdir=tmp)
        verify = _phase("verify", bundle=export["bundle"], key_id=setup["key_id"])
    size = setup["bytes"] / MiB
    print(f"export: a case of {captures} captures, {size:.0f} MiB stored "
          f"({warc_mib} MiB WARC + {media_mib} MiB media each); bundle "
          f"{export['bundle_bytes'] / MiB:.0f} MiB (the WACZ repeats each WARC)")
    print(f"  hashlib sha256+sha512 alone:  {size / base['seconds']:7.1f} MiB/s  "
          f"({base['seconds']:.1f} s)")
    print(f"  archiver export:              {size / export['seconds']:7.1f} MiB/s  "
          f"({export['seconds']:.1f} s, time ratio {_ratio(export['seconds'], base['seconds'])})")
    print(f"  archiver verify-bundle:       {size / verify['seconds']:7.1f} MiB/s  "
          f"({verify['seconds']:.1f} s, time ratio {_ratio(verify['seconds'], base['seconds'])},"
          f" {verify['checks']} checks)")
    print(f"  peak RSS: hashlib {base['peak_rss_mib']:.0f} MiB; export "
          f"{export['peak_rss_mib']:.0f} MiB (wacz {export['children_peak_rss_mib']:.0f} MiB); "
          f"verify {verify['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

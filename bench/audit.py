"""Benchmark: a fixity audit, against hashing the same stored files alone.

    .venv/bin/python bench/audit.py            # a 2 GiB archive (a few minutes)
    .venv/bin/python bench/audit.py --quick    # a 128 MiB archive

The archive is the export benchmark's case (``bench/export.py``: 8 captures, each a WARC
and a "video" of random bytes, sealed, stored in the local store and on the ledger).
Measured, each in a fresh process:

* baseline: SHA-256 + SHA-512 over every stored file (hashlib, 1 MiB reads);
* audit:    ``Auditor.run`` over the whole archive (the ledger entries read, every
            manifest's signature verified, every copy re-hashed against it, the audit
            recorded on the ledger with a checkpoint).

Printed: throughput over the stored bytes, the ratio to the baseline, and peak RSS (an
audit streams: its memory must not grow with the blobs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, peak_rss_mib, run_phase

MiB = 1024 * 1024
EXPORT = str(Path(__file__).with_name("export.py"))


def phase_audit(workdir: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from export import _environment

    _environment(workdir)
    from archiver.archive import Archive
    from archiver.audit import Auditor
    from archiver.settings import load_settings

    with Archive.open(load_settings()) as archive:
        archive.signing_key  # noqa: B018 - decrypting the key is not the audit's cost
        start = time.perf_counter()
        report = Auditor(archive, actor="bench@localhost").run()
        seconds = time.perf_counter() - start
    assert report.ok, report
    return {"seconds": seconds, "bytes": report.bytes, "copies": report.copies,
            "peak_rss_mib": peak_rss_mib()}


PHASES = {"audit": phase_audit}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](**json.loads(args.params))))
        return 0
    captures = 8
    per_capture = (16 if args.quick else 256) * MiB
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as workdir:
        setup = run_phase(EXPORT, "setup", workdir=workdir, captures=captures,
                          warc_bytes=per_capture // 2, media_bytes=per_capture // 2)
        base = run_phase(EXPORT, "baseline", files=setup["files"])
        ours = run_phase(__file__, "audit", workdir=workdir)
    size = setup["bytes"]
    print(f"audit: {captures} captures, {size / MiB:.0f} MiB stored, one store "
          f"({ours['copies']} copies)")
    print(f"  baseline (sha256+sha512): {size / MiB / base['seconds']:7.1f} MiB/s  "
          f"peak {base['peak_rss_mib']:.0f} MiB")
    print(f"  audit:                    {ours['bytes'] / MiB / ours['seconds']:7.1f} MiB/s  "
          f"peak {ours['peak_rss_mib']:.0f} MiB  "
          f"({ours['seconds'] / base['seconds']:.2f}x the baseline's time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

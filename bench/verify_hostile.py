"""Benchmark: a hostile member in a bundle costs what reading it once costs, in flat memory.

    .venv/bin/python bench/verify_hostile.py            # 256 MiB and 1 GiB members
    .venv/bin/python bench/verify_hostile.py --quick    # 16 MiB members

For members of zeros and of random bytes, each in a fresh process (see bench/run.py):

* baseline: SHA-256 + SHA-512 of the member's file (1 MiB reads): reading it once;
* warc:     ``check_warc_records`` on the member, as ``verify-bundle`` runs it on a
            capture's WARC (it is not a WARC: how soon and how cheaply is that found?);
* verify:   ``verify_bundle`` on a ZIP of one bag folder holding the member (stored):
            the ZIP audit, both digests of the member, and the checks that then fail.

Printed: seconds and ratio to the baseline, peak RSS, and the longest message. The
issue's figures before: 32 MiB of zeros took 43 s and 560 MB RSS, with a FAIL line of
134 million characters; 1 GiB ran past 600 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from benchlib import ROOT, peak_rss_mib, run_phase

MiB = 1024 * 1024


def _member(path: Path, kind: str, size: int) -> None:
    with path.open("wb") as handle:
        left = size
        while left:
            step = min(4 * MiB, left)
            handle.write(bytes(step) if kind == "zeros" else os.urandom(step))
            left -= step


def phase_baseline(path: str) -> dict[str, Any]:
    sha256, sha512 = hashlib.sha256(), hashlib.sha512()
    started = time.perf_counter()
    with open(path, "rb") as handle:
        while chunk := handle.read(MiB):
            sha256.update(chunk)
            sha512.update(chunk)
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def phase_warc(path: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from archiver.export.warc_check import check_warc_records

    started = time.perf_counter()
    with open(path, "rb") as handle:
        result = check_warc_records(handle)
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
            "longest": max((len(p) for p in result.problems), default=0),
            "first": result.problems[0][:100] if result.problems else ""}


def phase_verify(path: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from archiver.export.warc_check import check_warc_records
    from chain_of_custody.bundle import iter_lines, verify_bundle

    started = time.perf_counter()
    report = verify_bundle(Path(path), warc_checker=check_warc_records)
    lines = list(iter_lines(report))
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib(),
            "longest": max(len(line) for line in lines), "failures": len(report.failures)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--phase")
    parser.add_argument("--params")
    args = parser.parse_args()
    if args.phase:
        result = globals()[f"phase_{args.phase}"](**json.loads(args.params))
        print(json.dumps(result))
        return
    sizes = [16 * MiB] if args.quick else [256 * MiB, 1024 * MiB]
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as workdir:
        for size in sizes:
            for kind in ("zeros", "random"):
                member = Path(workdir) / f"{kind}.warc.gz"
                _member(member, kind, size)
                bundle = Path(workdir) / f"{kind}.zip"
                with zipfile.ZipFile(bundle, "w", zipfile.ZIP_STORED) as out:
                    out.writestr("bag/bagit.txt", "BagIt-Version: 1.0\n"
                                                  "Tag-File-Character-Encoding: UTF-8\n")
                    out.write(member, "bag/data/captures/x/capture.warc.gz")
                base = run_phase(__file__, "baseline", path=str(member))
                warc = run_phase(__file__, "warc", path=str(member))
                verify = run_phase(__file__, "verify", path=str(bundle))
                print(f"{size // MiB:>5} MiB of {kind:<6}  read once {base['seconds']:6.2f} s "
                      f"({base['peak_rss_mib']:.0f} MiB RSS)   WARC check "
                      f"{warc['seconds']:6.2f} s ({warc['seconds'] / base['seconds']:.2f}x, "
                      f"{warc['peak_rss_mib']:.0f} MiB RSS, longest message "
                      f"{warc['longest']} chars)   verify-bundle {verify['seconds']:6.2f} s "
                      f"({verify['seconds'] / base['seconds']:.2f}x, "
                      f"{verify['peak_rss_mib']:.0f} MiB RSS, longest line "
                      f"{verify['longest']} chars)")
                print(f"      WARC check says: {warc['first']}")
                member.unlink()
                bundle.unlink()


if __name__ == "__main__":
    main()

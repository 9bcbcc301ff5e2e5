"""``archiver audit``: re-read and re-hash every stored copy against the signed manifests,
repair damaged copies from healthy ones, record it all on the ledger.

Exit 0 when no problem remains (whatever was repaired), 1 when a copy is still damaged,
missing or unreadable, or a capture's signed manifest cannot be established.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from archiver.cli.common import EXIT_FAILED, EXIT_OK, emit_json, shown
from archiver.cli.output import unaltered

if TYPE_CHECKING:
    from archiver.audit import AuditReport
    from archiver.settings import Settings


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"not a fraction above 0 and at most 1: {text!r}")
    return value


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``audit``."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sample", type=_fraction, metavar="F",
                       help="audit this fraction of the captures, those audited longest "
                            "ago first (default: every capture)")
    which.add_argument("--capture", dest="captures", nargs="+", action="extend",
                       metavar="ID", default=[],
                       help="audit only these captures (ids or unique prefixes)")
    p.add_argument("--no-repair", action="store_true",
                   help="report damaged copies without replacing them")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: the counts and every finding")
    p.set_defaults(handler=cmd_audit)


def cmd_audit(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.audit import Auditor
    from archiver.cli.progress import TerminalProgress, wanted

    # The progress line goes to the CLI's stderr unescaped (its carriage returns and
    # erasures are the point, and its text is ours alone: counts and sizes, nothing
    # captured), with the CLI's handling of a stream that went away.
    terminal = unaltered(sys.stderr)
    progress = (TerminalProgress(terminal, "auditing")
                if wanted(terminal, json_output=args.json) else None)
    try:
        with Archive.open(settings) as archive:
            # Every audit is recorded on the ledger with the archive's key: a wrong or
            # missing passphrase stops it before anything is read.
            archive.signing_key  # noqa: B018
            auditor = Auditor(archive, actor=settings.operator,
                              repair=settings.audit.repair and not args.no_repair,
                              progress=progress)
            report = auditor.run(args.captures, sample=args.sample)
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        emit_json(out, report.as_json())
    else:
        for line in report_lines(report):
            print(shown(line), file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def report_lines(report: AuditReport) -> list[str]:
    """The audit for a person: one line per finding, then the verdict."""
    lines = []
    for f in report.findings:
        where = f" in {f.store}" if f.store else ""
        state = "REPAIRED" if f.repaired else "FAIL    "
        lines.append(f"{state}  capture {f.capture_id}: {f.artifact}{where}: {f.problem}"
                     f" ({f.detail}); {f.repair}")
        if f.note:
            lines.append(f"          note: {f.note}")
    verdict = "ok" if report.ok else f"FAILED: {report.remaining} problems remain"
    interrupted = " (interrupted)" if report.interrupted else ""
    lines.append(
        f"audit {report.audit_id}{interrupted}: {verdict}; {report.captures} captures, "
        f"{report.blobs} blobs, {report.copies} copies in {len(report.stores)} stores, "
        f"{report.bytes} bytes, {report.damaged} damaged, {report.repaired} repaired, "
        f"{report.unreadable} unreadable, in {report.duration_seconds:.1f} s "
        f"(ledger entry {report.ledger_seq})")
    return lines

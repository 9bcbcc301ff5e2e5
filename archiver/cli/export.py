"""The legal-export commands: ``export``, ``verify-bundle`` and ``ledger timestamp``.

``verify-bundle`` needs no archive, database or configuration (a court expert runs it on
a machine that never saw the archive): :func:`archiver.cli.main` routes it here before
any setting is loaded. Exit codes are those of :mod:`archiver.cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from archiver.archive import Archive
from archiver.cli.common import fail, shown
from archiver.cli.output import unaltered
from archiver.cli.progress import TerminalProgress, wanted
from archiver.errors import ConfigError
from archiver.export.case import export_case
from archiver.export.warc_check import check_warc_records
from archiver.settings import Settings
from chain_of_custody.bundle import (
    BundleError,
    iter_lines,
    load_tsa_roots,
    parse_trusted_key,
    verify_bundle,
)
from chain_of_custody.errors import CustodyError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # the codes of archiver.cli


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``export`` or ``verify-bundle`` (``ledger timestamp`` is in
    :mod:`archiver.cli.ledger` and runs :func:`cmd_ledger_timestamp`)."""
    if command == "export":
        p.add_argument("--case", required=True, help="the case to export")
        p.add_argument("--capture", action="extend", nargs="+", default=[], metavar="ID",
                       help="only these captures of the case (id or unique prefix)")
        p.add_argument("--out", required=True, type=Path, metavar="FILE.zip",
                       help="the bundle to write (never replaced if it exists)")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_export)
    elif command == "verify-bundle":
        p.add_argument("bundle", type=Path, metavar="FILE.zip")
        p.add_argument("--trusted-key", action="append", default=[],
                       metavar="PEM_OR_FINGERPRINT",
                       help="the archive's published public key (PEM file) or key id "
                            "(64 hex); without it, integrity is checked but not who signed")
        p.add_argument("--tsa-ca", type=Path, metavar="PEM",
                       help="the TSA's published CA certificate(s); without it, tokens are "
                            "checked against the CA shipped in the bundle")
        p.add_argument("--json", action="store_true", help="one JSON object: every check")


def _emit_json(out: TextIO, value: Any) -> None:
    stream = unaltered(out)
    stream.write(json.dumps(value, sort_keys=True) + "\n")
    stream.flush()


def _progress(err: TextIO, what: str, unit: str, json_output: bool) -> TerminalProgress | None:
    """A progress line on ``err`` when a person watches it (see archiver.cli.progress):
    written unescaped (its carriage returns are the point; its text is counts and sizes)
    through the CLI's stream, which survives a closed pipe."""
    terminal = unaltered(err)
    return TerminalProgress(terminal, what, unit=unit) \
        if wanted(terminal, json_output=json_output) else None


def cmd_export(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    progress = _progress(sys.stderr, "exporting", "captures", args.json)
    try:
        with Archive.open(settings) as archive:
            report = export_case(archive, case=args.case, out=args.out,
                                 capture_ids=args.capture, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        _emit_json(out, report.as_json())
    else:
        print(shown(f"wrote {report.path}"), file=out)
        print(shown(f"  bag:        {report.bag_name}"), file=out)
        print(f"  sha256:     {report.digest.sha256}", file=out)
        print(f"  size:       {report.digest.size} bytes", file=out)
        print(shown(f"  case:       {report.case}: {len(report.captures)} captures, "
                    f"{report.entries} ledger entries"), file=out)
        print(f"  checkpoint: tree size {report.checkpoint.tree_size}, root "
              f"{report.checkpoint.root_hash.hex()}", file=out)
        for token in report.timestamps:
            print(shown(f"  timestamp:  {token.gen_time} by {token.tsa_url}"), file=out)
        print(f"  signed by:  key {report.signing_key_id}", file=out)
        print(f"  recorded:   ledger entry {report.ledger_seq} (bundle.exported)", file=out)
    if not report.timestamps:
        print(shown("archiver: warning: the bundle has NO trusted timestamp: "
                    + "; ".join(report.timestamp_problems)), file=sys.stderr)
    return EXIT_OK


def cmd_verify_bundle(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``verify-bundle``: no settings, no archive. Exit 0 only when every check passed."""
    try:
        trusted = [parse_trusted_key(value) for value in args.trusted_key]
        roots = load_tsa_roots(args.tsa_ca) if args.tsa_ca is not None else None
    except CustodyError as exc:
        fail(err, str(exc))
        return EXIT_USAGE
    if not args.bundle.exists():
        fail(err, f"{args.bundle}: no such file")
        return EXIT_USAGE
    progress = _progress(err, "verifying", "files", args.json)
    try:
        report = verify_bundle(args.bundle, trusted_key_ids=trusted, tsa_roots=roots,
                               warc_checker=check_warc_records,
                               on_progress=progress.update if progress else None)
    except BundleError as exc:
        if progress is not None:
            progress.close()  # erased before the error line is written
        if args.json:
            _emit_json(out, {"bundle": str(args.bundle), "ok": False, "error": str(exc),
                             "checks": []})
        fail(err, str(exc))
        return EXIT_FAILED
    finally:
        if progress is not None:
            progress.close()
    if args.json:
        _emit_json(out, report.as_json())
    else:
        for line in iter_lines(report):
            print(shown(line), file=out)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_ledger_timestamp(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if not settings.timestamp.authorities:
        raise ConfigError("no Time-Stamping Authority is configured: set "
                          "[timestamp] authorities (see config/default.toml)")
    with Archive.open(settings) as archive:
        checkpoint, results = archive.stamped_checkpoint(force=True)
    if args.json:
        _emit_json(out, {
            "checkpoint": {"id": checkpoint.id, "tree_size": checkpoint.tree_size,
                           "root_hash": checkpoint.root_hash.hex()},
            "timestamps": [{"tsa": r.tsa_url, "ok": r.ok, "fresh": r.fresh,
                            "gen_time": r.token.gen_time if r.token else None,
                            "problem": r.problem} for r in results],
        })
    else:
        print(f"checkpoint #{checkpoint.id}: tree size {checkpoint.tree_size}, root "
              f"{checkpoint.root_hash.hex()}", file=out)
        for r in results:
            if r.token is not None:
                state = "obtained now" if r.fresh else "already held"
                print(shown(f"ok    {r.tsa_url}: genTime {r.token.gen_time} ({state})"),
                      file=out)
            else:  # the problem may quote what the TSA answered
                print(shown(f"FAIL  {r.tsa_url}: {r.problem}"), file=out)
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


__all__ = ["add_arguments", "cmd_export", "cmd_ledger_timestamp", "cmd_verify_bundle"]

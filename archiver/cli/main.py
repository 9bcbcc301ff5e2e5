"""The ``archiver`` command: parse, call the library, map errors to exit codes.

Exit codes: 0 success; 1 a check failed or a capture failed (the output says which);
2 usage or configuration error; 3 the archive is not initialised; 4 not found.
Expected errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from archiver import __version__
from archiver.archive import Archive, Capture, initialise
from archiver.cli import export as cli_export
from archiver.cli import media as cli_media
from archiver.cli import watch as cli_watch
from archiver.errors import (
    ArchiverError,
    ConfigError,
    NotFoundError,
    NotInitialisedError,
)
from archiver.settings import Settings, load_settings
from chain_of_custody.errors import CustodyError, LedgerIntegrityError
from storage.errors import StorageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_INITIALISED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archiver",
        description="Capture web evidence into signed WARCs with a tamper-evident ledger.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default: $ARCHIVER_CONFIG, if set)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create the data directory, database and signing key")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("capture", help="capture URLs now, seal, store and record them")
    p.add_argument("urls", nargs="+", metavar="URL")
    p.add_argument("--case", help="case name to file the captures under")
    p.add_argument("--note", help="free-text note recorded with the request")
    p.add_argument("--json", action="store_true", help="one JSON object per URL per line")
    cli_watch.add_queue_arguments(p)

    p = sub.add_parser("show", help="show one capture (recorded as access.viewed)")
    p.add_argument("id", help="capture id or unique prefix")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("list", help="list captures")
    p.add_argument("--case")
    p.add_argument("--json", action="store_true", help="one JSON object per capture per line")

    p = sub.add_parser("get", help="write an artifact to a file (recorded as access.downloaded)")
    p.add_argument("id")
    p.add_argument("artifact", help="artifact name, e.g. capture.warc.gz or manifest.json")
    p.add_argument("-o", "--output", required=True, type=Path, help="file to write ('-': stdout)")

    p = sub.add_parser("verify", help="re-hash every stored copy, check signature and ledger")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("key", help="the archive's public signing key(s)")
    ksub = p.add_subparsers(dest="key_command", required=True, metavar="SUBCOMMAND")
    q = ksub.add_parser("show", help="print the current public key (PEM) and its id")
    q.add_argument("--all", action="store_true", help="every key in the key history")
    q.add_argument("--json", action="store_true")

    p = sub.add_parser("ledger", help="custody ledger: verify, checkpoint, proof")
    lsub = p.add_subparsers(dest="ledger_command", required=True, metavar="SUBCOMMAND")
    q = lsub.add_parser("verify", help="recompute every hash and check every checkpoint")
    q.add_argument("--json", action="store_true")
    q = lsub.add_parser("checkpoint", help="sign the current ledger head")
    q.add_argument("--json", action="store_true")
    q = lsub.add_parser("proof", help="inclusion proof of one entry")
    q.add_argument("seq", type=int)
    q.add_argument("--json", action="store_true")
    cli_export.add_parsers(sub, lsub)
    cli_watch.add_parsers(sub)
    cli_media.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "verify-bundle":  # needs no archive, database or configuration
        return cli_export.cmd_verify_bundle(args, out, err)
    try:
        settings = load_settings(args.config)
        handler = _HANDLERS[args.command]
        return handler(settings, args, out)
    except ConfigError as exc:
        _fail(err, str(exc))
        return EXIT_USAGE
    except NotInitialisedError as exc:
        _fail(err, str(exc))
        return EXIT_NOT_INITIALISED
    except NotFoundError as exc:
        _fail(err, str(exc))
        return EXIT_NOT_FOUND
    except (ArchiverError, CustodyError, StorageError) as exc:
        _fail(err, str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail(err, "interrupted")
        return 130


def _fail(err: TextIO, message: str) -> None:
    print(f"archiver: error: {message}", file=err)


def _emit_json(out: TextIO, value: Any) -> None:
    out.write(json.dumps(value, sort_keys=True) + "\n")
    out.flush()


# -- commands ------------------------------------------------------------------------------


def _cmd_init(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    report = initialise(settings)
    if args.json:
        _emit_json(out, {
            "home": str(report.home), "database_url": _redact(report.database_url),
            "key_id": report.key_id, "created_key": report.created_key, "origin": report.origin,
        })
        return EXIT_OK
    state = "created" if report.created_key else "already present"
    print(f"archive ready at {report.home}", file=out)
    print(f"  database:    {_redact(report.database_url)}", file=out)
    print(f"  signing key: {report.key_id} ({state})", file=out)
    print(f"  ledger:      origin {report.origin}", file=out)
    return EXIT_OK


def _cmd_capture(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.queue:
        return cli_watch.queue_captures(settings, args, out)
    status = EXIT_OK
    with Archive.open(settings) as archive:
        for url in args.urls:
            capture = archive.capture(url, case=args.case, note=args.note)
            if not capture.ok:
                status = EXIT_FAILED
            if args.json:
                _emit_json(out, capture.as_json())
            else:
                _print_capture(out, capture)
    if status != EXIT_OK and not args.json:
        print("archiver: error: some captures failed (see above)", file=sys.stderr)
    return status


def _cmd_show(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with Archive.open(settings) as archive:
        capture = archive.get_capture(args.id)
        archive.record_view(capture)
    if args.json:
        _emit_json(out, capture.as_json())
    else:
        _print_capture(out, capture, full=True)
    return EXIT_OK


def _cmd_list(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with Archive.open(settings) as archive:
        captures = archive.list_captures(case=args.case)
    for capture in captures:
        if args.json:
            _emit_json(out, capture.as_json())
        else:
            detail = (f"{capture.http_status}" if capture.ok else f"{capture.reason}")
            print(f"{capture.id}  {capture.requested_at}  {capture.status:9}  {detail:>9}  "
                  f"{capture.case or '-':12}  {capture.url}", file=out)
    return EXIT_OK


def _cmd_get(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with Archive.open(settings) as archive:
        if str(args.output) == "-":
            archive.export_artifact(args.id, args.artifact, sys.stdout.buffer)
            return EXIT_OK
        target: Path = args.output
        # Write next to the target and rename only once the digests matched, so a bad
        # stored copy never leaves a plausible-looking file behind.
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        try:
            with partial.open("wb") as handle:
                artifact = archive.export_artifact(args.id, args.artifact, handle)
            partial.replace(target)
        except OSError as exc:
            raise ArchiverError(f"cannot write {target}: {exc.strerror}") from exc
        finally:
            partial.unlink(missing_ok=True)
    print(f"wrote {target} ({artifact.size} bytes, sha256 {artifact.sha256})", file=sys.stderr)
    return EXIT_OK


def _cmd_verify(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with Archive.open(settings) as archive:
        result = archive.verify_capture(args.id)
    if args.json:
        _emit_json(out, {
            "capture_id": result.capture_id, "ok": result.ok,
            "checks": [{"name": c.name, "ok": c.ok, "problem": c.problem}
                       for c in result.checks],
        })
    else:
        for check in result.checks:
            print(f"{'ok  ' if check.ok else 'FAIL'}  {check.problem or check.name}", file=out)
        verdict = "verified" if result.ok else "FAILED verification"
        print(f"capture {result.capture_id}: {verdict}", file=out)
    return EXIT_OK if result.ok else EXIT_FAILED


def _cmd_ledger(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.ledger_command == "timestamp":
        return cli_export.cmd_ledger_timestamp(settings, args, out)
    with Archive.open(settings) as archive:
        if args.ledger_command == "verify":
            try:
                report = archive.verify_ledger()
                tokens = archive.verify_timestamps()
            except LedgerIntegrityError as exc:
                if args.json:
                    _emit_json(out, {"ok": False, "seq": exc.seq, "problem": str(exc)})
                else:
                    print(f"FAIL  {exc}", file=out)
                return EXIT_FAILED
            if args.json:
                _emit_json(out, {"ok": True, "entries": report.entries,
                                 "checkpoints": report.checkpoints,
                                 "root_hash": report.root_hash.hex(),
                                 "unsigned_entries": report.unsigned_entries,
                                 "timestamp_tokens": tokens})
            else:
                print(f"ok  ledger verified: {report.entries} entries, "
                      f"{report.checkpoints} checkpoints, root {report.root_hash.hex()}",
                      file=out)
                print(f"ok  {tokens} RFC 3161 timestamp tokens verified (each over its "
                      "checkpoint, as of its genTime, against the TSA chain kept with it)",
                      file=out)
                if report.unsigned_entries:
                    print(f"    {report.unsigned_entries} newest entries are not yet in a "
                          "signed checkpoint ('archiver ledger checkpoint' signs them)",
                          file=out)
            return EXIT_OK
        if args.ledger_command == "checkpoint":
            checkpoint = archive.checkpoint()
            if args.json:
                _emit_json(out, {"id": checkpoint.id, "tree_size": checkpoint.tree_size,
                                 "root_hash": checkpoint.root_hash.hex(),
                                 "key_id": checkpoint.key_id, "note": checkpoint.note})
            else:
                out.write(checkpoint.note)
            return EXIT_OK
        proof = archive.proof(args.seq)
    entry = proof.entry
    proof_hex = [h.hex() for h in proof.hashes]
    data: dict[str, Any] = {
        "seq": entry.seq,
        "leaf": entry.leaf_bytes().decode("utf-8"),
        "leaf_hash": entry.leaf_hash().hex(),
        "tree_size": proof.tree_size,
        "root_hash": proof.root_hash.hex(),
        "inclusion_proof": proof_hex,
        "checkpoint": proof.checkpoint.note if proof.checkpoint else None,
    }
    if args.json:
        _emit_json(out, data)
    else:
        print(f"entry {entry.seq}: {entry.action} {entry.subject} at {entry.time}", file=out)
        print(f"  leaf hash:  {data['leaf_hash']}", file=out)
        print(f"  tree size:  {proof.tree_size}", file=out)
        print(f"  root hash:  {data['root_hash']} "
              f"(base64 {base64.b64encode(proof.root_hash).decode()})", file=out)
        for i, h in enumerate(proof_hex):
            print(f"  proof[{i}]:   {h}", file=out)
        if proof.checkpoint:
            print("  signed checkpoint:", file=out)
            for line in proof.checkpoint.note.splitlines():
                print(f"    {line}", file=out)
        else:
            print("  not yet in a signed checkpoint (proof is against the current root)",
                  file=out)
    return EXIT_OK


def _cmd_key(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with Archive.open(settings) as archive:
        history = archive.key_history()
    keys = history if args.all else [k for k in history if k["retired"] is None]
    for key in keys:
        if args.json:
            _emit_json(out, key)
        else:
            state = f"retired {key['retired']}" if key["retired"] else "current"
            print(f"# key id {key['key_id']} ({key['algorithm']}, created {key['created']}, "
                  f"{state})", file=out)
            out.write(key["public_pem"])
    return EXIT_OK


def _print_capture(out: TextIO, capture: Capture, *, full: bool = False) -> None:
    print(f"capture {capture.id}  {capture.status}", file=out)
    print(f"  url:          {capture.url}", file=out)
    if not capture.ok:
        print(f"  reason:       {capture.reason}: {capture.message}", file=out)
    else:
        print(f"  final url:    {capture.final_url}", file=out)
        print(f"  http status:  {capture.http_status}", file=out)
        print(f"  manifest:     sha256:{capture.manifest_sha256}", file=out)
    if full:
        print(f"  requested:    {capture.requested_at} by {capture.requested_by} "
              f"via {capture.requested_via}", file=out)
        if capture.case:
            print(f"  case:         {capture.case}", file=out)
        if capture.note:
            print(f"  note:         {capture.note}", file=out)
        print(f"  ledger entry: {capture.ledger_seq}", file=out)
    for name, outcome in sorted(capture.outcomes.items()):
        detail = ": ".join(str(v) for v in (outcome.get("reason"), outcome.get("message")) if v)
        print(f"  {name + ':':13} {outcome.get('status')}{'  ' + detail if detail else ''}",
              file=out)
    if capture.artifacts:
        print("  artifacts:", file=out)
        width = max(len(a.name) for a in capture.artifacts)
        for a in capture.artifacts:
            print(f"    {a.name:{width}}  {a.role:10}  {a.size:>12}  {a.sha256}", file=out)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


_HANDLERS: dict[str, Callable[[Settings, argparse.Namespace, TextIO], int]] = {
    "init": _cmd_init,
    "capture": _cmd_capture,
    "show": _cmd_show,
    "list": _cmd_list,
    "get": _cmd_get,
    "verify": _cmd_verify,
    "key": _cmd_key,
    "ledger": _cmd_ledger,
    "export": cli_export.cmd_export,
    "watch": cli_watch.cmd_watch,
    "jobs": cli_watch.cmd_jobs,
    "gone": cli_watch.cmd_gone,
    "status": cli_watch.cmd_status,
    "daemon": cli_watch.cmd_daemon,
    "worker": cli_watch.cmd_worker,
    "similar": cli_media.cmd_similar,
}


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

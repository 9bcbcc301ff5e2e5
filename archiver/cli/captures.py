"""The capture commands: ``init``, ``capture``, ``show``, ``list``, ``get``, ``verify``.

Imports of the archive and the capture stack happen inside each command: ``archiver
list`` never loads httpx, yt-dlp or Playwright (:mod:`archiver.cli.main`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from archiver.cli.common import EXIT_FAILED, EXIT_OK, emit_json, shown
from archiver.cli.output import binary, unaltered
from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from archiver.capture.values import Capture
    from archiver.cli.progress import TerminalProgress
    from archiver.recorder.budget import Transfer
    from archiver.settings import Settings


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``command`` (one of this module's)."""
    if command == "init":
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_init)
    elif command == "capture":
        p.add_argument("urls", nargs="+", metavar="URL")
        p.add_argument("--case", help="case name to file the captures under")
        p.add_argument("--note", help="free-text note recorded with the request")
        p.add_argument("--json", action="store_true",
                       help="one JSON object per URL per line, in the order given")
        p.add_argument("--concurrency", type=_positive, metavar="N",
                       help="captures at once (default: capture.concurrency; 0 there: what "
                            "this machine can take); per host, daemon.per_host_* hold")
        p.add_argument("--queue", action="store_true",
                       help="submit to the daemon's queue instead of capturing now")
        p.add_argument("--again", action="store_true",
                       help="with --queue: capture even if the URL was captured or queued")
        p.set_defaults(handler=cmd_capture)
    elif command == "show":
        p.add_argument("id", help="capture id or unique prefix")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_show)
    elif command == "list":
        p.add_argument("--case")
        p.add_argument("--json", action="store_true",
                       help="one JSON object per capture per line")
        p.set_defaults(handler=cmd_list)
    elif command == "get":
        p.add_argument("id")
        p.add_argument("artifact", help="artifact name, e.g. capture.warc.gz or manifest.json")
        p.add_argument("-o", "--output", required=True, type=Path,
                       help="file to write ('-': stdout)")
        p.set_defaults(handler=cmd_get)
    elif command == "verify":
        p.add_argument("id")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_verify)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a number of captures at once: {text!r}")
    return value


def cmd_init(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import initialise

    report = initialise(settings)
    if args.json:
        emit_json(out, {
            "home": str(report.home), "database_url": redact(report.database_url),
            "key_id": report.key_id, "created_key": report.created_key,
            "origin": report.origin,
        })
        return EXIT_OK
    state = "created" if report.created_key else "already present"
    print(shown(f"archive ready at {report.home}"), file=out)
    print(f"  database:    {redact(report.database_url)}", file=out)
    print(f"  signing key: {report.key_id} ({state})", file=out)
    print(f"  ledger:      origin {report.origin}", file=out)
    return EXIT_OK


def cmd_capture(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.cases import check_case_name
    from archiver.urls import submitted_url

    # Every URL (and the case) is checked before anything is fetched or recorded
    # (BadInput: exit 2).
    args.urls = [submitted_url(url) for url in args.urls]
    if args.case is not None:
        check_case_name(args.case)
    if args.queue:
        from archiver.cli.watch import queue_captures

        return queue_captures(settings, args, out)
    from archiver.archive import Archive
    from archiver.capture.parallel import HostLimiter, auto_concurrency, run_in_order

    concurrency = args.concurrency or settings.capture.concurrency or auto_concurrency()
    limiter = HostLimiter(per_host=settings.daemon.per_host_concurrency,
                          rate=settings.daemon.per_host_rate)
    status = EXIT_OK
    progress = _capture_progress(len(args.urls), args.json)
    with Archive.open(settings) as archive, progress.watch():
        archive.signing_key  # noqa: B018 - a wrong passphrase must stop us before any fetch

        def capture(url: str) -> Capture:
            return archive.capture(url, case=args.case, note=args.note)

        # In the order given, each printed as soon as it and those before it are done.
        for done in run_in_order(args.urls, capture, concurrency=min(concurrency,
                                                                     len(args.urls)),
                                 limiter=limiter):
            if not done.ok:
                status = EXIT_FAILED
            progress.erase()  # the capture's lines start on a clean line
            if args.json:
                emit_json(out, done.as_json())
            else:
                print_capture(out, done)
                out.flush()
            progress.capture_done()
    if status != EXIT_OK and not args.json:
        print("archiver: error: some captures failed (see above)", file=sys.stderr)
    return status


class _CaptureProgress:
    """``capturing: 1/3 URLs, 12.0 MiB of 40.0 MiB (30%), about 9s left`` on a terminal:
    the bytes every capture of the command received (the recorder's byte accounting),
    and, while responses are being received that all announced a Content-Length, of that
    plus what they still announce; else only what arrived so far. Captures run in
    threads: one lock for the line."""

    def __init__(self, line: TerminalProgress | None, urls: int) -> None:
        self.line = line
        self.urls = urls
        self.lock = threading.Lock()
        self.done = 0
        self.arrived = 0
        self.flowing: dict[Transfer, None] = {}  # responses being received

    @contextmanager
    def watch(self) -> Iterator[None]:
        if self.line is None:
            yield
            return
        from archiver.recorder.budget import watching

        self.line.start(self.urls, 0)
        try:
            with watching(self):
                yield
        finally:
            with self.lock:
                self.line.close()

    def announced(self, transfer: Transfer) -> None:
        with self.lock:
            self.flowing[transfer] = None
            self._draw()

    def received(self, transfer: Transfer, nbytes: int) -> None:
        with self.lock:
            self.arrived += nbytes
            self._draw()

    def ended(self, transfer: Transfer) -> None:
        with self.lock:
            self.flowing.pop(transfer, None)

    def capture_done(self) -> None:
        with self.lock:
            self.done += 1
            self._draw()

    def erase(self) -> None:
        with self.lock:
            if self.line is not None:
                self.line.close()

    def _draw(self) -> None:
        if self.line is not None:
            # What arrived, and what the responses being received still announce; no
            # total while one of them did not say (or none is being received).
            lengths = [t.length for t in self.flowing]
            total = 0 if not lengths or None in lengths else self.arrived + sum(
                max(0, length - t.received) for t, length in zip(self.flowing, lengths,
                                                                 strict=True)
                if length is not None)
            self.line.update(self.done, self.urls, self.arrived, total)


def _capture_progress(urls: int, json_output: bool) -> _CaptureProgress:
    from archiver.cli.progress import TerminalProgress, wanted

    terminal = unaltered(sys.stderr)
    line = TerminalProgress(terminal, "capturing", unit="URLs") \
        if wanted(terminal, json_output=json_output) else None
    return _CaptureProgress(line, urls)


def cmd_show(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive

    with Archive.open(settings) as archive:
        capture = archive.get_capture(args.id)
        archive.record_view(capture)
    if args.json:
        emit_json(out, capture.as_json())
    else:
        print_capture(out, capture, full=True)
    return EXIT_OK


def cmd_list(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive

    with Archive.open(settings) as archive:
        captures = archive.list_captures(case=args.case)
    for capture in captures:
        if args.json:
            emit_json(out, capture.as_json())
        else:
            detail = (f"{capture.http_status}" if capture.ok else f"{capture.reason}")
            print(shown(f"{capture.id}  {capture.requested_at}  {capture.status:9}  "
                        f"{detail:>9}  {capture.case or '-':12}  {capture.url}"), file=out)
    return EXIT_OK


def cmd_get(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive

    with Archive.open(settings) as archive:
        if str(args.output) == "-":
            archive.export_artifact(args.id, args.artifact, binary(out))
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
    print(shown(f"wrote {target} ({artifact.size} bytes, sha256 {artifact.sha256})"),
          file=sys.stderr)
    return EXIT_OK


def cmd_verify(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive

    with Archive.open(settings) as archive:
        result = archive.verify_capture(args.id)
    if args.json:
        emit_json(out, {
            "capture_id": result.capture_id, "ok": result.ok,
            "checks": [{"name": c.name, "ok": c.ok, "problem": c.problem}
                       for c in result.checks],
        })
    else:
        for check in result.checks:
            print(shown(f"{'ok  ' if check.ok else 'FAIL'}  {check.problem or check.name}"),
                  file=out)
        verdict = "verified" if result.ok else "FAILED verification"
        print(f"capture {result.capture_id}: {verdict}", file=out)
    return EXIT_OK if result.ok else EXIT_FAILED


def print_capture(out: TextIO, capture: Capture, *, full: bool = False) -> None:
    """A capture as a person reads it (what a page said is escaped: never raw)."""
    lines = [f"capture {capture.id}  {capture.status}", f"  url:          {capture.url}"]
    if not capture.ok:
        lines.append(f"  reason:       {capture.reason}: {capture.message}")
    else:
        lines += [f"  final url:    {capture.final_url}",
                  f"  http status:  {capture.http_status}",
                  f"  manifest:     sha256:{capture.manifest_sha256}"]
    if full:
        lines.append(f"  requested:    {capture.requested_at} by {capture.requested_by} "
                     f"via {capture.requested_via}")
        if capture.case:
            lines.append(f"  case:         {capture.case}")
        if capture.note:
            lines.append(f"  note:         {capture.note}")
        lines.append(f"  ledger entry: {capture.ledger_seq}")
    for name, outcome in sorted(capture.outcomes.items()):
        detail = ": ".join(str(v) for v in (outcome.get("reason"), outcome.get("message")) if v)
        lines.append(f"  {name + ':':13} {outcome.get('status')}"
                     f"{'  ' + detail if detail else ''}")
    if capture.artifacts:
        lines.append("  artifacts:")
        width = max(len(a.name) for a in capture.artifacts)
        lines += [f"    {a.name:{width}}  {a.role:10}  {a.size:>12}  {a.sha256}"
                  for a in capture.artifacts]
    for line in lines:
        print(shown(line), file=out)


def redact(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)

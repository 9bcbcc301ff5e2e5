"""CLI commands of the daemon side: ``watch``, ``capture --queue``, ``jobs``, ``gone``,
``status``, ``daemon``, ``worker``.

Registered by :mod:`archiver.cli.main` (which maps errors to exit codes). Library
modules are imported inside the commands: ``archiver status``, ``jobs`` and ``gone``
answer without loading the poller, the sources or the capture stack.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from archiver.cli.common import EXIT_FAILED, EXIT_OK, emit_json, shown
from archiver.cli.output import unaltered
from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from archiver.archive import Archive
    from archiver.settings import Settings
    from archiver.watch.watches import Watchlist, WatchView


def _duration(text: str) -> float:
    from archiver.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r}")
    return value


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``command`` (one of this module's)."""
    if command == "watch":
        _watch_arguments(p)
    elif command == "jobs":
        from archiver.watch.jobs import STATES

        p.add_argument("--state", choices=STATES, action="append",
                       help="only jobs in this state (repeatable)")
        p.add_argument("--limit", type=int, default=50)
        p.add_argument("--json", action="store_true", help="one JSON object per job per line")
        p.set_defaults(handler=cmd_jobs)
    elif command == "gone":
        p.add_argument("--case")
        p.add_argument("--json", action="store_true",
                       help="one JSON object per takedown per line")
        p.set_defaults(handler=cmd_gone)
    elif command == "status":
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=cmd_status)
    elif command == "daemon":
        p.add_argument("--workers", type=_count,
                       help="worker processes (default: daemon.workers; 0: schedule only)")
        p.set_defaults(handler=cmd_daemon)
    elif command == "worker":
        p.add_argument("--worker-id", help=argparse.SUPPRESS)
        p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
        p.set_defaults(handler=cmd_worker)


def _watch_arguments(p: argparse.ArgumentParser) -> None:
    from archiver.watch.sources.base import KINDS
    from archiver.watch.watches import FORMATS

    p.set_defaults(handler=cmd_watch)
    wsub = p.add_subparsers(dest="watch_command", required=True, metavar="SUBCOMMAND")
    q = wsub.add_parser("add", help="watch an account, channel, feed or page")
    q.add_argument("url", metavar="URL")
    q.add_argument("--every", type=_duration,
                   help="polling interval, e.g. 15m, 1h, 90s (default: watch.default_every)")
    q.add_argument("--kind", default="auto", choices=("auto", *KINDS),
                   help="source type (default auto: from the URL and what it serves)")
    q.add_argument("--case", help="case to file the captures under")
    q.add_argument("--pattern", help="page kind: capture new links matching this regex")
    q.add_argument("--json", action="store_true")
    q = wsub.add_parser("list", help="list watches")
    q.add_argument("--all", action="store_true", help="include removed watches")
    q.add_argument("--json", action="store_true", help="one JSON object per watch per line")
    for name, text in (("pause", "stop polling a watch (recorded as watch.paused)"),
                       ("resume", "poll a paused watch again (watch.resumed)"),
                       ("remove", "stop watching for good (watch.removed)")):
        q = wsub.add_parser(name, help=text)
        q.add_argument("id", type=int)
        q.add_argument("--json", action="store_true")
    q = wsub.add_parser("import", help="add every watch of a CSV or TOML watchlist")
    q.add_argument("file", type=Path)
    q.add_argument("--format", choices=FORMATS,
                   help="default: from the file's suffix")
    q.add_argument("--json", action="store_true")
    q = wsub.add_parser("export", help="write the watchlist as CSV or TOML")
    q.add_argument("--format", choices=FORMATS, default=None,
                   help="default: from -o's suffix, else toml")
    q.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    q.add_argument("--all", action="store_true", help="include removed watches")
    q = wsub.add_parser("poll", help="poll one watch now, in the foreground")
    q.add_argument("id", type=int)
    q.add_argument("--json", action="store_true")


# -- capture --queue -------------------------------------------------------------------


def queue_captures(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.watch.jobs import JobLimits, JobQueue, JobRequest

    with Archive.open(settings) as archive:
        queue = JobQueue(archive.engine, ledger=archive.ledger,
                         limits=JobLimits.from_settings(settings), clock=archive.clock)
        for url in args.urls:
            submitted = queue.submit(JobRequest(
                url=url, requested_by=settings.operator, via="queue", case=args.case,
                note=args.note, again=args.again,
            ))
            if args.json:
                emit_json(out, {
                    "url": url,
                    "job": submitted.job.as_json() if submitted.job else None,
                    "duplicate_of": submitted.duplicate_of.as_json()
                    if submitted.duplicate_of else None,
                })
            elif submitted.job is not None:
                print(shown(f"queued job {submitted.job.id}  capture "
                            f"{submitted.job.capture_id}  {url}"), file=out)
            else:
                dup = submitted.duplicate_of
                assert dup is not None
                what = (f"captured as {dup.capture_id}" if dup.state == "done"
                        else f"{dup.state}")
                print(shown(f"already {what} (job {dup.id}), not queued again (--again to "
                            f"force): {url}"), file=out)
        archive.checkpoint()
    return EXIT_OK


# -- watch -----------------------------------------------------------------------------


def cmd_watch(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.watch.watches import Watchlist, WatchSpec

    command = args.watch_command
    with Archive.open(settings) as archive:
        watchlist = Watchlist(archive)
        try:
            if command == "add":
                view = watchlist.add(WatchSpec(url=args.url, kind=args.kind, every=args.every,
                                               case=args.case, pattern=args.pattern))
                _print_watch(out, view, args.json, verb="added")
            elif command == "list":
                for view in watchlist.list(include_removed=args.all):
                    if args.json:
                        emit_json(out, view.as_json())
                    else:
                        print(shown(_watch_line(view)), file=out)
            elif command in ("pause", "resume", "remove"):
                view = getattr(watchlist, command)(args.id)
                _print_watch(out, view, args.json, verb={"pause": "paused",
                             "resume": "resumed", "remove": "removed"}[command])
            elif command == "import":
                return _import(watchlist, args, out)
            elif command == "export":
                return _export(watchlist, args, out)
            else:
                return _poll(archive, settings, args, out)
        finally:
            watchlist.close()
    return EXIT_OK


def _print_watch(out: TextIO, view: WatchView, as_json: bool, *, verb: str) -> None:
    if as_json:
        emit_json(out, view.as_json())
        return
    source = f" (source {view.source_url})" if view.source_url != view.url else ""
    case = f", case {view.case!r}" if view.case else ""
    print(shown(f"watch {view.id} {verb}: {view.kind} every {view.every}{case}: "
                f"{view.url}{source}"), file=out)


def _watch_line(view: WatchView) -> str:
    last = view.last_poll_at or "never polled"
    problem = f"  ({view.failures} failing: {view.last_error})" if view.failures else ""
    case = f"  [{view.case}]" if view.case else ""
    return (f"{view.id:<5} {view.status:7} {view.kind:11} {view.every:>6}  {last:27}  "
            f"{view.posts_seen:>5} posts  {view.url}{case}{problem}")


def _import(watchlist: Watchlist, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.watch.watches import format_of, read_watchlist

    path: Path = args.file
    fmt = format_of(path, args.format)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ArchiverError(f"cannot read {path}: {exc.strerror}") from exc
    report = watchlist.add_many(read_watchlist(text, fmt, name=str(path)))
    if args.json:
        emit_json(out, {"added": [v.as_json() for v in report.added],
                         "skipped": [{"url": s.url, "reason": why}
                                     for s, why in report.skipped]})
        return EXIT_OK
    for _spec, why in report.skipped:
        print(shown(f"skipped: {why}"), file=out)
    print(shown(f"imported {len(report.added)} watches from {path} "
                f"({len(report.skipped)} already watched)"), file=out)
    return EXIT_OK


def _export(watchlist: Watchlist, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.watch.watches import format_of, write_watchlist

    target: Path | None = args.output
    fmt = args.format or (format_of(target, None) if target is not None else "toml")
    text = write_watchlist(watchlist.list(include_removed=args.all), fmt)
    if target is None:  # for a program (watch import) to read back: not escaped
        unaltered(out).write(text)
        return EXIT_OK
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
    except OSError as exc:
        raise ArchiverError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return EXIT_OK


def _poll(archive: Archive, settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.watch.jobs import JobLimits, JobQueue
    from archiver.watch.poller import Poller
    from archiver.watch.sources import GuardedFetcher, build_sources
    from archiver.watch.watches import Watchlist

    Watchlist(archive).get(args.id)  # NotFoundError for an unknown id
    queue = JobQueue(archive.engine, ledger=archive.ledger,
                     limits=JobLimits.from_settings(settings), clock=archive.clock)
    with GuardedFetcher.from_settings(settings) as fetcher:
        poller = Poller(archive.engine, queue, build_sources(settings, fetcher),
                        settings=settings, clock=archive.clock)
        report = poller.poll(args.id)
    if args.json:
        emit_json(out, {"watch_id": report.watch_id, "ok": report.ok,
                         "listed": report.listed, "new_posts": report.new_posts,
                         "queued": report.queued, "pages": report.pages,
                         "not_modified": report.not_modified, "error": report.error,
                         "skipped": report.skipped})
    elif report.ok:
        print(f"watch {args.id}: {report.listed} posts listed, {report.new_posts} new, "
              f"{report.queued} queued", file=out)
    else:
        print(shown(f"watch {args.id}: poll failed: {report.error or report.skipped}"),
              file=out)
    if report.queued:
        archive.checkpoint()
    return EXIT_OK if report.ok else EXIT_FAILED


# -- jobs, gone, status ----------------------------------------------------------------


def cmd_jobs(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.watch.jobs import JobQueue

    with Archive.open(settings) as archive:
        queue = JobQueue(archive.engine, ledger=archive.ledger, clock=archive.clock)
        jobs = queue.list(states=args.state or (), limit=args.limit)
    for job in jobs:
        if args.json:
            emit_json(out, job.as_json())
        else:
            error = f"  ({job.last_error})" if job.last_error else ""
            print(shown(f"{job.id:<6} {job.state:7} p{job.priority:<3} {job.via:7} "
                        f"attempts {job.attempts}/{job.max_attempts}  {job.capture_id}  "
                        f"{job.url}{error}"), file=out)
    return EXIT_OK


def cmd_gone(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.watch.jobs import JobQueue
    from archiver.watch.revisit import Revisits

    with Archive.open(settings) as archive:
        queue = JobQueue(archive.engine, ledger=archive.ledger, clock=archive.clock)
        records = Revisits(archive, queue, settings=settings).gone(case=args.case)
    for record in records:
        if args.json:
            emit_json(out, record.as_json())
        else:
            status = f" {record.http_status}" if record.http_status is not None else ""
            was = f"  (captured while up: {record.revisit_of})" if record.revisit_of else ""
            print(shown(f"{record.time}  {record.reason}{status}  entry {record.seq}  "
                        f"capture {record.capture_id}  {record.url}{was}"), file=out)
    return EXIT_OK


def cmd_status(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.watch.status import iter_lines, status_report

    with Archive.open(settings) as archive:
        report = status_report(archive)
    if args.json:
        emit_json(out, report)
    else:
        for line in iter_lines(report):
            print(shown(line), file=out)
    return EXIT_OK


# -- processes -------------------------------------------------------------------------


def cmd_daemon(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.logs import configure
    from archiver.watch.daemon import run_daemon

    configure(level=settings.daemon.log_level, log_format=settings.daemon.log_format)
    return run_daemon(settings, workers=args.workers, config_path=args.config)


def cmd_worker(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.logs import configure
    from archiver.watch.daemon import run_worker

    configure(level=settings.daemon.log_level, log_format=settings.daemon.log_format)
    return run_worker(settings, worker_id=args.worker_id, parent_pid=args.parent_pid)


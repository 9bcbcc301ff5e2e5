"""The ``archiver`` command: parse, call the library, map errors to exit codes.

Exit codes: 0 success; 1 a check failed or a capture failed (the output says which);
2 usage or configuration error; 3 the archive is not initialised; 4 not found.
Expected errors print one line on stderr, never a traceback.

Start-up: a person waits for every command, so this module and the command modules
import only the standard library at the top. The parser lists every command, but builds
the arguments of the one being run only (each command module's ``add_arguments``), and
that command imports what it needs when it runs: ``archiver --version`` and ``--help``
load no library at all, ``archiver list`` loads SQLAlchemy and the settings but never
httpx, yt-dlp, Playwright, boto3 or numpy (a test holds that rule).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

from archiver import __version__
from archiver.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_NOT_INITIALISED,
    EXIT_USAGE,
    fail,
)
from archiver.cli.output import HumanStream

# name, module under archiver.cli, help: the order of ``archiver --help``.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("init", "captures", "create the data directory, database and signing key"),
    ("capture", "captures", "capture URLs now, seal, store and record them"),
    ("show", "captures", "show one capture (recorded as access.viewed)"),
    ("list", "captures", "list captures"),
    ("get", "captures", "write an artifact to a file (recorded as access.downloaded)"),
    ("verify", "captures", "re-hash every stored copy, check signature and ledger"),
    ("audit", "audit",
     "fixity audit: re-hash stored copies against the signed manifests, repair them"),
    ("key", "ledger", "the archive's public signing key(s)"),
    ("ledger", "ledger", "custody ledger: verify, checkpoint, proof, timestamp"),
    ("export", "export", "write a case's signed evidence bundle (a BagIt ZIP)"),
    ("verify-bundle", "export",
     "check an evidence bundle offline (needs no archive, database or config)"),
    ("watch", "watch", "watchlists: what the daemon polls for new posts"),
    ("jobs", "watch", "capture jobs (queued, running, done, failed)"),
    ("gone", "watch", "posts recorded as taken down (target.gone)"),
    ("status", "watch", "queue depth, workers, last polls, failures"),
    ("daemon", "watch", "run the scheduler and the workers until SIGTERM"),
    ("worker", "watch", "run one worker (the daemon starts these itself)"),
    ("similar", "media",
     "captures whose images or videos look like a file's or a capture's (PDQ hashes)"),
    ("user", "people", "people: add, list, disable, enable, reset-password, mfa reset"),
    ("case", "people", "cases and who has which role on them: add, list, grant, revoke, "
                       "members"),
    ("token", "people", "API tokens: create (printed once), list, revoke"),
    ("serve", "serve", "serve the HTTP API (127.0.0.1 unless TLS or --behind-proxy)"),
)
_MODULES = {name: module for name, module, _help in COMMANDS}


def _parser(command: str | None) -> argparse.ArgumentParser:
    """Every command by name and help; the arguments of ``command`` only."""
    parser = argparse.ArgumentParser(
        prog="archiver",
        description="Capture web evidence into signed WARCs with a tamper-evident ledger.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default: $ARCHIVER_CONFIG, if set)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module, text in COMMANDS:
        p = sub.add_parser(name, help=text, description=text)
        if name == command:
            importlib.import_module(f"archiver.cli.{module}").add_arguments(name, p)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not an option of the
    top-level parser or its value), if it is one of ours."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in _MODULES else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``archiver`` command under umask 077: every archiver process (the CLI, the
    daemon, its workers) starts here, so all it writes is private (see archiver.privacy).
    """
    from archiver.privacy import private_umask

    with private_umask():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Every human-readable byte, argparse's messages included, leaves through a
    # HumanStream: control characters escaped, a closed pipe survived (see
    # archiver.cli.output). Restored on the way out, for callers in the same process.
    saved = sys.stdout, sys.stderr
    out, err = HumanStream(sys.stdout), HumanStream(sys.stderr)
    sys.stdout, sys.stderr = cast(TextIO, out), cast(TextIO, err)
    try:
        return _run(arguments, cast(TextIO, out), cast(TextIO, err))
    except BrokenPipeError:  # a binary write (``get -o -``) to a reader that went away
        out.flush()
        return EXIT_FAILED
    finally:
        sys.stdout, sys.stderr = saved


def _text_arguments(args: argparse.Namespace) -> None:
    """Refuse (BadInput) a text argument that is not valid text. URLs are checked by
    their commands, through archiver.urls.check_url, which says more."""
    from archiver.urls import check_text

    for name, value in vars(args).items():
        if name in ("url", "urls"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                check_text(item, f"the {name.replace('_', '-')} argument")


def _run(arguments: list[str], out: TextIO, err: TextIO) -> int:
    args = _parser(_command_in(arguments)).parse_args(arguments)
    from archiver.errors import BadInput

    try:
        _text_arguments(args)
    except BadInput as exc:
        fail(err, str(exc))
        return EXIT_USAGE
    if args.command == "verify-bundle":  # needs no archive, database or configuration
        from archiver.cli.export import cmd_verify_bundle

        return cmd_verify_bundle(args, out, err)
    # The exception families are small modules of their own; the libraries behind them
    # load only when the command needs them.
    from archiver.errors import ArchiverError, ConfigError, NotFoundError, NotInitialisedError
    from chain_of_custody.errors import CustodyError
    from storage.errors import StorageError

    try:
        from archiver.settings import load_settings

        settings = load_settings(args.config)
        status: int = args.handler(settings, args, out)
        return status
    except (ConfigError, BadInput) as exc:
        fail(err, str(exc))
        return EXIT_USAGE
    except NotInitialisedError as exc:
        fail(err, str(exc))
        return EXIT_NOT_INITIALISED
    except NotFoundError as exc:
        fail(err, str(exc))
        return EXIT_NOT_FOUND
    except (ArchiverError, CustodyError, StorageError) as exc:
        fail(err, str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        fail(err, "interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

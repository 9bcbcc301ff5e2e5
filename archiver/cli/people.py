"""CLI commands that manage people: ``user``, ``case`` and ``token``.

They work on the server without the web application (bootstrap of the first admin,
scripting) and act as the server's operator (``settings.operator``, an OS account
``os:<account>@<host>``), who is named on every ledger entry they write; they need the
signing passphrase, like ``capture``. Library modules are imported inside the commands
(see :mod:`archiver.cli.main`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from archiver.cli.common import EXIT_OK, emit_json, shown

if TYPE_CHECKING:
    from archiver.people.accounts import People
    from archiver.settings import Settings

_CASE_ROLES = ("investigator", "legal", "viewer")
_ARCHIVE_ROLES = ("admin", "auditor")
_SCOPES = ("read", "submit", "export")


def _one_of(kind: str, names: tuple[str, ...]) -> Any:
    def parse(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {kind} {text!r} (one of {', '.join(names)})")
        return text

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _expires(text: str) -> str | float:
    """``never`` or a duration (``90d``, ``12h``), in seconds."""
    if text == "never":
        return text
    from archiver.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or never") from exc


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``command`` (``user``, ``case`` or ``token``)."""
    sub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    if command == "user":
        p.set_defaults(handler=cmd_user)
        q = sub.add_parser("add", help="create a person (prompts for a password)")
        q.add_argument("login")
        q.add_argument("--role", type=_one_of("archive role", _ARCHIVE_ROLES),
                       help="an archive-wide role: admin or auditor (default: none; roles "
                            "on cases come from 'case grant')")
        q.add_argument("--display-name")
        q.add_argument("--password-file", type=Path,
                       help="read the password from this file (its first line; - for "
                            "standard input) instead of asking")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("list", help="every person, role, state")
        q.add_argument("--json", action="store_true", help="one JSON object per person")
        for name, text in (("disable", "disable a person: sessions end, tokens refused"),
                           ("enable", "enable a disabled person again")):
            q = sub.add_parser(name, help=text)
            q.add_argument("login")
            q.add_argument("--json", action="store_true")
        q = sub.add_parser("reset-password", help="set a new password (ends sessions)")
        q.add_argument("login")
        q.add_argument("--password-file", type=Path)
        mfa = sub.add_parser("mfa", help="second factor (TOTP)")
        msub = mfa.add_subparsers(dest="mfa_command", required=True, metavar="SUBCOMMAND")
        q = msub.add_parser("reset", help="remove a person's TOTP: they enrol again")
        q.add_argument("login")
    elif command == "case":
        p.set_defaults(handler=cmd_case)
        q = sub.add_parser("add", help="create a case")
        q.add_argument("name")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("list", help="every case and how many members it has")
        q.add_argument("--json", action="store_true", help="one JSON object per case")
        q = sub.add_parser("grant", help="give a person a role on a case ('unfiled': the "
                                         "captures with no case)")
        q.add_argument("case")
        q.add_argument("login")
        q.add_argument("role", type=_one_of("case role", _CASE_ROLES))
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("revoke", help="take a person's role on a case away")
        q.add_argument("case")
        q.add_argument("login")
        q = sub.add_parser("members", help="the people with a role on a case")
        q.add_argument("case")
        q.add_argument("--json", action="store_true", help="one JSON object per member")
    elif command == "token":
        p.set_defaults(handler=cmd_token)
        q = sub.add_parser("create", help="a new API token, printed once")
        q.add_argument("--user", required=True, dest="login")
        q.add_argument("--case", action="append", dest="cases", metavar="CASE",
                       help="limit it to this case (repeatable; 'unfiled' too); default: "
                            "every case its owner has a role on")
        q.add_argument("--scope", type=_one_of("token scope", _SCOPES), default="read",
                       help="read (default), submit or export")
        q.add_argument("--expires", type=_expires,
                       help="lifetime, e.g. 90d, 12h (default: auth.token_days), or never")
        q.add_argument("--label", help="what it is for (shown in token list)")
        q.add_argument("--json", action="store_true")
        q = sub.add_parser("list", help="tokens (never their secrets)")
        q.add_argument("--user", dest="login")
        q.add_argument("--json", action="store_true", help="one JSON object per token")
        q = sub.add_parser("revoke", help="revoke a token")
        q.add_argument("token_id", metavar="ID")
        q.add_argument("--json", action="store_true")


def _people(archive: Any, settings: Settings) -> People:
    from archiver.people.accounts import People

    return People(archive, actor=settings.operator)


def read_password(path: Path | None, *, confirm: bool = True) -> str:
    """The new password: the first line of ``path`` (``-``: standard input), else asked
    twice on the terminal. Raises :class:`BadInput` (no terminal, no match, unreadable
    file); never says the password."""
    from archiver.errors import BadInput

    if path is not None:
        try:
            if str(path) == "-":
                text = sys.stdin.readline()
            else:
                with path.open(encoding="utf-8") as handle:
                    text = handle.readline()
        except OSError as exc:
            raise BadInput(f"cannot read the password file {path}: "
                           f"{exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise BadInput(f"the password file {path} is not UTF-8 text") from None
        password = text.rstrip("\r\n")
        if not password:
            raise BadInput(f"the password file {path} holds no password on its first line")
        return password
    if not sys.stdin.isatty():
        raise BadInput("no password: give --password-file FILE (- for standard input), or "
                       "run this on a terminal to be asked")
    import getpass

    password = getpass.getpass("New password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise BadInput("the two passwords differ; nothing was changed")
    return password


def _user_line(view: Any) -> str:
    role = view.archive_role.value if view.archive_role else "-"
    state = "disabled" if view.disabled else "active"
    if view.locked_until:
        state += f", locked until {view.locked_until}"
    if view.mfa_enrolled:
        state += ", totp"
    elif view.mfa_required:
        state += ", totp required, not enrolled"
    return shown(f"{view.login:<20} {role:<8} {state:<36} {view.display_name}")


def cmd_user(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.people.access import ArchiveRole

    if args.subcommand in ("add", "reset-password"):
        password = read_password(args.password_file)
    with Archive.open(settings) as archive:
        people = _people(archive, settings)
        if args.subcommand == "add":
            view = people.add_user(
                args.login, display_name=args.display_name, password=password,
                archive_role=None if args.role is None else ArchiveRole(args.role))
        elif args.subcommand == "list":
            for view in people.list_users():
                if args.json:
                    emit_json(out, view.as_json())
                else:
                    print(_user_line(view), file=out)
            return EXIT_OK
        elif args.subcommand == "disable":
            view = people.disable_user(args.login)
        elif args.subcommand == "enable":
            view = people.enable_user(args.login)
        elif args.subcommand == "reset-password":
            people.reset_password(args.login, password)
            print(f"password of {args.login} reset; their sessions ended", file=out)
            return EXIT_OK
        else:  # mfa reset
            people.reset_mfa(args.login)
            print(f"second factor of {args.login} removed; they enrol again at their next "
                  "login", file=out)
            return EXIT_OK
    if args.json:
        emit_json(out, view.as_json())
    else:
        done = {"add": "created", "disable": "disabled (sessions ended, tokens refused)",
                "enable": "enabled"}[args.subcommand]
        print(shown(f"user {view.login} {done}"), file=out)
    return EXIT_OK


def cmd_case(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from archiver.archive import Archive
    from archiver.people.access import CaseRole

    with Archive.open(settings) as archive:
        people = _people(archive, settings)
        if args.subcommand == "add":
            case = people.add_case(args.name)
            if args.json:
                emit_json(out, case.as_json())
            else:
                print(shown(f"case {case.name} created"), file=out)
        elif args.subcommand == "list":
            for case in people.list_cases():
                if args.json:
                    emit_json(out, case.as_json())
                else:
                    print(shown(f"{case.members:>4} members  {case.name}"), file=out)
        elif args.subcommand == "grant":
            member = people.grant(args.case, args.login, CaseRole(args.role))
            if args.json:
                emit_json(out, member.as_json())
            else:
                print(shown(f"{member.login} is {member.role.value} on case {member.case}"),
                      file=out)
        elif args.subcommand == "revoke":
            role = people.revoke(args.case, args.login)
            print(shown(f"{args.login} is no longer {role.value} on case {args.case}; "
                        "their sessions ended"), file=out)
        else:
            for member in people.members(args.case):
                if args.json:
                    emit_json(out, member.as_json())
                else:
                    state = " (disabled)" if member.disabled else ""
                    print(shown(f"{member.login:<20} {member.role.value:<13} granted "
                                f"{member.granted} by {member.granted_by}{state}"), file=out)
    return EXIT_OK


def cmd_token(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    from datetime import timedelta

    from archiver.archive import Archive
    from archiver.people.access import Scope

    with Archive.open(settings) as archive:
        people = _people(archive, settings)
        if args.subcommand == "create":
            expires: Any = args.expires
            if isinstance(expires, float):
                expires = timedelta(seconds=expires)
            view, secret = people.create_token(args.login, scope=Scope(args.scope),
                                               cases=args.cases, expires_in=expires,
                                               label=args.label)
            if args.json:
                emit_json(out, {**view.as_json(), "secret": secret})
            else:
                # The secret alone on standard output (for a script to capture); what it
                # is on standard error. It is never shown again.
                print(secret, file=out)
                cases = ", ".join(view.cases) if view.cases is not None else "all their cases"
                print(shown(f"token {view.id} of {view.login}: scope {view.scope.value}, "
                            f"cases {cases}, expires {view.expires or 'never'}; shown once, "
                            "keep it now"), file=sys.stderr)
            return EXIT_OK
        if args.subcommand == "list":
            now = archive.clock()
            for view in people.list_tokens(args.login):
                if args.json:
                    emit_json(out, {**view.as_json(), "state": view.state(now)})
                else:
                    cases = ",".join(view.cases) if view.cases is not None else "*"
                    print(shown(f"{view.id}  {view.login:<16} {view.scope.value:<7} "
                                f"{view.state(now):<8} expires {view.expires or 'never'}  "
                                f"cases {cases}  {view.label or ''}").rstrip(), file=out)
            return EXIT_OK
        view = people.revoke_token(args.token_id)
    if args.json:
        emit_json(out, view.as_json())
    else:
        print(shown(f"token {view.id} of {view.login} revoked"), file=out)
    return EXIT_OK

"""``archiver user|case|token`` and ``archiver ledger list --actor`` through the command,
on SQLite and PostgreSQL: what they print, what they refuse (exit code and exact
message), and the ledger entries they write (actor: the operator)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from archive_cli import OPERATOR, Cli

from archiver.settings import Settings

GOOD = "a long enough passphrase 7"


def password_file(tmp_path: Path, password: str = GOOD) -> str:
    path = tmp_path / "password.txt"
    path.write_text(password + "\n", encoding="utf-8")
    return str(path)


def test_default_operator_is_labelled_as_an_os_account(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.delenv("ARCHIVER_OPERATOR", raising=False)
    import getpass
    import socket

    assert Settings().operator == f"os:{getpass.getuser()}@{socket.gethostname()}"


def test_user_add_list_disable_enable(people_cli: Cli, tmp_path: Path) -> None:
    """user add with --password-file; user list (human and JSON, no hash anywhere);
    disable/enable; each a ledger entry by the operator."""
    out = people_cli.ok("user", "add", "alice", "--role", "admin", "--display-name",
                        "Alice A.", "--password-file", password_file(tmp_path))
    assert out == "user alice created\n"
    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    listed = people_cli.json_lines("user", "list")
    assert [(u["login"], u["archive_role"], u["display_name"], u["mfa_required"])
            for u in listed] == [("alice", "admin", "Alice A.", True), ("bob", None, "bob", False)]
    assert "argon2" not in json.dumps(listed)
    assert GOOD not in json.dumps(listed)
    human = people_cli.ok("user", "list")
    assert "alice" in human
    assert "totp required, not enrolled" in human
    assert people_cli.ok("user", "disable", "bob").startswith("user bob disabled")
    assert people_cli.json("user", "enable", "bob")["disabled"] is False
    entries = people_cli.json_lines("ledger", "list", "--actor", OPERATOR)
    assert [(e["action"], e["subject"]) for e in entries[-4:]] == [
        ("user.created", "user:alice"), ("user.created", "user:bob"),
        ("user.disabled", "user:bob"), ("user.enabled", "user:bob")]
    assert entries[-4]["payload"] == {"login": "alice", "display_name": "Alice A.",
                                      "archive_role": "admin"}


def test_password_from_standard_input(people_cli: Cli, monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD + "\n"))
    people_cli.ok("user", "add", "carol", "--password-file", "-")
    monkeypatch.setattr("sys.stdin", io.StringIO("another long passphrase\n"))
    assert people_cli.ok("user", "reset-password", "carol", "--password-file", "-") == (
        "password of carol reset; their sessions ended\n")


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["user", "add", "bob", "--role", "boss"], 2,
     "argument --role: unknown archive role 'boss' (one of admin, auditor)"),
    (["user", "add", "bob", "--password-file", "SHORT"], 2,
     "archiver: error: the password is too short: at least 12 characters"),
    (["user", "add", "bob", "--password-file", "COMMON"], 2,
     "archiver: error: the password is one of the most common passwords; choose another"),
    (["user", "add", "Bob", "--password-file", "GOOD"], 2,
     "archiver: error: invalid login name 'Bob': 1 to 64 characters, lower-case letters "
     "a-z, digits and . _ -, starting with a letter or digit"),
    (["user", "add", "bob", "--password-file", "MISSING"], 2,
     "archiver: error: cannot read the password file"),
    (["user", "add", "bob"], 2,
     "archiver: error: no password: give --password-file FILE (- for standard input), or "
     "run this on a terminal to be asked"),
    (["user", "disable", "nobody"], 4, "archiver: error: no user 'nobody'"),
    (["case", "grant", "Case 9", "bob", "viewer"], 4, "archiver: error: no case 'Case 9'"),
    (["case", "grant", "Case 7", "bob", "owner"], 2,
     "argument role: unknown case role 'owner' (one of investigator, legal, viewer)"),
    (["case", "members", "Case 9"], 4, "archiver: error: no case 'Case 9'"),
    (["token", "create", "--user", "nobody"], 4, "archiver: error: no user 'nobody'"),
    (["token", "create", "--user", "bob", "--expires", "soon"], 2,
     "argument --expires: not a duration: 'soon' (write e.g. 90s, 15m, 1h30m, 7d), or never"),
    (["token", "create", "--user", "bob", "--scope", "admin"], 2,
     "argument --scope: unknown token scope 'admin' (one of read, submit, export)"),
    (["token", "revoke", "tok_nothere00"], 4, "archiver: error: no token 'tok_nothere00'"),
])
def test_bad_input(people_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
                   message: str) -> None:
    """Exit 2 (usage) or 4 (not found) with the exact message, no traceback."""
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    files = {"SHORT": password_file(tmp_path, "short one"),
             "COMMON": password_file(tmp_path / "..", "Password1234"),
             "GOOD": password_file(tmp_path / ".." / "..", GOOD),
             "MISSING": str(tmp_path / "missing.txt")}
    if argv[0] != "user" or argv[1] != "add":
        people_cli.ok("user", "add", "bob", "--password-file", files["GOOD"])
        people_cli.ok("case", "add", "Case 7")
    argv = [files.get(a, a) for a in argv]
    try:
        got, out, err = people_cli(*argv)
    except SystemExit as exited:  # argparse refuses the arguments (usage, exit 2)
        got, (out, err) = int(str(exited.code)), capsys.readouterr()
    assert (got, out) == (code, "")
    assert message in err
    assert "Traceback" not in err
    assert GOOD not in err
    assert "short one" not in err


def test_duplicate_login_and_case(people_cli: Cli, tmp_path: Path) -> None:
    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    code, _out, err = people_cli("user", "add", "bob", "--password-file",
                                 password_file(tmp_path))
    assert (code, err) == (2, "archiver: error: a user 'bob' already exists\n")
    people_cli.ok("case", "add", "Case 7")
    code, _out, err = people_cli("case", "add", "Case 7")
    assert (code, err) == (2, "archiver: error: a case 'Case 7' already exists\n")


def test_cases_grants_members(people_cli: Cli, tmp_path: Path) -> None:
    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    assert people_cli.ok("case", "add", "Case 7") == "case Case 7 created\n"
    assert people_cli.ok("case", "grant", "Case 7", "bob", "investigator") == (
        "bob is investigator on case Case 7\n")
    people_cli.ok("case", "grant", "unfiled", "bob", "viewer")
    (case,) = people_cli.json_lines("case", "list")
    assert (case["name"], case["members"]) == ("Case 7", 1)
    (member,) = people_cli.json_lines("case", "members", "Case 7")
    assert (member["login"], member["role"], member["granted_by"]) == (
        "bob", "investigator", OPERATOR)
    assert people_cli.ok("case", "revoke", "Case 7", "bob").startswith(
        "bob is no longer investigator on case Case 7")
    assert people_cli.json_lines("case", "members", "Case 7") == []
    code, _out, err = people_cli("case", "revoke", "Case 7", "bob")
    assert (code, err) == (4, "archiver: error: bob has no role on case 'Case 7'\n")
    entries = people_cli.json_lines("ledger", "list", "--action", "role.granted", "--action",
                                    "role.revoked")
    assert [(e["actor"], e["action"], e["payload"]) for e in entries] == [
        (OPERATOR, "role.granted", {"case": "Case 7", "login": "bob", "role": "investigator"}),
        (OPERATOR, "role.granted", {"case": "unfiled", "login": "bob", "role": "viewer"}),
        (OPERATOR, "role.revoked", {"case": "Case 7", "login": "bob", "role": "investigator"}),
    ]


def test_token_printed_once(people_cli: Cli, tmp_path: Path) -> None:
    """token create prints the secret alone on stdout, once; token list never shows it;
    token.created names the operator; --expires never is explicit; revoke."""
    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    people_cli.ok("case", "add", "Case 7")
    code, out, err = people_cli("token", "create", "--user", "bob", "--case", "Case 7",
                                "--scope", "submit", "--expires", "7d", "--label", "phone")
    assert code == 0
    secret = out.strip()
    assert out == secret + "\n"
    assert secret.startswith("ea_")
    assert len(secret) == 46
    assert "shown once" in err
    assert secret not in err
    made = people_cli.json("token", "create", "--user", "bob", "--expires", "never")
    assert made["expires"] is None
    assert made["secret"].startswith("ea_")
    listed = people_cli.json_lines("token", "list", "--user", "bob")
    assert len(listed) == 2
    assert all("secret" not in t for t in listed)
    text = people_cli.ok("token", "list") + json.dumps(listed) + people_cli.ok(
        "ledger", "list")
    assert secret not in text
    assert made["secret"] not in text
    first = next(t for t in listed if t["label"] == "phone")
    assert (first["scope"], first["cases"], first["state"]) == ("submit", ["Case 7"], "active")
    entries = people_cli.json_lines("ledger", "list", "--action", "token.created")
    assert entries[0]["actor"] == OPERATOR
    assert entries[0]["payload"]["token_id"] == first["id"]
    assert entries[0]["payload"]["cases"] == ["Case 7"]
    assert people_cli.ok("token", "revoke", first["id"]) == (
        f"token {first['id']} of bob revoked\n")
    (again,) = [t for t in people_cli.json_lines("token", "list") if t["id"] == first["id"]]
    assert again["state"] == "revoked"


def test_ledger_actor_shows_one_persons_activity(people_cli: Cli, tmp_path: Path) -> None:
    """--actor alice matches user:alice only; a full actor string matches exactly."""
    from archiver.archive import Archive
    from archiver.people.accounts import People
    from archiver.settings import load_settings

    people_cli.ok("user", "add", "alice", "--password-file", password_file(tmp_path))
    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    with Archive.open(load_settings()) as archive:
        people = People(archive, actor=OPERATOR)
        people.login("alice", GOOD, client="127.0.0.1")
        people.login("bob", GOOD, client="127.0.0.1")
        People(archive, actor="user:alice", context={"session": "s1"}).add_case("Case 7")
    entries = people_cli.json_lines("ledger", "list", "--actor", "alice")
    assert [(e["actor"], e["action"], e["subject"]) for e in entries] == [
        ("user:alice", "auth.login", "user:alice"), ("user:alice", "case.created", "case:Case 7")]
    assert entries[1]["payload"] == {"case": "Case 7", "context": {"session": "s1"}}
    human = people_cli.ok("ledger", "list", "--actor", "user:bob")
    assert len(human.splitlines()) == 1
    assert "user:bob  auth.login  user:bob" in human
    assert people_cli.json_lines("ledger", "list", "--actor", "alic") == []
    mine = people_cli.json_lines("ledger", "list", "--actor", OPERATOR)
    assert {e["actor"] for e in mine} == {OPERATOR}
    assert {"key.created", "user.created"} <= {e["action"] for e in mine}


def test_reset_password_and_mfa(people_cli: Cli, tmp_path: Path) -> None:
    """user reset-password (from a file) and user mfa reset: their messages and ledger
    entries by the operator; the new password is nowhere on the ledger; the old one
    no longer logs in."""
    from archiver.archive import Archive
    from archiver.people.accounts import People
    from archiver.people.errors import LoginRefused
    from archiver.settings import load_settings

    people_cli.ok("user", "add", "bob", "--password-file", password_file(tmp_path))
    new = "a fresh passphrase for bob"
    (tmp_path / "new.txt").write_text(new + "\r\n", encoding="utf-8")
    assert people_cli.ok("user", "reset-password", "bob", "--password-file",
                         str(tmp_path / "new.txt")) == (
        "password of bob reset; their sessions ended\n")
    assert people_cli.ok("user", "mfa", "reset", "bob") == (
        "second factor of bob removed; they enrol again at their next login\n")
    entries = people_cli.json_lines("ledger", "list", "--subject", "user:bob")
    assert [(e["actor"], e["action"], e["payload"]) for e in entries] == [
        (OPERATOR, "user.created", {"login": "bob", "display_name": "bob",
                                    "archive_role": None}),
        (OPERATOR, "user.password_reset", {"login": "bob"}),
        (OPERATOR, "user.mfa_reset", {"login": "bob"})]
    assert new not in people_cli.ok("ledger", "list")
    with Archive.open(load_settings()) as archive:
        people = People(archive, actor=OPERATOR)
        with pytest.raises(LoginRefused):
            people.login("bob", GOOD, client="127.0.0.1")
        assert people.login("bob", new, client="127.0.0.1").login == "bob"


def _on_a_terminal(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run ``archiver ARGV`` in a new process whose controlling terminal is a
    pseudo-terminal; type each answer when a password prompt appears. Returns the exit
    code and what the terminal showed."""
    import fcntl
    import os
    import pty
    import subprocess
    import sys
    import termios
    import time

    master, slave = pty.openpty()

    def take_terminal() -> None:  # the child's controlling terminal: getpass uses /dev/tty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    # preexec_fn: the one way to give the child a controlling terminal
    process = subprocess.Popen(
        [sys.executable, "-m", "archiver.cli", *argv], stdin=slave, stdout=slave,
        stderr=slave, preexec_fn=take_terminal, close_fds=True)
    os.close(slave)
    shown = bytearray()
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown.extend(chunk)
        prompts = shown.count(b"password: ") + shown.count(b"Again: ")
        if pending and prompts > len(answers) - len(pending):
            os.write(master, pending.pop(0).encode() + b"\n")
    code = process.wait(timeout=60)
    os.close(master)
    return code, shown.decode("utf-8", "replace")


def test_user_add_asks_twice_on_a_terminal(people_cli: Cli) -> None:
    """No --password-file on a terminal: asked twice, not echoed; two different answers
    refuse (exit 2, nothing created); the same twice creates the user."""
    code, shown = _on_a_terminal(["user", "add", "erin"], [GOOD, GOOD + " but not"])
    assert code == 2, shown
    assert "the two passwords differ; nothing was changed" in shown
    assert GOOD not in shown
    code, shown = _on_a_terminal(["user", "add", "erin"], [GOOD, GOOD])
    assert code == 0, shown
    assert "New password: " in shown
    assert "Again: " in shown
    assert "user erin created" in shown
    assert GOOD not in shown
    assert [u["login"] for u in people_cli.json_lines("user", "list")] == ["erin"]

"""The issue's walk, literally: a fresh archive, ``archiver serve``, ``archiver daemon``,
and people working with ``curl``.

``archiver user add alice --role admin`` (the command line, on the server); alice signs
in with curl, enrols her second factor as an admin must, creates the cases and the
people (bob investigator on Case 1, carol legal on Case 2, dave auditor) and bob's
token; bob's token submits a URL of the fixture site; the real daemon captures it; bob
lists it, reads it and downloads an artifact (its SHA-256 is the listed one); carol gets
404 for the capture and its artifact; dave verifies it but may not download it; finally
``archiver ledger list --actor`` shows each act with the right person.

Every program is a real process: ``archiver`` (serve, daemon, and the commands) and
``curl``. The curl command lines that ran are printed at the end (``-s`` shows them), as
the README's example shows them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import pyotp
import pytest
from archive_cli import archive_environment
from daemon_process import ROOT, Daemon, wait_until

from archiver.settings import Settings

ALICE_PASSWORD = "alice-keeps-the-keys-42"
PASSWORDS = {"bob": "bob-submits-evidence-17", "carol": "carol-reads-the-law-23",
             "dave": "dave-counts-hashes-31"}

pytestmark = pytest.mark.skipif(shutil.which("curl") is None,
                                reason="curl is not installed (scripts/setup installs it)")


def archiver_command() -> list[str]:
    """The ``archiver`` program of this environment."""
    script = Path(sys.executable).parent / "archiver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archiver.cli"]


def run_archiver(*argv: str) -> str:
    done = subprocess.run([*archiver_command(), *argv], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"archiver {shlex.join(argv)}: {done.stderr}{done.stdout}"
    return done.stdout


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Curl:
    """Runs ``curl`` in ``workdir`` against the server; keeps every command line run."""

    base: str
    workdir: Path
    ran: list[str] = field(default_factory=list)

    def __call__(self, method: str, path: str, *options: str, output: str | None = None
                 ) -> Answer:
        # -X only where curl would not choose the method itself (GET; POST with -d)
        implied = method == "GET" or (method == "POST" and "-d" in options)
        argv = ["curl", "-sS", *([] if implied else ["-X", method]), *options]
        if output is not None:
            argv += ["-o", output]
        argv += ["-w", "\\n%{http_code}\\n", self.base + path]
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, timeout=60,
                              check=False)
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr!r}"
        line = shlex.join(argv)
        if line not in self.ran:
            self.ran.append(line)
        body, _, status = done.stdout.rstrip(b"\n").rpartition(b"\n")
        return Answer(int(status), body)


class Serve:
    """``archiver serve --insecure-http --port 0`` as a real process."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [*archiver_command(), "serve", "--insecure-http", "--port", "0", "--json"],
            cwd=ROOT, env=dict(os.environ), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first, f"archiver serve said nothing: {log.read_text(errors='replace')}"
        self.url = str(json.loads(first)["url"]).rstrip("/")

    def stop(self) -> int:
        """SIGTERM, and its exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.close()

    def close(self) -> None:
        self._log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def server(database_url: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Serve, Daemon]]:
    """A fresh archive (``archiver init``), alice its admin (``archiver user add``), and
    ``archiver serve`` and ``archiver daemon`` running over it."""
    home = tmp_path / "archive"
    extra = {
        "ARCHIVER_BROWSER__ENABLED": "false",
        "ARCHIVER_CAPTURE__FETCH_SUBRESOURCES": "false",
        "ARCHIVER_DAEMON__WORKERS": "1",
        "ARCHIVER_DAEMON__IDLE_POLL_SECONDS": "0.1",
        "ARCHIVER_DAEMON__SYNC_SECONDS": "0.3",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
        "ARCHIVER_DAEMON__LOG_FORMAT": "json",
    }
    if "media" in Settings.model_fields:
        extra["ARCHIVER_MEDIA__ENABLED"] = "false"
    archive_environment(monkeypatch, home, database_url, extra)
    run_archiver("init")
    secret = tmp_path / "alice.password"
    secret.write_text(ALICE_PASSWORD + "\n")
    secret.chmod(0o600)
    run_archiver("user", "add", "alice", "--role", "admin", "--password-file", str(secret))
    serve = Serve(tmp_path / "serve.log")
    daemon = Daemon(home, tmp_path / "daemon.log")
    try:
        yield serve, daemon
    finally:
        serve.kill()
        if daemon.process.poll() is None:
            daemon.kill_all()


def write_body(workdir: Path, name: str, body: dict[str, Any]) -> str:
    """A JSON request body in a file (passwords stay out of the command line)."""
    path = workdir / name
    path.write_text(json.dumps(body))
    path.chmod(0o600)
    return "@" + name


def sign_in(curl: Curl, login: str, password: str) -> str:
    """Logs ``login`` in (cookie jar ``<login>.jar``); returns the CSRF token."""
    body = write_body(curl.workdir, f"{login}-login.json",
                      {"login": login, "password": password})
    answer = curl("POST", "/api/auth/login", "-c", f"{login}.jar",
                  "-H", "Content-Type: application/json", "-d", body)
    assert answer.status == 200, answer.body
    return str(answer.json()["csrf_token"])


def ledger_acts(login: str) -> list[dict[str, Any]]:
    out = run_archiver("ledger", "list", "--actor", login, "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_the_issues_walk_with_curl(server: tuple[Serve, Daemon], tmp_path: Path,
                                   fixture_site: Any) -> None:
    """Done when: alice (admin) sets up Case 1 and its people; bob's token submits, the
    daemon captures, bob lists and downloads; carol gets 404, dave verifies but gets 403
    downloading; the ledger names each act's person."""
    serve, daemon = server
    work = tmp_path / "curl"
    work.mkdir()
    curl = Curl(serve.url, work)
    json_type = ("-H", "Content-Type: application/json")

    # alice signs in; as an admin she must enrol a second factor before anything else
    csrf = sign_in(curl, "alice", ALICE_PASSWORD)
    alice = ("-b", "alice.jar", "-c", "alice.jar")
    refused = curl("POST", "/api/cases", *alice, "-H", f"X-CSRF-Token: {csrf}", *json_type,
                   "-d", json.dumps({"name": "Case 1"}))
    assert (refused.status, refused.json()["error"]["code"]) == (403, "mfa-required")
    begun = curl("POST", "/api/me/mfa/begin", *alice, "-H", f"X-CSRF-Token: {csrf}")
    assert begun.status == 200, begun.body
    (secret,) = parse_qs(urlparse(begun.json()["otpauth_uri"]).query)["secret"]
    confirmed = curl("POST", "/api/me/mfa/confirm", *alice, "-H", f"X-CSRF-Token: {csrf}",
                     *json_type, "-d", json.dumps({"code": pyotp.TOTP(secret).now()}))
    assert confirmed.status == 200, confirmed.body
    admin = (*alice, "-H", f"X-CSRF-Token: {confirmed.json()['csrf_token']}", *json_type)

    for case in ("Case 1", "Case 2"):
        made = curl("POST", "/api/cases", *admin, "-d", json.dumps({"name": case}))
        assert made.status == 201, made.body
    for login, role in (("bob", None), ("carol", None), ("dave", "auditor")):
        body = write_body(work, f"new-{login}.json", {
            "login": login, "password": PASSWORDS[login], "archive_role": role})
        made = curl("POST", "/api/users", *admin, "-d", body)
        assert made.status == 201, made.body
    for case, login, role in (("Case 1", "bob", "investigator"), ("Case 2", "carol", "legal")):
        granted = curl("PUT", f"/api/cases/{quote(case)}/members/{login}", *admin,
                       "-d", json.dumps({"role": role}))
        assert granted.status == 200, granted.body
    made = curl("POST", "/api/tokens", *admin, "-d", json.dumps(
        {"user": "bob", "scope": "submit", "cases": ["Case 1"], "expires_days": 30}))
    assert made.status == 201, made.body
    bob_token, token_id = made.json()["secret"], made.json()["token"]["id"]

    # bob's token submits a URL; the daemon captures it
    bob = ("-H", f"Authorization: Bearer {bob_token}")
    url = fixture_site.url("/page.html")
    queued = curl("POST", "/api/captures", *bob, *json_type,
                  "-d", json.dumps({"urls": [url], "case": "Case 1"}))
    assert queued.status == 202, queued.body
    (job,) = queued.json()["jobs"]
    capture_id = job["capture_id"]

    def job_state() -> str | None:
        state = curl("GET", f"/api/jobs/{job['job_id']}", *bob).json()["state"]
        return state if state in ("done", "failed") else None

    try:
        assert wait_until(job_state, timeout=90, what="the daemon's capture") == "done"
    finally:
        print("daemon log (tail):", daemon.log_text()[-5000:])  # shown when it fails

    # bob lists it, reads it, downloads an artifact whose SHA-256 is the listed one
    listed = curl("GET", f"/api/captures?case={quote('Case 1')}", *bob)
    assert listed.status == 200
    assert [(c["id"], c["status"]) for c in listed.json()["items"]] == [
        (capture_id, "completed")]
    shown = curl("GET", f"/api/captures/{capture_id}", *bob)
    assert shown.status == 200, shown.body
    artifact = next(a for a in shown.json()["artifacts"] if a["role"] == "warc")
    downloaded = curl("GET", artifact["download"], *bob, output="evidence.warc.gz")
    assert downloaded.status == 200
    data = (work / "evidence.warc.gz").read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (artifact["size"],
                                                             artifact["sha256"])

    # carol (legal on Case 2): the capture and its artifact do not exist for her
    sign_in(curl, "carol", PASSWORDS["carol"])
    carol = ("-b", "carol.jar")
    for path in (f"/api/captures/{capture_id}", artifact["download"]):
        answer = curl("GET", path, *carol)
        assert (answer.status, answer.json()) == (404, {"error": {
            "code": "not-found", "message": "not found"}}), path

    # dave (auditor): verifies it; may not download it
    dave_csrf = sign_in(curl, "dave", PASSWORDS["dave"])
    dave = ("-b", "dave.jar", "-H", f"X-CSRF-Token: {dave_csrf}")
    verified = curl("POST", f"/api/captures/{capture_id}/verify", *dave)
    assert verified.status == 200, verified.body
    assert verified.json()["ok"] is True, verified.body
    denied = curl("GET", artifact["download"], *dave)
    assert (denied.status, denied.json()["error"]["code"]) == (403, "forbidden")

    assert daemon.terminate() == 0, daemon.log_text()[-3000:]
    assert serve.stop() == 0

    # the ledger names each act's person (the command line, on the server)
    alice_acts = Counter(e["action"] for e in ledger_acts("alice"))
    assert alice_acts == Counter({
        "auth.login": 1, "auth.mfa_enrolled": 1, "case.created": 2, "user.created": 3,
        "role.granted": 2, "token.created": 1}), alice_acts
    bobs = ledger_acts("bob")
    through_api = [e for e in bobs if e["action"] in
                   ("capture.queued", "access.viewed", "access.downloaded")]
    assert [e["action"] for e in through_api] == [
        "capture.queued", "access.viewed", "access.downloaded"], bobs
    for entry in through_api:
        assert entry["actor"] == "user:bob"
        assert entry["payload"]["context"]["token"] == token_id, entry
    assert [e["action"] for e in ledger_acts("carol")] == ["auth.login"]
    assert [e["action"] for e in ledger_acts("dave")] == ["auth.login"]

    transcript = tmp_path / "curl-walk.sh"
    transcript.write_text("\n".join(curl.ran) + "\n")
    print("\n".join(curl.ran))

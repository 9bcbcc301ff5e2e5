"""``archiver serve``: safe by default (what it refuses to do, with the message that says
what to do instead), and the real command end to end: a subprocess serving plain HTTP on
loopback and HTTPS with its own certificate, a person signing in, SIGTERM stopping it
with exit 0."""

from __future__ import annotations

import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from archive_cli import Cli, archive_environment

from archiver.archive import Archive
from archiver.cli.serve import LOOPBACK_PROXIES, ServePlan, plan
from archiver.errors import BadInput
from archiver.people.accounts import People
from archiver.settings import WebSettings, load_settings

PASSWORD = "bob-correct-horse-9"


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An initialised archive with one person, bob."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url, {"ARCHIVER_BROWSER__ENABLED": "false"})
    cli = Cli(home, capsys)
    cli.ok("init")
    archive = Archive.open(load_settings())
    try:
        People(archive, actor="os:test@host").add_user("bob", password=PASSWORD)
    finally:
        archive.close()
    return cli


def refused(cli: Cli, *argv: str) -> str:
    code, out, err = cli("serve", *argv)
    assert (code, out) == (2, ""), (argv, code, out, err)
    assert err.count("\n") == 1
    assert err.startswith("archiver: error: ")
    return err[len("archiver: error: "):].rstrip("\n")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_refuses_what_is_not_safe(cli: Cli, tmp_path: Path) -> None:
    """Any non-loopback address without TLS or a proxy, plain HTTP not asked for or
    not on loopback, half a TLS pair, proxies without --behind-proxy: exit 2, one line
    saying what to do."""
    assert refused(cli, "--host", "0.0.0.0") == (
        "refusing to serve on 0.0.0.0 without TLS: give --tls-cert and --tls-key, or "
        "--behind-proxy with a reverse proxy terminating TLS in front (or listen on "
        "127.0.0.1)")
    assert refused(cli, "--host", "192.0.2.10", "--port", "9000").startswith(
        "refusing to serve on 192.0.2.10 without TLS")
    assert refused(cli) == (
        "plain HTTP needs --insecure-http (loopback only; session cookies are then sent "
        "without Secure), or give --tls-cert and --tls-key, or --behind-proxy")
    assert refused(cli, "--host", "0.0.0.0", "--insecure-http") == (
        "--insecure-http is for loopback only (127.0.0.1, ::1), not 0.0.0.0: give "
        "--tls-cert and --tls-key, or --behind-proxy")
    cert = tmp_path / "cert.pem"
    cert.write_text("not really")
    assert refused(cli, "--tls-cert", str(cert)) == "HTTPS needs both --tls-cert and --tls-key"
    assert refused(cli, "--tls-cert", str(cert), "--tls-key", str(tmp_path / "none.pem")) \
        == f"cannot read {tmp_path / 'none.pem'}"
    assert refused(cli, "--insecure-http", "--trusted-proxy", "10.0.0.1") == (
        "trusted proxies are named but the server is not behind a proxy: add "
        "--behind-proxy (web.behind_proxy), or drop them")
    assert refused(cli, "--behind-proxy", "--trusted-proxy", "proxy.example") == (
        "not an IP address or network: proxy.example")
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal
        cli("serve", "--port", "70000")
    assert exited.value.code == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_needs_the_passphrase(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every view is a signed ledger entry: no passphrase, no server (exit 2, before it
    listens); a wrong one fails at start (exit 1), not at the first login."""
    monkeypatch.delenv("ARCHIVER_SIGNING__PASSPHRASE")
    assert refused(cli, "--insecure-http", "--port", "0") == (
        "no signing passphrase: set ARCHIVER_SIGNING__PASSPHRASE or "
        "signing.passphrase_file in the config")
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "not the passphrase")
    code, out, err = cli("serve", "--insecure-http", "--port", "0")
    assert (code, out) == (1, "")
    assert err.startswith("archiver: error: ")
    assert "passphrase" in err


def test_plan_accepts_the_safe_ways() -> None:
    """TLS anywhere, a proxy anywhere (loopback trusted unless named), plain HTTP on
    loopback when asked: the plan the server runs."""
    web = WebSettings()
    assert plan(web, insecure_http=True) == ServePlan("127.0.0.1", 8000, None, None, True, ())
    assert plan(web, host="::1", insecure_http=True).url(8000) == "http://[::1]:8000/"
    assert plan(web, host="0.0.0.0", behind_proxy=True).trusted_proxies == LOOPBACK_PROXIES
    assert plan(web, host="0.0.0.0", behind_proxy=True,
                trusted_proxies=["10.1.0.0/16"]).trusted_proxies == ("10.1.0.0/16",)
    cert = Path(__file__)  # readable; the plan does not parse it
    chosen = plan(web, host="0.0.0.0", tls_cert=cert, tls_key=cert, port=8443)
    assert (chosen.scheme, chosen.url(8443)) == ("https", "https://0.0.0.0:8443/")
    settings_plan = plan(WebSettings(host="10.0.0.5", behind_proxy=True,
                                     trusted_proxies=["10.0.0.1"]))
    assert settings_plan.trusted_proxies == ("10.0.0.1",)
    with pytest.raises(BadInput, match=r"^--insecure-http and --tls-cert contradict"):
        plan(web, insecure_http=True, tls_cert=cert, tls_key=cert)


# -- the real command ---------------------------------------------------------------------------


class Serving:
    """``archiver serve`` in a subprocess, and the URL it printed."""

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "archiver.cli", "serve", "--port", "0", "--json", *argv],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        assert self.process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(self.process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=60):
            self.process.kill()
            raise AssertionError("archiver serve printed no address within 60 s")
        line = self.process.stdout.readline()
        assert line, self.process.stderr.read() if self.process.stderr else ""
        printed = json.loads(line)
        self.url: str = printed["url"]
        self.replay_origin: str = printed["replay_origin"]

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        stderr = self.process.stderr.read() if self.process.stderr else ""
        self.close()
        return code, stderr

    def close(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def serving() -> Iterator[list[Serving]]:
    started: list[Serving] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        server.close()


def _sign_in(http: httpx.Client) -> dict[str, Any]:
    answer = http.post("/api/auth/login", json={"login": "bob", "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    me = http.get("/api/me")
    assert me.status_code == 200, me.text
    body: dict[str, Any] = me.json()
    return body


def test_serve_end_to_end_plain_http_on_loopback(cli: Cli, serving: list[Serving]) -> None:
    """The real command: it prints its URL, answers /healthz, a person signs in (cookie
    without Secure: --insecure-http) and is on the ledger; SIGTERM stops it, exit 0."""
    server = Serving("--insecure-http")
    serving.append(server)
    assert server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"ok": True}
        me = _sign_in(http)
        assert me["user"]["login"] == "bob"
    code, stderr = server.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    archive = Archive.open(load_settings())
    try:
        size = archive.ledger.size()
        (entry,) = archive.ledger.entries(start=size - 1)
    finally:
        archive.close()
    assert (entry.actor, entry.action) == ("user:bob", "auth.login")
    assert entry.payload["context"]["session"] == me["session"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_runs_the_replay_origin_beside_the_app(cli: Cli, serving: list[Serving]) -> None:
    """One process serves both origins: the replay origin (--replay-port, on the app's
    host) serves ReplayWeb.page's service worker and refuses what it does not know; the
    app's CSP frames it; SIGTERM stops both, exit 0."""
    server = Serving("--insecure-http", "--replay-port", "0")
    serving.append(server)
    assert server.replay_origin.startswith("http://127.0.0.1:")
    assert server.replay_origin != server.url.rstrip("/")
    with httpx.Client(base_url=server.replay_origin, timeout=30) as replay:
        worker = replay.get("/replay/sw.js")
        assert (worker.status_code, worker.headers["service-worker-allowed"]) \
            == (200, "/replay/")
        assert replay.get("/healthz").status_code == 404
    with httpx.Client(base_url=server.url, timeout=30) as http:
        policy = http.get("/healthz").headers["content-security-policy"]
        assert f"frame-src {server.replay_origin};" in policy
    code, stderr = server.stop()
    assert code == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_serve_https_with_its_own_certificate(cli: Cli, serving: list[Serving],
                                              tmp_path: Path) -> None:
    """With --tls-cert and --tls-key it speaks HTTPS (verified against the certificate
    openssl made), sends Strict-Transport-Security and a Secure cookie."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    server = Serving("--tls-cert", str(cert), "--tls-key", str(key))
    serving.append(server)
    assert server.url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=server.url, timeout=30, verify=trusting) as http:
        health = http.get("/healthz")
        assert health.headers["strict-transport-security"] == "max-age=31536000"
        answer = http.post("/api/auth/login", json={"login": "bob", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        assert "secure" in answer.headers["set-cookie"].lower().split("; ")
        assert http.get("/api/me").json()["user"]["login"] == "bob"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "healthz", timeout=10)  # not trusted without the cert
    started = time.monotonic()
    code, stderr = server.stop()
    assert code == 0, stderr
    assert time.monotonic() - started < 30

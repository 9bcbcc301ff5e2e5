"""Trusted timestamps (RFC 3161) of ledger checkpoints, on SQLite and PostgreSQL, against a
local openssl TSA; ``openssl ts -verify`` is the independent judge of every token."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from export_helpers import Cli, LocalTsa, epoch, openssl_verifies
from fixture_site import FixtureSite

from archiver.settings import TimestampSettings, TsaSettings
from archiver.timestamps import Timestamper
from chain_of_custody.errors import VerificationError
from chain_of_custody.timestamp import TimestampLog, verify_token


def _newest(cli: Cli) -> tuple[Any, list[Any]]:
    with cli.archive() as archive:
        checkpoint = archive.ledger.latest_checkpoint()
        assert checkpoint is not None
        return checkpoint, list(archive.timestamps(checkpoint))


def _write_token(tmp_path: Path, cli: Cli) -> tuple[Path, Path, str]:
    checkpoint, tokens = _newest(cli)
    (token,) = tokens
    note = tmp_path / "checkpoint.note"
    note.write_text(checkpoint.note)
    reply = tmp_path / "token.tsr"
    reply.write_bytes(token.response)
    return note, reply, token.gen_time


def test_every_checkpoint_gets_a_token_openssl_accepts(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A capture's checkpoint is stamped by the configured TSA; the token is kept with the
    TSA's CA, and `openssl ts -verify` accepts it over the exact note bytes."""
    cli.authorities(tsa.authority())
    cli.ok("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    checkpoint, tokens = _newest(cli)
    (token,) = tokens
    assert token.tsa_url == tsa.url
    assert token.tree_size == checkpoint.tree_size
    assert token.ca_pem == tsa.ca.cert.read_text()
    note, reply, _ = _write_token(tmp_path, cli)
    done = openssl_verifies("ts", "-verify", "-data", str(note), "-in", str(reply),
                            "-CAfile", str(tsa.ca.cert), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout
    note.write_text(note.read_text().replace("\n", "\n\n", 1))
    done = openssl_verifies("ts", "-verify", "-data", str(note), "-in", str(reply),
                            "-CAfile", str(tsa.ca.cert), cwd=tmp_path)
    assert done.returncode == 1  # the token is over these bytes and no others


def test_one_request_per_checkpoint_not_per_capture(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite
) -> None:
    """With checkpoints made on demand, three captures cost the TSA one request: the token
    of the checkpoint covers every entry before it."""
    path = f"/per-checkpoint-{uuid.uuid4().hex}"  # the TSA's request log is session-wide
    cli.authorities(tsa.authority(path))
    cli.monkeypatch.setenv("ARCHIVER_LEDGER__CHECKPOINT_AFTER_CAPTURE", "false")
    cli.ok("capture", *(fixture_site.url(p) for p in ("/page.html", "/gone-404", "/gone-410")))
    assert tsa.requests.count(path) == 0
    cli.ok("ledger", "checkpoint")
    assert tsa.requests.count(path) == 1
    checkpoint, tokens = _newest(cli)
    assert len(tokens) == 1
    with cli.archive() as archive:
        assert archive.ledger.size() == checkpoint.tree_size
    cli.ok("ledger", "checkpoint")  # nothing new: no new checkpoint, no new request
    assert tsa.requests.count(path) == 1


def test_every_configured_tsa_stamps_every_checkpoint(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite
) -> None:
    """Two TSAs configured: each checkpoint holds a token from each."""
    cli.authorities(tsa.authority("/first"), tsa.authority("/second"))
    cli.ok("capture", fixture_site.url("/page.html"))
    _, tokens = _newest(cli)
    assert sorted(t.tsa_url.rsplit("/", 1)[1] for t in tokens) == [
        "first", "second"]


def test_a_tsa_that_is_down_delays_the_timestamp_never_the_capture(
    cli: Cli, tsa: LocalTsa, closed_port_url: str, fixture_site: FixtureSite
) -> None:
    """TSA on a closed port: the capture completes and is checkpointed without a token;
    `ledger timestamp` says which TSA failed (exit 1); once a TSA answers, `ledger
    timestamp` stamps the newest checkpoint, which covers the capture."""
    cli.authorities({"url": closed_port_url, "ca_file": str(tsa.ca.cert)})
    started = time.monotonic()
    (capture,) = [cli.json("capture", fixture_site.url("/page.html"))]
    assert capture["status"] == "completed"
    assert time.monotonic() - started < 15
    checkpoint, tokens = _newest(cli)
    assert tokens == []
    assert checkpoint.tree_size > capture["ledger_seq"]
    code, out, _ = cli("ledger", "timestamp")
    assert code == 1
    assert f"FAIL  {closed_port_url}: TSA {closed_port_url} unreachable" in out
    cli.authorities(tsa.authority("/back"))
    out = cli.ok("ledger", "timestamp")
    assert f"ok    {tsa.url.replace('/tsr', '/back')}: genTime " in out
    assert "(obtained now)" in out
    checkpoint, tokens = _newest(cli)
    assert len(tokens) == 1
    assert checkpoint.tree_size > capture["ledger_seq"]
    report = cli.json("ledger", "timestamp")
    assert report["timestamps"][0]["fresh"] is False  # already held: not asked again


def test_the_next_checkpoint_picks_up_a_tsa_that_came_back(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite
) -> None:
    """A TSA answering 503 leaves a checkpoint unstamped; the next capture's checkpoint
    (in another process, so no back-off) is stamped."""
    cli.authorities(tsa.authority("/flaky"))
    tsa.status = 503
    try:
        cli.ok("capture", fixture_site.url("/page.html"))
        assert _newest(cli)[1] == []
    finally:
        tsa.status = 200
    cli.ok("capture", fixture_site.url("/gone-410"))
    assert len(_newest(cli)[1]) == 1


def test_a_failed_tsa_is_not_asked_again_until_its_retry_time(
    cli: Cli, tsa: LocalTsa
) -> None:
    """Within retry_after_seconds of a failure, checkpoints do not ask the TSA again (a
    dead TSA must not slow every capture of a batch); after it, or when forced, they do."""
    clock = [0.0]
    settings = TimestampSettings(authorities=(TsaSettings(url=tsa.url.replace("/tsr", "/retry"),
                                                          ca_file=tsa.ca.cert),),
                                 retry_after_seconds=60)
    with cli.archive() as archive:
        stamper = Timestamper(settings, TimestampLog(archive.engine), clock=archive.clock,
                              monotonic=lambda: clock[0])
        tsa.status = 503
        try:
            first = archive.ledger.create_checkpoint(archive.signing_key, archive.origin)
            (result,) = stamper.stamp(first)
            assert result.problem == f"TSA {settings.authorities[0].url} answered HTTP 503"
            asked = tsa.requests.count("/retry")
            clock[0] = 59.0
            (result,) = stamper.stamp(first)
            assert result.skipped
            assert tsa.requests.count("/retry") == asked
        finally:
            tsa.status = 200
        (result,) = stamper.stamp(first, force=True)
        assert result.ok
        assert result.fresh
        clock[0] = 200.0
        (result,) = stamper.stamp(first)
        assert result.ok
        assert not result.fresh  # already held: not asked again
        assert tsa.requests.count("/retry") == asked + 1


def test_timestamp_tokens_are_insert_only(cli: Cli, tsa: LocalTsa,
                                          fixture_site: FixtureSite) -> None:
    """The database refuses UPDATE and DELETE of a token, as it does for the ledger."""
    cli.authorities(tsa.authority())
    cli.ok("capture", fixture_site.url("/page.html"))
    with cli.archive() as archive:
        for statement in ("UPDATE timestamp_tokens SET gen_time = 'x'",
                          "DELETE FROM timestamp_tokens"):
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), \
                    archive.engine.begin() as conn:
                conn.execute(sa.text(statement))
        with archive.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM timestamp_tokens")).scalar() == 1


def test_a_token_verifies_as_of_its_gen_time_after_the_tsa_certificate_expired(
    cli: Cli, make_tsa: Any, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A TSA certificate valid for a few more seconds stamps a checkpoint; once it has
    expired the token still verifies (as of genTime): openssl agrees with -attime while
    refusing it as of now, and a bundle exported afterwards passes verify-bundle."""
    cli.ok("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    now = dt.datetime.now(dt.UTC)
    expiry = now + dt.timedelta(seconds=5)
    short = make_tsa(now - dt.timedelta(hours=1), expiry)
    cli.authorities(short.authority())
    cli.ok("ledger", "timestamp")  # well within the certificate's last seconds
    note, reply, gen_time = _write_token(tmp_path, cli)
    deadline = time.monotonic() + 30
    while dt.datetime.now(dt.UTC) <= expiry + dt.timedelta(seconds=1):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    info = verify_token(reply.read_bytes(), note.read_bytes(),
                        ca_pem=short.ca.cert.read_bytes())
    assert info.tsa_subject == "CN=Short-lived TSA"
    expired = openssl_verifies("ts", "-verify", "-data", str(note), "-in", str(reply),
                               "-CAfile", str(short.ca.cert), cwd=tmp_path)
    assert expired.returncode == 1
    assert "certificate has expired" in expired.stderr
    at_gen_time = openssl_verifies("ts", "-verify", "-data", str(note), "-in", str(reply),
                                   "-CAfile", str(short.ca.cert), "-attime",
                                   str(epoch(gen_time)), cwd=tmp_path)
    assert at_gen_time.returncode == 0, at_gen_time.stderr
    cli.ok("export", "--case", "Case 7", "--out", str(tmp_path / "late.zip"))
    out = cli.ok("verify-bundle", str(tmp_path / "late.zip"), "--tsa-ca", str(short.ca.cert))
    assert "ok    timestamp 1 (" in out
    assert "certificates valid at that time" in out


def test_a_token_signed_after_the_tsa_certificate_expired_is_refused(
    cli: Cli, make_tsa: Any, fixture_site: FixtureSite
) -> None:
    """A TSA whose certificate had expired before genTime: the reply does not verify, no
    token is kept, and `ledger timestamp` names the reason."""
    now = dt.datetime.now(dt.UTC)
    stale = make_tsa(now - dt.timedelta(days=2), now - dt.timedelta(days=1))
    cli.authorities(stale.authority())
    cli.ok("capture", fixture_site.url("/page.html"))
    assert _newest(cli)[1] == []
    code, out, _ = cli("ledger", "timestamp")
    assert code == 1
    assert "TSA certificate: certificate has expired" in out


def test_a_reply_from_a_tsa_of_another_ca_is_not_kept(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """The configured CA is not the one that issued the TSA's certificate: no token."""
    from export_helpers import LocalCa

    other = LocalCa.create(tmp_path / "other-ca", name="Someone else's root")
    cli.authorities({"url": tsa.url, "ca_file": str(other.cert)})
    cli.ok("capture", fixture_site.url("/page.html"))
    assert _newest(cli)[1] == []
    code, out, _ = cli("ledger", "timestamp")
    assert code == 1
    assert "TSA certificate: unable to get local issuer certificate" in out


def test_verify_token_names_what_is_wrong(cli: Cli, tsa: LocalTsa, tmp_path: Path,
                                          fixture_site: FixtureSite) -> None:
    """Other bytes, a flipped byte in the signature, garbage: each refused by name."""
    cli.authorities(tsa.authority())
    cli.ok("capture", fixture_site.url("/page.html"))
    note, reply, _ = _write_token(tmp_path, cli)
    ca = tsa.ca.cert.read_bytes()
    token = reply.read_bytes()
    with pytest.raises(VerificationError, match="stamps other bytes than these"):
        verify_token(token, b"another note", ca_pem=ca)
    damaged = bytearray(token)
    damaged[-10] ^= 0x01
    with pytest.raises(VerificationError, match="token does not verify: signature failure"):
        verify_token(bytes(damaged), note.read_bytes(), ca_pem=ca)
    with pytest.raises(VerificationError, match="not an RFC 3161 timestamp reply"):
        verify_token(b"not a token", note.read_bytes(), ca_pem=ca)


def test_ledger_timestamp_without_a_tsa_is_a_configuration_error(cli: Cli) -> None:
    """No TSA configured: `ledger timestamp` exits 2 and says what to set."""
    code, _, err = cli("ledger", "timestamp")
    assert code == 2
    assert "no Time-Stamping Authority is configured" in err
    assert err.count("\n") == 1


def test_ledger_verify_rechecks_every_token_and_names_a_tampered_one(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite
) -> None:
    """`archiver ledger verify` re-verifies each stored token over its checkpoint; a token
    whose bytes were changed behind the archive's back (triggers dropped) is named."""
    cli.authorities(tsa.authority())
    cli.ok("capture", fixture_site.url("/page.html"))
    report = cli.json("ledger", "verify")
    assert report["timestamp_tokens"] == 1
    with cli.archive() as archive:
        (token,) = archive.timestamper.log.for_checkpoint(_newest(cli)[0].id)
        with archive.engine.begin() as conn:
            if archive.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER timestamp_tokens_refuse_update")
            else:
                conn.exec_driver_sql(
                    "DROP TRIGGER timestamp_tokens_refuse_change ON timestamp_tokens")
            damaged = bytearray(token.response)
            damaged[-40] ^= 0x01
            conn.execute(sa.text("UPDATE timestamp_tokens SET response = :r WHERE id = :i"),
                         {"r": bytes(damaged), "i": token.id})
    code, out, _ = cli("ledger", "verify")
    assert code == 1
    assert out.startswith(f"FAIL  timestamp token #{token.id} (checkpoint "
                          f"#{token.checkpoint_id}, {tsa.url}) does not verify")

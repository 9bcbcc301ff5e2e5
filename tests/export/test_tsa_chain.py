"""TSAs that send their certificate chain (issue 14, item 1): OpenSSL writes the
``certificates`` SET signer first, chain after, not in DER order; rfc3161-client alone
refuses such replies (InvalidSetOrdering), the archive accepts them and keeps the reply
byte for byte as the TSA sent it. Real ``openssl ts -reply`` servers on 127.0.0.1;
``openssl ts -verify`` judges the stored token. And ``archiver status`` warns when a TSA
has left checkpoints without trusted time for more than a day."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import rfc3161_client
from export_helpers import Cli, LocalCa, LocalTsa, openssl_verifies, run, unzip
from fixture_site import FixtureSite

from archiver.timestamp_status import status_lines, timestamp_status
from chain_of_custody.bundle.layout import token_paths
from chain_of_custody.errors import VerificationError
from chain_of_custody.timestamp import canonical_reply, verify_token


@dataclass
class ChainTsa(LocalTsa):
    """A local TSA that includes its CA in replies: ``chain="option"`` passes
    ``-chain ca.pem`` to ``openssl ts -reply``, ``chain="config"`` has a ``certs =`` line
    in its configuration, ``chain="none"`` neither. Every reply sent is kept in ``sent``."""

    chain: str = "none"
    sent: list[bytes] = field(default_factory=list)

    def reply(self, query: bytes) -> bytes:
        with self._lock:
            name = uuid.uuid4().hex
            query_file = self.directory / f"{name}.tsq"
            reply_file = self.directory / f"{name}.tsr"
            query_file.write_bytes(query)
            extra = ["-chain", str(self.ca.cert)] if self.chain == "option" else []
            run("openssl", "ts", "-reply", "-config", str(self.directory / "tsa.cnf"),
                "-queryfile", str(query_file), "-out", str(reply_file), *extra)
            reply = reply_file.read_bytes()
            self.sent.append(reply)
            return reply


@pytest.fixture(params=["none", "option", "config"])
def chain_tsa(request: pytest.FixtureRequest, test_ca: LocalCa,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainTsa]:
    directory = tmp_path_factory.mktemp(f"tsa-chain-{request.param}")
    test_ca.issue_tsa_with_openssl(directory, name="Chain-sending TSA")
    if request.param == "config":
        config = directory / "tsa.cnf"
        text = config.read_text()
        config.write_text(text.replace("signer_key =", f"certs = {test_ca.cert}\nsigner_key =",
                                       1))
    server = ChainTsa(directory, test_ca, chain=request.param)
    server.start()
    yield server
    server.stop()


def test_a_tsa_with_or_without_its_chain_is_accepted_and_its_reply_kept_verbatim(
    cli: Cli, chain_tsa: ChainTsa, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """Without the chain, with ``-chain ca.pem``, with ``certs =``: the checkpoint is
    stamped; the stored token is the exact reply the TSA sent (certificates still out of
    DER order); `openssl ts -verify`, `ledger verify` and `verify-bundle` of an export
    all accept it."""
    cli.authorities(chain_tsa.authority())
    cli.ok("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    with cli.archive() as archive:
        checkpoint = archive.ledger.latest_checkpoint()
        assert checkpoint is not None
        (token,) = archive.timestamps(checkpoint)
    assert token.response in chain_tsa.sent  # the TSA's bytes, not a re-encoding
    if chain_tsa.chain == "none":
        parsed = rfc3161_client.decode_timestamp_response(token.response)
        assert len(list(parsed.signed_data.certificates)) == 1
    else:  # the case in point: the library alone refuses what the TSA sent
        with pytest.raises(ValueError, match="InvalidSetOrdering"):
            rfc3161_client.decode_timestamp_response(token.response)
        fixed = canonical_reply(token.response)
        assert fixed != token.response
        assert len(fixed) == len(token.response)
        parsed = rfc3161_client.decode_timestamp_response(fixed)
        assert len(list(parsed.signed_data.certificates)) == 2
    note = tmp_path / "checkpoint.note"
    note.write_text(checkpoint.note)
    reply = tmp_path / "token.tsr"
    reply.write_bytes(token.response)
    done = openssl_verifies("ts", "-verify", "-data", str(note), "-in", str(reply),
                            "-CAfile", str(chain_tsa.ca.cert), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Verification: OK" in done.stdout
    info = verify_token(token.response, note.read_bytes(),
                        ca_pem=chain_tsa.ca.cert.read_bytes())
    assert info.tsa_subject == "CN=Chain-sending TSA"
    report = cli.json("ledger", "verify")
    assert report["timestamp_tokens"] == 1
    bundle = tmp_path / "case7.zip"
    cli.ok("export", "--case", "Case 7", "--out", str(bundle))
    out = cli.ok("verify-bundle", str(bundle), "--tsa-ca", str(chain_tsa.ca.cert))
    assert "ok    timestamp 1 (" in out
    bag = unzip(bundle, tmp_path / "unzipped")
    assert (bag / token_paths(1)[0]).read_bytes() in chain_tsa.sent  # exported verbatim too


def _reply_with_chain(tsa: LocalTsa, tmp_path: Path) -> tuple[bytes, bytes]:
    """(a reply with ``-chain``, the data it stamps), from openssl directly."""
    data = tmp_path / "data"
    data.write_bytes(b"some bytes to stamp\n")
    run("openssl", "ts", "-query", "-data", str(data), "-sha256", "-cert",
        "-out", str(tmp_path / "q.tsq"))
    run("openssl", "ts", "-reply", "-config", str(tsa.directory / "tsa.cnf"),
        "-queryfile", str(tmp_path / "q.tsq"), "-chain", str(tsa.ca.cert),
        "-out", str(tmp_path / "r.tsr"))
    return (tmp_path / "r.tsr").read_bytes(), data.read_bytes()


def test_a_damaged_reply_is_refused_naming_the_cause_never_with_a_traceback(
    tsa: LocalTsa, tmp_path: Path
) -> None:
    """Every truncation of a chain-carrying reply, bytes after its end, garbage and an
    indefinite (BER) length: a VerificationError saying what is wrong, never another
    exception, never "cannot parse it"."""
    raw, data = _reply_with_chain(tsa, tmp_path)
    ca = tsa.ca.cert.read_bytes()
    assert verify_token(raw, data, ca_pem=ca).tsa_subject == "CN=Test TSA"
    for end in range(len(raw)):
        with pytest.raises(VerificationError, match="not an RFC 3161 timestamp reply: "):
            verify_token(raw[:end], data, ca_pem=ca)
    with pytest.raises(VerificationError, match=r"reply: it is truncated \(\d+ bytes missing"):
        verify_token(raw[:-1], data, ca_pem=ca)
    with pytest.raises(VerificationError, match="reply: bytes follow the end of the reply"):
        verify_token(raw + b"\x00", data, ca_pem=ca)
    with pytest.raises(VerificationError, match=r"reply: it is not DER \(a TimeStampResp "):
        verify_token(b"<html>busy</html>", data, ca_pem=ca)
    with pytest.raises(VerificationError, match=r"reply: malformed DER \(InvalidLength\)"):
        verify_token(b"\x30\x80" + raw[4:], data, ca_pem=ca)


def test_a_crafted_certificates_set_costs_bounded_work(tsa: LocalTsa, tmp_path: Path) -> None:
    """A reply whose certificates SET holds 300,000 tiny members in reverse order is
    sorted (linear walk plus one sort) and then refused by name, quickly."""
    raw, data = _reply_with_chain(tsa, tmp_path)
    members = b"".join(bytes([0x04, 0x01, i % 256]) for i in range(300_000, 0, -1))
    body = b"\x02\x01\x03" + b"\x31\x00" + b"\x30\x00" + _tlv(0xA0, members)
    content_info = _tlv(0x30, b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"
                        + _tlv(0xA0, _tlv(0x30, body)))
    crafted = _tlv(0x30, b"\x30\x03\x02\x01\x00" + content_info)
    started = time.monotonic()
    fixed = canonical_reply(crafted)
    assert fixed != crafted
    assert len(fixed) == len(crafted)
    with pytest.raises(VerificationError, match="not an RFC 3161 timestamp reply: "):
        verify_token(crafted, data, ca_pem=tsa.ca.cert.read_bytes())
    assert time.monotonic() - started < 10
    assert raw  # the real reply is the template this mimics


def _tlv(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + value


def test_status_warns_when_a_tsa_left_checkpoints_without_a_token_for_a_day(
    cli: Cli, tsa: LocalTsa, closed_port_url: str, fixture_site: FixtureSite
) -> None:
    """One TSA stamps, one is down. Now: no warning (the failure is fresh). Two days
    later (injected clock): a loud warning naming the silent TSA, none for the other."""
    cli.authorities(tsa.authority("/status"),
                    {"url": closed_port_url, "ca_file": str(tsa.ca.cert)})
    cli.ok("capture", fixture_site.url("/page.html"))
    text = cli.ok("status")
    assert "timestamps: 2 TSA(s)" in text
    assert f"  {closed_port_url}: no token yet" in text
    assert "WARNING: NO TRUSTED TIME" not in text
    report = cli.json("status")["timestamps"]
    good, down = report["authorities"]
    assert good["overdue"] is False
    assert good["last_token"] is not None
    assert down["overdue"] is False
    assert down["unstamped_since"] is not None
    with cli.archive() as archive:
        later = timestamp_status(archive.engine, archive.settings.timestamp,
                                 archive.clock() + timedelta(days=2))
    good, down = later["authorities"]
    assert (good["overdue"], down["overdue"]) == (False, True)
    warnings = [line for line in status_lines(later) if "WARNING" in line]
    assert warnings == [
        f"  WARNING: NO TRUSTED TIME from {closed_port_url} for more than 24h: checkpoints "
        f"since {down['unstamped_since']} have no token from it; run 'archiver ledger "
        "timestamp' to see why"]


def test_status_says_when_no_tsa_is_configured(cli: Cli) -> None:
    assert "timestamps: no TSA configured (checkpoints get no trusted time)" in cli.ok(
        "status")


def test_the_status_modules_table_names_are_the_ledgers() -> None:
    """archiver.timestamp_status names the tables it reads without importing their
    (heavy) modules: the names and columns must be theirs."""
    from archiver import timestamp_status as light
    from chain_of_custody.ledger import checkpoints_table
    from chain_of_custody.timestamp import tokens_table

    for mirror, table in ((light.tokens_table, tokens_table),
                          (light.checkpoints_table, checkpoints_table)):
        assert mirror.name == table.name
        assert set(mirror.c.keys()) <= set(table.c.keys())

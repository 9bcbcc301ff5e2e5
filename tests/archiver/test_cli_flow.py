"""The whole flow through the ``archiver`` command, on SQLite and on PostgreSQL:
init, capture, show, list, get, verify, ledger, and the tampering each check must catch.

Captures come from the local fixture site; the judges are openssl, warcio and the
RFC 9162 arithmetic written out here independently of the ledger code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from archive_cli import Cli, archive_environment
from fixture_site import FixtureSite
from warc_judges import read_records, warcio_check

from archiver.archive import Archive
from archiver.settings import load_settings
from chain_of_custody.keys import SigningKey
from chain_of_custody.manifest import sign_manifest


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    """An uninitialised archive in a fresh directory and database."""
    home = tmp_path / "archive"
    # the browser view has its own end-to-end tests (tests/browser); Chromium would cost
    # seconds per capture here
    archive_environment(monkeypatch, home, database_url, {"ARCHIVER_BROWSER__ENABLED": "false"})
    return Cli(home, capsys)


@pytest.fixture
def ready(cli: Cli) -> Cli:
    """An initialised archive."""
    cli.ok("init")
    return cli


@pytest.fixture
def captured(ready: Cli, fixture_site: FixtureSite) -> Iterator[tuple[Cli, dict[str, object]]]:
    """An archive holding one completed capture of the fixture page."""
    (capture,) = ready.json_lines("capture", fixture_site.url("/page.html"), "--case",
                                  "Case 7", "--note", "from the field team")
    assert capture["status"] == "completed", capture
    return ready, capture


def _artifact(capture: dict[str, object], name: str) -> dict[str, object]:
    artifacts = capture["artifacts"]
    assert isinstance(artifacts, list)
    for artifact in artifacts:
        if artifact["name"] == name:
            return dict(artifact)
    raise AssertionError(f"no artifact {name} in {artifacts}")


# -- init and the archive's state --------------------------------------------------------


def test_commands_before_init_say_what_to_do(cli: Cli) -> None:
    """Every command on an uninitialised archive exits 3 naming 'archiver init'."""
    for argv in (("list",), ("capture", "http://127.0.0.1/"), ("ledger", "verify")):
        code, out, err = cli(*argv)
        assert code == 3, argv
        assert "run 'archiver init'" in err
        assert err.count("\n") == 1
        assert out == ""


def test_init_creates_an_encrypted_key_and_is_harmless_twice(cli: Cli) -> None:
    """init makes the key (encrypted, 0600) and one key.created entry; again: no change."""
    first = cli.json_lines("init")[0]
    assert first["created_key"] is True
    key_file = cli.home / "keys" / "signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    second = cli.json_lines("init")[0]
    assert second["created_key"] is False
    assert second["key_id"] == first["key_id"]
    with cli.archive() as archive:
        entries = list(archive.ledger.entries())
    assert [e.action for e in entries] == ["key.created"]
    assert entries[0].payload["key_id"] == first["key_id"]
    assert entries[0].actor == "analyst@test.example"


def test_wrong_passphrase_is_one_clear_line_and_records_nothing(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, fixture_site: FixtureSite
) -> None:
    """A wrong passphrase stops the capture before any fetch or ledger entry."""
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "not the passphrase")
    code, _out, err = ready("capture", fixture_site.url("/page.html"))
    assert code == 1
    assert "wrong passphrase" in err
    assert err.count("\n") == 1
    with ready.archive() as archive:
        assert archive.ledger.size() == 1  # key.created only


# -- capture ------------------------------------------------------------------------------


def test_capture_output_names_every_artifact(ready: Cli, fixture_site: FixtureSite) -> None:
    """Human output: id, status, final URL, HTTP status, manifest digest, artifacts."""
    out = ready.ok("capture", fixture_site.url("/redirect/301"))
    assert " completed" in out.splitlines()[0]
    assert f"final url:    {fixture_site.url('/redirect/final')}" in out
    assert "http status:  200" in out
    assert "manifest:     sha256:" in out
    for name, role in (("capture.warc.gz", "warc"), ("provenance.json", "provenance"),
                       ("manifest.json", "manifest"), ("manifest.sig", "signature")):
        assert any(line.split()[:2] == [name, role] for line in out.splitlines()), name


def test_capture_json_is_one_object_per_url(ready: Cli, fixture_site: FixtureSite) -> None:
    """--json prints one line per URL, in order, with the capture's fields."""
    urls = [fixture_site.url("/page.html"), fixture_site.url("/gone-410")]
    lines = ready.json_lines("capture", *urls)
    assert [line["url"] for line in lines] == urls
    assert [line["http_status"] for line in lines] == [200, 410]
    assert all(line["status"] == "completed" for line in lines)
    assert lines[0]["id"] != lines[1]["id"]


def test_a_capture_can_be_verified_by_hand_with_openssl_and_warcio(
    captured: tuple[Cli, dict[str, object]], fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """The README's manual check: openssl verifies the signature over manifest.json, the
    files' digests are the manifest's, and the WARC holds the page exactly as served."""
    cli, capture = captured
    work = tmp_path / "by-hand"
    work.mkdir()
    for name in ("manifest.json", "manifest.sig", "capture.warc.gz", "provenance.json"):
        cli.ok("get", str(capture["id"]), name, "-o", str(work / name))
    key_pem = cli.ok("key", "show")
    (work / "archive-key.pem").write_text(key_pem)
    done = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "archive-key.pem", "-rawin",
         "-in", "manifest.json", "-sigfile", "manifest.sig"],
        cwd=work, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Signature Verified Successfully" in done.stdout
    manifest = json.loads((work / "manifest.json").read_bytes())
    assert hashlib.sha256((work / "manifest.json").read_bytes()).hexdigest() == capture[
        "manifest_sha256"]
    for entry in manifest["artifacts"]:
        if not (work / entry["name"]).exists():  # the media fetcher's files, among others
            cli.ok("get", str(capture["id"]), entry["name"], "-o", str(work / entry["name"]))
        data = (work / entry["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert hashlib.sha512(data).hexdigest() == entry["sha512"]
        assert len(data) == entry["size"]
    assert manifest["requested"]["case"] == "Case 7"
    assert manifest["target"]["http_status"] == 200
    assert manifest["target"]["peer_ip"] == "127.0.0.1"
    check = warcio_check(work / "capture.warc.gz")
    assert check.returncode == 0, check.stdout + check.stderr
    records = read_records(work / "capture.warc.gz")
    assert records[0].header("WARC-Type") == "warcinfo"
    page = [r for r in records if r.header("WARC-Type") == "response"
            and r.header("WARC-Target-URI") == fixture_site.url("/page.html")]
    assert len(page) == 1
    assert page[0].block == fixture_site.response("/page.html")
    provenance = json.loads((work / "provenance.json").read_bytes())
    assert provenance["network"]["peer_ip"] == "127.0.0.1"


def test_refused_capture_is_recorded_and_exits_non_zero(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, fixture_site: FixtureSite
) -> None:
    """With the SSRF guard on, 127.0.0.1 is refused: one clear line, capture.failed."""
    monkeypatch.setenv("ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS", "false")
    code, out, err = ready("capture", "--json", fixture_site.url("/page.html"))
    assert code == 1
    (line,) = [json.loads(x) for x in out.splitlines()]
    assert line["status"] == "failed"
    assert line["reason"] == "refused"
    assert "127.0.0.1 is a loopback address" in str(line["message"])
    with ready.archive() as archive:
        (failed,) = archive.ledger.entries(actions=["capture.failed"])
    assert failed.subject == f"capture:{line['id']}"
    assert failed.payload["reason"] == "refused"
    code, out, err = ready("capture", fixture_site.url("/page.html"))
    assert code == 1
    assert "reason:       refused: refusing to fetch" in out
    assert err == "archiver: error: some captures failed (see above)\n"


def test_show_list_and_get_are_recorded_as_access_events(
    captured: tuple[Cli, dict[str, object]], tmp_path: Path
) -> None:
    """show → access.viewed, get → access.downloaded; list filters by case."""
    cli, capture = captured
    capture_id = str(capture["id"])
    shown = cli.json_lines("show", capture_id[:8])[0]
    assert shown["id"] == capture_id
    assert shown["note"] == "from the field team"
    cli.ok("get", capture_id, "capture.warc.gz", "-o", str(tmp_path / "w.warc.gz"))
    assert [c["id"] for c in cli.json_lines("list", "--case", "Case 7")] == [capture_id]
    assert cli.json_lines("list", "--case", "Other") == []
    with cli.archive() as archive:
        events = [(e.action, e.payload.get("artifact"))
                  for e in archive.ledger.entries(subject=f"capture:{capture_id}")]
    assert events == [("capture.requested", None), ("capture.completed", None),
                      ("access.viewed", None), ("access.downloaded", "capture.warc.gz")]


def test_get_and_show_report_unknown_ids_and_artifacts(
    captured: tuple[Cli, dict[str, object]], tmp_path: Path
) -> None:
    """Unknown capture or artifact: exit 4, one line naming what exists."""
    cli, capture = captured
    code, _, err = cli("show", "ffffffff")
    assert code == 4
    assert "no capture with id 'ffffffff'" in err
    code, _, err = cli("get", str(capture["id"]), "nope.bin", "-o", str(tmp_path / "x"))
    assert code == 4
    assert "has no artifact 'nope.bin'" in err
    assert "capture.warc.gz" in err
    assert not (tmp_path / "x").exists()


# -- verification and tampering ----------------------------------------------------------


def test_verify_passes_on_an_untouched_capture(
    captured: tuple[Cli, dict[str, object]]
) -> None:
    """verify re-hashes every copy and checks signature and ledger inclusion."""
    cli, capture = captured
    out = cli.ok("verify", str(capture["id"]))
    assert "included in signed checkpoint" in out
    assert out.rstrip().endswith("verified")


def _damage(path: Path, how: str) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) - 100]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("name", "how"), [("capture.warc.gz", "flip"),
                                           ("capture.warc.gz", "truncate"),
                                           ("provenance.json", "flip")])
def test_a_damaged_blob_is_named_by_verify(
    captured: tuple[Cli, dict[str, object]], name: str, how: str
) -> None:
    """One byte changed (or a WARC cut short) in the store: verify names the artifact."""
    cli, capture = captured
    _damage(cli.blob_path(str(_artifact(capture, name)["sha256"])), how)
    code, out, _ = cli("verify", str(capture["id"]))
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 1
    assert f"artifact {name} in local:" in failures[0]
    assert "is altered" in failures[0]
    if how == "truncate":
        assert "size, sha256, sha512 differ" in failures[0]
    assert out.rstrip().endswith("FAILED verification")


def test_a_damaged_manifest_is_caught(captured: tuple[Cli, dict[str, object]]) -> None:
    """A changed byte in the stored manifest fails its digest check before any parsing."""
    cli, capture = captured
    _damage(cli.blob_path(str(capture["manifest_sha256"])), "flip")
    code, out, _ = cli("verify", str(capture["id"]))
    assert code == 1
    assert "manifest.json: stored copy does not match sha256" in out


def test_a_manifest_resigned_with_another_key_is_refused(
    captured: tuple[Cli, dict[str, object]]
) -> None:
    """An attacker stores an altered manifest signed by their own key and points the
    capture's database rows at it: verify refuses it (the ledger still names the
    original manifest, and the forger's key is not in the key history)."""
    cli, capture = captured
    manifest = json.loads(cli.blob_path(str(capture["manifest_sha256"])).read_bytes())
    manifest["target"]["http_status"] = 404
    forger = SigningKey.generate()
    manifest["signer"]["key_id"] = forger.key_id
    forged = sign_manifest(manifest, forger)
    with cli.archive() as archive:
        store = archive.store
        for data in (forged.canonical, forged.signature):
            path = cli.home / "forged.bin"
            path.write_bytes(data)
            store.put_file(path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            path.unlink()
        with archive.engine.begin() as conn:
            conn.execute(sa.text("UPDATE captures SET manifest_sha256 = :m WHERE id = :i"),
                         {"m": forged.digest.sha256, "i": capture["id"]})
            conn.execute(sa.text("UPDATE artifacts SET sha256 = :s WHERE capture_id = :i "
                                 "AND name = 'manifest.sig'"),
                         {"s": hashlib.sha256(forged.signature).hexdigest(),
                          "i": capture["id"]})
    code, out, _ = cli("verify", str(capture["id"]))
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any("does not record this capture's manifest" in line for line in failures)
    assert any(f"manifest signed by unknown key {forger.key_id}" in line for line in failures)


# -- the ledger commands -----------------------------------------------------------------


def _fold(leaf_hash: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2, written out again here as an independent judge."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def test_ledger_proof_folds_to_the_signed_checkpoint(
    captured: tuple[Cli, dict[str, object]], tmp_path: Path
) -> None:
    """`ledger proof SEQ --json` gives a leaf and path that fold, by hand, to the root in
    the signed note, whose signature openssl accepts."""
    cli, capture = captured
    with cli.archive() as archive:
        (completed,) = archive.ledger.entries(actions=["capture.completed"])
    proof = cli.json_lines("ledger", "proof", str(completed.seq))[0]
    leaf = str(proof["leaf"]).encode()
    assert json.loads(leaf)["payload"]["manifest_sha256"] == capture["manifest_sha256"]
    leaf_hash = hashlib.sha256(b"\x00" + leaf).digest()
    path = [bytes.fromhex(h) for h in proof["inclusion_proof"]]  # type: ignore[union-attr]
    root = _fold(leaf_hash, completed.seq, int(proof["tree_size"]), path)  # type: ignore[arg-type]
    note = str(proof["checkpoint"])
    text, _, signature_line = note.partition("\n\n")
    _origin, size, root_b64 = text.split("\n")
    assert int(size) == proof["tree_size"]
    assert base64.b64decode(root_b64) == root
    (tmp_path / "note.txt").write_text(text + "\n")
    (tmp_path / "note.sig").write_bytes(base64.b64decode(signature_line.split()[2])[4:])
    (tmp_path / "key.pem").write_text(cli.ok("key", "show"))
    done = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
         "-in", "note.txt", "-sigfile", "note.sig"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_ledger_verify_and_checkpoint(captured: tuple[Cli, dict[str, object]]) -> None:
    """verify passes; a new view is unsigned until `ledger checkpoint` signs it."""
    cli, capture = captured
    report = cli.json_lines("ledger", "verify")[0]
    assert report["ok"] is True
    assert report["unsigned_entries"] == 0
    cli.ok("show", str(capture["id"]))
    report = cli.json_lines("ledger", "verify")[0]
    assert report["unsigned_entries"] == 1
    note = cli.ok("ledger", "checkpoint")
    assert note.split("\n")[1] == str(report["entries"])
    assert cli.json_lines("ledger", "verify")[0]["unsigned_entries"] == 0


def _drop_ledger_triggers(archive: Archive) -> None:
    with archive.engine.begin() as conn:
        for table in ("ledger_entries", "ledger_nodes", "ledger_checkpoints"):
            if archive.engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_update")
                conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_delete")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {table}_refuse_change ON {table}")


@pytest.mark.parametrize("attack", ["edit", "delete"])
def test_ledger_verify_names_a_row_changed_behind_the_archives_back(
    captured: tuple[Cli, dict[str, object]], attack: str
) -> None:
    """With the triggers dropped, an edited or deleted row makes `ledger verify` exit 1
    naming the entry; `verify ID` then fails too."""
    cli, capture = captured
    with cli.archive() as archive:
        (completed,) = archive.ledger.entries(actions=["capture.completed"])
        _drop_ledger_triggers(archive)
        with archive.engine.begin() as conn:
            if attack == "edit":
                conn.execute(sa.text("UPDATE ledger_entries SET actor = 'someone else' "
                                     "WHERE seq = :s"), {"s": completed.seq})
            else:
                conn.execute(sa.text("DELETE FROM ledger_entries WHERE seq = :s"),
                             {"s": completed.seq})
    code, out, _ = cli("ledger", "verify")
    assert code == 1
    if attack == "edit":
        assert out.startswith(f"FAIL  entry {completed.seq} (capture.completed ")
        assert "was altered" in out
    else:  # the newest entry removed: the checkpoint that covered it names the gap
        assert out.startswith(f"FAIL  entries from {completed.seq} on are missing")
    code, out, _ = cli("ledger", "verify", "--json")
    assert code == 1
    assert json.loads(out)["seq"] == completed.seq
    code, out, _ = cli("verify", str(capture["id"]))
    assert code == 1


def test_the_key_history_comes_from_the_ledger_not_the_table(
    captured: tuple[Cli, dict[str, object]]
) -> None:
    """Swapping the public key in the mutable signing_keys table changes nothing that
    verification trusts."""
    cli, capture = captured
    with cli.archive() as archive, archive.engine.begin() as conn:
        other = SigningKey.generate().public.pem().decode()
        conn.execute(sa.text("UPDATE signing_keys SET public_pem = :p"), {"p": other})
    assert cli("verify", str(capture["id"]))[0] == 0
    assert cli("ledger", "verify")[0] == 0


# -- the real console script ---------------------------------------------------------------


def test_the_console_script_prints_no_traceback_for_expected_errors(
    database_url: str, tmp_path: Path, fixture_site: FixtureSite
) -> None:
    """The installed `archiver` command: exit codes and one-line messages, no traceback."""
    script = Path(sys.executable).with_name("archiver")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARCHIVER_")}
    env.update({"ARCHIVER_HOME": str(tmp_path / "a"), "ARCHIVER_SIGNING__PASSPHRASE": "pp"})
    if not database_url.startswith("sqlite"):
        env["ARCHIVER_DATABASE__URL"] = database_url

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *argv], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    done = run("list")
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("archiver: error: ")
    assert run("init").returncode == 0
    done = run("capture", fixture_site.url("/page.html"))  # guard on: refused
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "refused" in done.stdout
    env["ARCHIVER_CAPTUER__TIMEOUT"] = "5"
    done = run("list")
    assert done.returncode == 2
    assert done.stderr == ("archiver: error: unknown setting in environment variable "
                           "ARCHIVER_CAPTUER__TIMEOUT\n")


# -- several stores: local and S3 (moto) ---------------------------------------------------


@pytest.fixture
def two_stores(ready: Cli, monkeypatch: pytest.MonkeyPatch, aws_env: None,
               moto_endpoint: str) -> tuple[Cli, str]:
    """The archive writing to its local store and to an Object Lock bucket on moto."""
    import boto3

    bucket = f"evidence-{os.urandom(6).hex()}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    stores = [{"kind": "local"},
              {"kind": "s3", "bucket": bucket, "prefix": "archive/", "region": "us-east-1",
               "endpoint_url": moto_endpoint, "object_lock_days": 1}]
    monkeypatch.setenv("ARCHIVER_STORAGE__STORES", json.dumps(stores))
    return ready, bucket


def test_a_capture_is_stored_on_every_store_and_verified_in_each(
    two_stores: tuple[Cli, str], fixture_site: FixtureSite, moto_endpoint: str
) -> None:
    """Every artifact lands in both stores (S3 under Object Lock); verify checks each
    copy, and a copy altered in S3 alone is named with its store."""
    import boto3

    cli, bucket = two_stores
    (capture,) = cli.json_lines("capture", fixture_site.url("/page.html"))
    assert capture["status"] == "completed"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    warc = _artifact(capture, "capture.warc.gz")
    key = f"archive/sha256/{warc['sha256']}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ContentLength"] == warc["size"]
    out = cli.ok("verify", str(capture["id"]))
    assert f"capture.warc.gz in s3://{bucket}/archive/" in out
    assert "capture.warc.gz in local:" in out
    # Object Lock keeps the original version; a newer version with other bytes is what
    # a plain GET now returns, and what verify must refuse.
    client.put_object(Bucket=bucket, Key=key, Body=b"not the evidence")
    code, out, _ = cli("verify", str(capture["id"]))
    assert code == 1
    (failure,) = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert f"artifact capture.warc.gz in s3://{bucket}/archive/ is altered" in failure


def test_an_unreachable_store_fails_the_capture_and_records_why(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, aws_env: None, fixture_site: FixtureSite
) -> None:
    """When one configured store cannot take the blobs, the capture is recorded as
    failed (reason storage) and no completed capture references anything."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        stores = [{"kind": "local"},
                  {"kind": "s3", "bucket": "evidence", "endpoint_url": endpoint,
                   "region": "us-east-1"}]
        monkeypatch.setenv("ARCHIVER_STORAGE__STORES", json.dumps(stores))
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        code, out, _ = ready("capture", "--json", fixture_site.url("/page.html"))
    assert code == 1
    line = json.loads(out)
    assert line["status"] == "failed"
    assert line["reason"] == "storage"
    assert "s3://evidence" in str(line["message"])
    assert line["artifacts"] == []
    with ready.archive() as archive:
        assert [e.action for e in archive.ledger.entries()][-2:] == [
            "capture.requested", "capture.failed"]


def test_the_guard_holds_for_every_fetcher_of_an_archive_capture(
    ready: Cli, monkeypatch: pytest.MonkeyPatch, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """Through Archive.capture with the guard on (127.0.0.1 counted as public for the
    fixture site): the page's image on 127.0.0.2 is refused, noted, and never fetched."""
    import ipaddress

    from archiver.recorder.addresses import IPAddress, non_global_reason

    def only_127_0_0_1(address: IPAddress) -> str | None:
        if address == ipaddress.IPv4Address("127.0.0.1"):
            return None
        return non_global_reason(address)

    monkeypatch.setenv("ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS", "false")
    with Archive.open(load_settings(), address_policy=only_127_0_0_1) as archive:
        capture = archive.capture(fixture_site.url("/page-with-private.html"))
        assert capture.status == "completed"
        out = tmp_path / "w.warc.gz"
        with out.open("wb") as handle:
            archive.export_artifact(capture.id, "capture.warc.gz", handle)
        provenance = tmp_path / "p.json"
        with provenance.open("wb") as handle:
            archive.export_artifact(capture.id, "provenance.json", handle)
    targets = {r.header("WARC-Target-URI") for r in read_records(out)}
    assert fixture_site.url("/page-with-private.html") in targets
    assert not any(t and "127.0.0.2" in t for t in targets)
    warnings = json.loads(provenance.read_bytes())["warnings"]
    assert any("127.0.0.2" in w and "loopback" in w for w in warnings)

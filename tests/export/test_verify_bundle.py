"""`archiver verify-bundle`: every check named with its result, trust anchors (a key, a TSA
CA), no archive needed, one clear line for a file that is not a bundle, and tampering of
every kind caught by the check that is about it."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_helpers import LocalCa, copy_bag, rebag, rezip

from archiver.cli import main
from chain_of_custody.bundle import SIGNED_TAG_MANIFEST, TAG_SIGNATURE_FILE
from chain_of_custody.keys import SigningKey

SCRIPT = str(Path(sys.executable).with_name("archiver"))


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["verify-bundle", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def failures(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("FAIL")]


# -- a good bundle ------------------------------------------------------------------------


def test_a_good_bundle_passes_every_named_check(
    pristine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the archive's key and the TSA's CA: exit 0, one line per check naming it, no
    warning, and a verdict."""
    code, out, _ = verify(capsys, str(pristine.bundle), "--trusted-key", str(pristine.key_pem),
                          "--tsa-ca", str(pristine.tsa_ca))
    assert code == 0, out
    lines = out.splitlines()
    assert all(line.startswith("ok  ") for line in lines[:-1]), out
    for expected in ("ZIP structure", "bagit.txt", "payload (manifest-sha256.txt)",
                     "payload (manifest-sha512.txt)", "bag-info.txt",
                     "tag files (tagmanifest-sha256.txt)", "tag files (tagmanifest-sha512.txt)",
                     "bundle signature", "signer", "bundle index", "key history", "checkpoint",
                     "ledger entries", f"capture {pristine.failed_id}", "timestamp 1 (http"):
        assert f"\nok    {expected}" in f"\n{out}", expected
    for capture_id in (pristine.page_id, pristine.media_id):
        for part in ("manifest", "case", "artifacts", "ledger", "WARC records", "replay WACZ"):
            assert f"ok    capture {capture_id}: {part}: " in out, (capture_id, part)
    assert f"ok    signer: signed by the trusted key {pristine.key_id}" in out
    assert "the signed checkpoint existed at " in out
    assert lines[-1] == f"bundle {pristine.bundle}: verified"


def test_the_trusted_key_may_be_given_by_its_key_id(
    pristine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 64-hex key id (as `archiver key show` prints it) anchors trust like the PEM;
    another key's id makes the signer check fail."""
    code, out, _ = verify(capsys, str(pristine.bundle), "--trusted-key", pristine.key_id.upper())
    assert code == 0, out
    assert f"ok    signer: signed by the trusted key {pristine.key_id}" in out
    other = SigningKey.generate().key_id
    code, out, _ = verify(capsys, str(pristine.bundle), "--trusted-key", other)
    assert code == 1
    assert failures(out) == [f"FAIL  signer: the bundle is signed by key {pristine.key_id}, "
                             f"which is not a trusted key ({other})"]


def test_without_a_trusted_key_it_says_it_checked_integrity_not_who_signed(
    pristine: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """No --trusted-key: exit 0, a warning naming the key to compare, and a verdict that
    says integrity only; no --tsa-ca: the TSA is reported as not anchored."""
    code, out, _ = verify(capsys, str(pristine.bundle))
    assert code == 0
    assert ("WARN  signer: integrity checked, but NOT who signed: no trusted key was given. "
            f"The bundle is signed by key {pristine.key_id}") in out
    assert "WARN  timestamp 1 (" in out
    assert "TSA not anchored: checked against the CA shipped in the bundle" in out
    assert out.splitlines()[-1] == (
        f"bundle {pristine.bundle}: verified (integrity only: the signer was not checked "
        "against a trusted key)")


def test_json_output_lists_every_check(pristine: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """--json: one object with ok, case, signer, timestamps and every check's status."""
    code, out, _ = verify(capsys, str(pristine.bundle), "--json", "--trusted-key",
                          pristine.key_id)
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert report["case"] == "Case 7"
    assert report["signer_key_id"] == pristine.key_id
    assert report["signer_trusted"] is True
    assert len(report["timestamps"]) == 1
    assert {c["status"] for c in report["checks"]} == {"ok", "warn"}
    assert all(set(c) == {"name", "status", "detail"} for c in report["checks"])


def test_a_tsa_ca_the_verifier_brings_anchors_the_time(
    pristine: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--tsa-ca with the TSA's CA: no 'not anchored' warning; with another CA: the token
    check fails naming the certificate problem."""
    code, out, _ = verify(capsys, str(pristine.bundle), "--tsa-ca", str(pristine.tsa_ca))
    assert code == 0
    assert "TSA not anchored" not in out
    other = LocalCa.create(tmp_path / "other", name="Another root")
    code, out, _ = verify(capsys, str(pristine.bundle), "--tsa-ca", str(other.cert))
    assert code == 1
    (failure,) = failures(out)
    assert failure.startswith("FAIL  timestamp 1 (")
    assert ("data/custody/timestamps/1.tsr: token does not verify: TSA certificate: "
            "unable to get local issuer certificate") in failure


def test_it_runs_with_no_archive_database_or_configuration(
    pristine: Any, tmp_path: Path
) -> None:
    """The installed command, in an empty folder, with no ARCHIVER_* settings but a
    misspelt one and a missing --config (both would stop any other command): exit 0, and
    nothing is created."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARCHIVER_")}
    env.update({"HOME": str(empty), "ARCHIVER_HOEM": "/nowhere"})
    done = subprocess.run([SCRIPT, "--config", str(empty / "missing.toml"), "verify-bundle",
                           str(pristine.bundle), "--trusted-key", str(pristine.key_pem)],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == f"bundle {pristine.bundle}: verified"
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize(
    ("make", "argv", "code", "message"),
    [
        (None, (), 2, "archiver: error: {path}: no such file\n"),
        (lambda p: p.write_bytes(b"not a zip at all"), (), 1,
         "archiver: error: {path} is not a ZIP file, so not an evidence bundle\n"),
        (lambda p: p.mkdir(), (), 1,
         "archiver: error: {path} is a directory, not a bundle (.zip)\n"),
        (lambda p: p.write_bytes(b"x"), ("--trusted-key", "not-a-key"), 2,
         "archiver: error: --trusted-key 'not-a-key' is neither a 64-hex key id nor a "
         "readable PEM file\n"),
        (lambda p: p.write_bytes(b"x"), ("--tsa-ca", "/nonexistent.pem"), 2,
         "archiver: error: cannot read --tsa-ca /nonexistent.pem: No such file or directory\n"),
    ],
    ids=["missing", "not-a-zip", "directory", "bad-trusted-key", "missing-tsa-ca"],
)
def test_what_is_not_a_bundle_gets_one_clear_line_and_no_traceback(
    tmp_path: Path, make: Callable[[Path], object] | None, argv: tuple[str, ...], code: int,
    message: str,
) -> None:
    """Missing file, non-ZIP, a directory, a bad key or CA argument: one line on stderr
    (the installed command), the right exit code, never a traceback."""
    path = tmp_path / "bundle.zip"
    if make is not None:
        make(path)
    done = subprocess.run([SCRIPT, "verify-bundle", str(path), *argv], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == code
    assert done.stderr == message.format(path=path)
    assert "Traceback" not in done.stdout + done.stderr


def test_a_zip_that_is_not_a_bag_fails_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ZIP of loose files: exit 1 with the structure check failing, no traceback."""
    path = tmp_path / "loose.zip"
    with zipfile.ZipFile(path, "w") as loose:
        loose.writestr("a.txt", "a")
        loose.writestr("b.txt", "b")
    code, out, _ = verify(capsys, str(path))
    assert code == 1
    assert failures(out) == ["FAIL  ZIP structure: the ZIP must hold exactly one folder (the "
                             "bag), it holds 2 top-level entries"]


# -- tampering ----------------------------------------------------------------------------


def _gzip_members(data: bytes) -> list[bytes]:
    members = []
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        members.append(inflater.decompress(data) + inflater.flush())
        data = inflater.unused_data
    return members


def change_warc_response(path: Path) -> None:
    """Change one byte of the last response's body, recompressing record by record: a
    WARC that still reads, whose record digest no longer matches."""
    members = _gzip_members(path.read_bytes())
    index = max(i for i, m in enumerate(members) if b"WARC-Type: response" in m)
    record = bytearray(members[index])
    record[len(record) - 10] ^= 0x20
    members[index] = bytes(record)
    path.write_bytes(b"".join(gzip.compress(m, mtime=0) for m in members))


def flip(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _entry_of(bag: Path, action: str, capture_id: str) -> int:
    for path in (bag / "data" / "custody" / "entries").iterdir():
        entry = json.loads(path.read_bytes())
        if entry["action"] == action and entry["subject"] == f"capture:{capture_id}":
            return int(entry["seq"])
    raise AssertionError(f"no {action} entry of {capture_id}")


def _replace(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def tamper_warc(bag: Path, p: Any) -> None:
    change_warc_response(bag / f"data/captures/{p.page_id}/capture.warc.gz")


def tamper_media(bag: Path, p: Any) -> None:
    flip(bag / f"data/captures/{p.media_id}/seeded-clip.mp4", 100)


def tamper_manifest(bag: Path, p: Any) -> None:
    _replace(bag / f"data/captures/{p.page_id}/manifest.json", b"/page.html", b"/pagx.html")


def tamper_entry(bag: Path, p: Any) -> None:
    seq = _entry_of(bag, "capture.completed", p.page_id)
    _replace(bag / f"data/custody/entries/{seq}.json", b"service:archiver", b"service:archivex")


def tamper_proof(bag: Path, p: Any) -> None:
    seq = _entry_of(bag, "capture.completed", p.page_id)
    path = bag / f"data/custody/proofs/{seq}.json"
    proof = json.loads(path.read_bytes())
    proof["inclusion_proof"][0] = "00" * 32
    path.write_text(json.dumps(proof))


def tamper_checkpoint(bag: Path, p: Any) -> None:
    path = bag / "data/custody/checkpoint.note"
    lines = path.read_text().split("\n")
    lines[2] = base64.b64encode(b"\x00" * 32).decode()
    path.write_text("\n".join(lines))


def tamper_token(bag: Path, p: Any) -> None:
    flip(bag / "data/custody/timestamps/1.tsr", -10)


def add_payload_file(bag: Path, p: Any) -> None:
    (bag / f"data/captures/{p.page_id}/extra.bin").write_bytes(b"planted")


def remove_payload_file(bag: Path, p: Any) -> None:
    (bag / f"data/captures/{p.page_id}/provenance.json").unlink()


def add_tag_file(bag: Path, p: Any) -> None:
    (bag / "NOTES.txt").write_text("planted")


def slip_in_other_case(bag: Path, p: Any) -> None:
    with zipfile.ZipFile(p.other_bundle) as other:
        root = other.namelist()[0].split("/")[0]
        index = json.loads(other.read(f"{root}/data/bundle.json"))
        for name in other.namelist():
            if name.startswith((f"{root}/data/captures/{p.other_id}/",
                                f"{root}/data/replay/{p.other_id}")):
                target = bag / name[len(root) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(other.read(name))
    ours = json.loads((bag / "data/bundle.json").read_bytes())
    ours["captures"] += [c for c in index["captures"] if c["id"] == p.other_id]
    (bag / "data/bundle.json").write_text(json.dumps(ours, indent=2))


TAMPERING = {
    # name: (change, re-bag and re-sign with the archive's key?, expected FAIL lines)
    "warc-byte": (tamper_warc, False, [
        "FAIL  payload (manifest-sha256.txt): data/captures/{page}/capture.warc.gz does not "
        "match its sha256 in manifest-sha256.txt (the file was altered)",
        "FAIL  capture {page}: artifacts: data/captures/{page}/capture.warc.gz does not match "
        "the capture's signed manifest",
        "FAIL  capture {page}: WARC records: data/captures/{page}/capture.warc.gz: response "
        "record",
    ]),
    "warc-byte-resigned": (tamper_warc, True, [
        "FAIL  capture {page}: artifacts: data/captures/{page}/capture.warc.gz does not match "
        "the capture's signed manifest",
        "FAIL  capture {page}: WARC records: data/captures/{page}/capture.warc.gz: response "
        "record",
    ]),
    "media-byte": (tamper_media, False, [
        "FAIL  payload (manifest-sha512.txt): data/captures/{media}/seeded-clip.mp4 does not "
        "match its sha512 in manifest-sha512.txt (the file was altered)",
    ]),
    "media-byte-resigned": (tamper_media, True, [
        "FAIL  capture {media}: artifacts: data/captures/{media}/seeded-clip.mp4 does not "
        "match the capture's signed manifest (sha256, sha512 differ)",
    ]),
    "manifest-resigned": (tamper_manifest, True, [
        "FAIL  capture {page}: manifest: manifest signature is not valid: signature does not "
        "verify with key",
    ]),
    "ledger-entry-resigned": (tamper_entry, True, [
        "FAIL  ledger entries: entry {completed}: (capture.completed capture:{page}) its "
        "inclusion proof leads to root",
        "FAIL  capture {page}: ledger: no capture.completed entry in this bundle records this "
        "manifest",
    ]),
    "proof-resigned": (tamper_proof, True, [
        "FAIL  ledger entries: entry {completed}: (capture.completed capture:{page}) its "
        "inclusion proof leads to root",
    ]),
    "checkpoint-resigned": (tamper_checkpoint, True, [
        "FAIL  checkpoint: data/custody/checkpoint.note: checkpoint signature by key",
        "FAIL  timestamp: cannot check timestamps without a valid checkpoint",
    ]),
    "token-resigned": (tamper_token, True, [
        "FAIL  timestamp 1 (",
        "data/custody/timestamps/1.tsr: token does not verify: signature failure",
    ]),
    "file-added": (add_payload_file, False, [
        "FAIL  payload (manifest-sha256.txt): data/captures/{page}/extra.bin is in the bag but "
        "not in manifest-sha256.txt (a payload file was added)",
        "FAIL  bag-info.txt: Payload-Oxum is",
    ]),
    "file-added-resigned": (add_payload_file, True, [
        "FAIL  capture {page}: artifacts: data/captures/{page}/extra.bin is not in the "
        "capture's signed manifest",
    ]),
    "file-removed": (remove_payload_file, False, [
        "FAIL  payload (manifest-sha256.txt): data/captures/{page}/provenance.json is listed in "
        "manifest-sha256.txt but missing from the bag (a file was removed)",
    ]),
    "file-removed-resigned": (remove_payload_file, True, [
        "FAIL  capture {page}: artifacts: data/captures/{page}/provenance.json is in the signed "
        "manifest but not in the bundle",
    ]),
    "tag-file-added": (add_tag_file, False, [
        "FAIL  tag files (tagmanifest-sha256.txt): NOTES.txt is in the bag but not in "
        "tagmanifest-sha256.txt (a tag file was added)",
    ]),
    "other-case-capture-resigned": (slip_in_other_case, True, [
        "FAIL  capture {other}: case: capture {other} belongs to case 'Other', not to this "
        "bundle's case 'Case 7'",
    ]),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_is_caught_by_the_check_it_concerns(
    name: str, pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each change (plain, or with the bag re-made and re-signed by someone holding the
    archive's key) fails exactly the checks about what was changed, naming the file."""
    change, resign, expected = TAMPERING[name]
    bag = copy_bag(pristine.bag, tmp_path)
    completed = _entry_of(bag, "capture.completed", pristine.page_id)
    change(bag, pristine)
    if resign:
        rebag(bag, pristine.key)
    bundle = rezip(bag, tmp_path / "tampered.zip")
    code, out, _ = verify(capsys, str(bundle), "--trusted-key", pristine.key_id)
    assert code == 1
    found = failures(out)
    for line in expected:
        line = line.format(page=pristine.page_id, media=pristine.media_id,
                           other=pristine.other_id, completed=completed)
        assert any(line in f for f in found), f"{line!r} not in:\n" + "\n".join(found)
    if resign:  # the bag itself was made whole again: only the deeper checks object
        assert "ok    bundle signature: " in out
        assert not any(f.startswith(("FAIL  payload", "FAIL  tag files")) for f in found), out
    assert out.splitlines()[-1].startswith(f"bundle {bundle}: FAILED verification")


def test_a_bundle_signed_by_another_key_is_refused_by_the_trusted_key(
    pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forger re-signs the whole bag with their own key and ships it as the bundle's key:
    without a trusted key the bundle is consistent (but their key is on no ledger entry);
    with the archive's key as the trusted one, the signer check fails naming both."""
    forger = SigningKey.generate()
    bag = copy_bag(pristine.bag, tmp_path)
    (bag / f"data/keys/{forger.key_id}.pem").write_bytes(forger.public.pem())
    history = json.loads((bag / "data/keys/history.json").read_bytes())
    history["keys"].append({"key_id": forger.key_id})
    (bag / "data/keys/history.json").write_text(json.dumps(history))
    index = json.loads((bag / "data/bundle.json").read_bytes())
    index["archive"]["signing_key_id"] = forger.key_id
    (bag / "data/bundle.json").write_text(json.dumps(index))
    _replace(bag / "bag-info.txt", pristine.key_id.encode(), forger.key_id.encode())
    rebag(bag, forger)
    bundle = rezip(bag, tmp_path / "forged.zip")
    code, out, _ = verify(capsys, str(bundle), "--trusted-key", str(pristine.key_pem))
    assert code == 1
    assert (f"FAIL  signer: the bundle is signed by key {forger.key_id}, which is not a "
            f"trusted key ({pristine.key_id})") in failures(out)
    assert (f"FAIL  ledger entries: key {forger.key_id} is not registered by any ledger "
            "entry in the bundle") in failures(out)
    assert f"ok    bundle signature: {SIGNED_TAG_MANIFEST} is signed by key {forger.key_id}" \
        in out


def test_a_signature_by_another_key_over_the_tag_manifest_does_not_verify(
    pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the signature file replaced (by another key's signature): the bundle
    signature check fails with the archive's key named."""
    bag = copy_bag(pristine.bag, tmp_path)
    (bag / TAG_SIGNATURE_FILE).write_bytes(
        SigningKey.generate().sign((bag / SIGNED_TAG_MANIFEST).read_bytes()))
    code, out, _ = verify(capsys, str(rezip(bag, tmp_path / "b.zip")))
    assert code == 1
    assert failures(out) == [
        f"FAIL  bundle signature: {SIGNED_TAG_MANIFEST} signature by key {pristine.key_id} "
        f"does not verify: signature does not verify with key {pristine.key_id[:16]}…"]


def test_a_damaged_zip_member_is_reported_not_raised(
    pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte flipped inside the ZIP file itself (CRC mismatch): named as damaged."""
    bundle = tmp_path / "damaged.zip"
    shutil.copy(pristine.bundle, bundle)
    with zipfile.ZipFile(bundle) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("seeded-clip.mp4"))
    flip(bundle, info.header_offset + 30 + len(info.filename.encode()) + 200)
    code, out, _ = verify(capsys, str(bundle))
    assert code == 1
    assert any(f"data/captures/{pristine.media_id}/seeded-clip.mp4 is damaged in the ZIP: "
               "Bad CRC-32" in line for line in failures(out)), out


def test_duplicate_zip_members_are_refused(
    pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two members of one name (one tool may read one, another the other): refused."""
    bundle = tmp_path / "dup.zip"
    shutil.copy(pristine.bundle, bundle)
    with zipfile.ZipFile(bundle, "a") as archive:
        name = next(n for n in archive.namelist() if n.endswith("/bagit.txt"))
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr(name, "BagIt-Version: 0.97\n")
    code, out, _ = verify(capsys, str(bundle))
    assert code == 1
    assert failures(out) == [f"FAIL  ZIP structure: the ZIP holds two members named {name!r}"]

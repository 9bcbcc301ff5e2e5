"""`archiver export`: the evidence bundle of a case, judged by standard tools (the Library
of Congress bagit validator, warcio, wacz, openssl) and by the commands of its own
VERIFY.md; the export as a ledger event; exports without trusted time; streaming."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import bagit
import pytest
from export_helpers import (
    Cli,
    LocalTsa,
    copy_bag,
    epoch,
    openssl_verifies,
    rebag,
    run,
    tool,
    tool_env,
    unzip,
)
from fixture_site import FixtureSite

from chain_of_custody.bundle import SIGNED_TAG_MANIFEST, TAG_SIGNATURE_FILE

VERIFY_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
MEASURE = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:], "
           "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN)"
           ".ru_maxrss); sys.exit(done.returncode)")


def _index(bag: Path) -> dict[str, Any]:
    return json.loads((bag / "data" / "bundle.json").read_bytes())


def _captures(bag: Path) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in _index(bag)["captures"]}


def _manifest(bag: Path, capture_id: str) -> dict[str, Any]:
    return json.loads((bag / "data" / "captures" / capture_id / "manifest.json").read_bytes())


def _verify_blocks(bag: Path) -> list[str]:
    return VERIFY_BLOCK.findall((bag / "VERIFY.md").read_text())


def _run_block(block: str, bag: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=bag, env=tool_env(),
                          capture_output=True, text=True, timeout=300, check=False)


# -- the bag ------------------------------------------------------------------------------


def test_the_bundle_is_a_bagit_1_0_bag_the_library_of_congress_validator_accepts(
    pristine: Any,
) -> None:
    """bagit.py --validate (the LoC CLI) and Bag.validate() accept it; it declares BagIt
    1.0 and carries SHA-256 and SHA-512 manifests and tag manifests."""
    bag = pristine.bag
    done = run(tool("bagit.py"), "--validate", str(bag), check=False)
    assert done.returncode == 0, done.stderr
    assert f"{bag} is valid" in done.stderr
    loc = bagit.Bag(str(bag))
    loc.validate()
    assert loc.version_info == (1, 0)
    assert (bag / "bagit.txt").read_bytes() == (
        b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n")
    assert set(loc.algorithms) == {"sha256", "sha512"}
    for name in ("manifest-sha256.txt", "manifest-sha512.txt", "tagmanifest-sha256.txt",
                 "tagmanifest-sha512.txt", TAG_SIGNATURE_FILE, "VERIFY.md", "bag-info.txt"):
        assert (bag / name).is_file(), name
    with zipfile.ZipFile(pristine.bundle) as bundle:
        assert {n.split("/")[0] for n in bundle.namelist()} == {bag.name}


def test_every_artifact_of_every_capture_of_the_case_is_in_the_bundle(pristine: Any) -> None:
    """Each completed capture's folder holds exactly its signed manifest's artifacts (any
    role: warc, provenance, media, metadata, screenshot) plus manifest.json and .sig; the
    failed capture is listed with its ledger entries; the other case's capture is not."""
    bag = pristine.bag
    captures = _captures(bag)
    assert set(captures) == {pristine.page_id, pristine.media_id, pristine.failed_id}
    for capture_id in (pristine.page_id, pristine.media_id):
        folder = bag / "data" / "captures" / capture_id
        manifest = _manifest(bag, capture_id)
        names = {a["name"] for a in manifest["artifacts"]}
        assert {p.name for p in folder.iterdir()} == names | {"manifest.json", "manifest.sig"}
        for artifact in manifest["artifacts"]:
            data = (folder / artifact["name"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
            assert hashlib.sha512(data).hexdigest() == artifact["sha512"]
        assert (bag / "data" / "replay" / f"{capture_id}.wacz").is_file()
    page_names = {a["name"] for a in _manifest(bag, pristine.page_id)["artifacts"]}
    seeded = {(a["name"], a["role"]) for a in _manifest(bag, pristine.media_id)["artifacts"]
              if a["name"] not in page_names}
    assert seeded == {("seeded-clip.mp4", "media"), ("seeded-clip.info.json", "metadata"),
                      ("seeded-view.png", "screenshot")}
    assert captures[pristine.failed_id]["status"] == "failed"
    assert not (bag / "data" / "captures" / pristine.failed_id).exists()
    assert pristine.other_id not in (bag / "data" / "bundle.json").read_text()


def test_custody_holds_the_case_entries_only_each_proven_in_one_timestamped_checkpoint(
    pristine: Any,
) -> None:
    """Entries: the case's captures (requested, completed, failed, viewed) and the key
    history, nothing of the other case; every proof is to the one checkpoint, which
    carries an RFC 3161 token."""
    bag = pristine.bag
    index = _index(bag)
    ours = {f"capture:{c}" for c in (pristine.page_id, pristine.media_id, pristine.failed_id)}
    entries = [json.loads((bag / "data" / "custody" / "entries" / f"{seq}.json").read_bytes())
               for seq in index["custody"]["entries"]]
    subjects = {e["subject"] for e in entries}
    assert subjects - ours == {f"key:{pristine.key_id}"}
    actions = [e["action"] for e in entries]
    for action in ("key.created", "capture.requested", "capture.completed", "capture.failed",
                   "access.viewed"):
        assert action in actions
    assert f"capture:{pristine.other_id}" not in subjects
    size = index["custody"]["checkpoint"]["tree_size"]
    assert all(json.loads(p.read_bytes())["tree_size"] == size
               for p in (bag / "data" / "custody" / "proofs").iterdir())
    assert size > max(index["custody"]["entries"])
    (token,) = index["custody"]["timestamps"]
    assert token["token"] == "data/custody/timestamps/1.tsr"
    assert index["custody"]["timestamp_problems"] == []


def test_standard_tools_agree_with_every_part(pristine: Any, tmp_path: Path) -> None:
    """warcio check, wacz validate, openssl pkeyutl (bundle, manifests, checkpoint) and
    openssl ts -verify (token, against the TSA's own CA file) each accept their part."""
    bag = pristine.bag
    for capture_id in (pristine.page_id, pristine.media_id):
        warc = bag / "data" / "captures" / capture_id / "capture.warc.gz"
        done = run(tool("warcio"), "check", "-v", str(warc), check=False)
        assert done.returncode == 0, done.stdout
        assert "digest pass" in done.stdout
        wacz = bag / "data" / "replay" / f"{capture_id}.wacz"
        done = run(tool("wacz"), "validate", "-f", str(wacz), check=False)
        assert done.returncode == 0, done.stdout
        assert "Validation succeeded" in done.stdout
        with zipfile.ZipFile(wacz) as replay:
            assert replay.read("archive/capture.warc.gz") == warc.read_bytes()
            pages = replay.read("pages/pages.jsonl").decode()
            assert "/page.html" in pages
        done = openssl_verifies("pkeyutl", "-verify", "-pubin", "-inkey", str(pristine.key_pem),
                                "-rawin", "-in", f"data/captures/{capture_id}/manifest.json",
                                "-sigfile", f"data/captures/{capture_id}/manifest.sig", cwd=bag)
        assert "Signature Verified Successfully" in done.stdout, done.stderr
    done = openssl_verifies("pkeyutl", "-verify", "-pubin", "-inkey", str(pristine.key_pem),
                            "-rawin", "-in", SIGNED_TAG_MANIFEST, "-sigfile", TAG_SIGNATURE_FILE,
                            cwd=bag)
    assert "Signature Verified Successfully" in done.stdout, done.stderr
    note = (bag / "data" / "custody" / "checkpoint.note").read_text()
    text, _, signature_line = note.partition("\n\n")
    (tmp_path / "note.txt").write_text(text + "\n")
    import base64

    (tmp_path / "note.sig").write_bytes(base64.b64decode(signature_line.split()[2])[4:])
    done = openssl_verifies("pkeyutl", "-verify", "-pubin", "-inkey", str(pristine.key_pem),
                            "-rawin", "-in", "note.txt", "-sigfile", "note.sig", cwd=tmp_path)
    assert "Signature Verified Successfully" in done.stdout, done.stderr
    (token,) = _index(bag)["custody"]["timestamps"]
    done = openssl_verifies("ts", "-verify", "-data", "data/custody/checkpoint.note",
                            "-in", token["token"], "-CAfile", str(pristine.tsa_ca), cwd=bag)
    assert "Verification: OK" in done.stdout, done.stderr
    assert epoch(token["gen_time"]) > 0


def test_every_command_of_verify_md_succeeds_as_written(pristine: Any, tmp_path: Path) -> None:
    """Each shell block of the bundle's VERIFY.md, run by bash from the bag's folder with
    only standard tools, exits 0 and prints what the text says it prints."""
    bag = copy_bag(pristine.bag, tmp_path)
    blocks = _verify_blocks(bag)
    assert len(blocks) >= 12
    outputs = []
    for block in blocks:
        done = _run_block(block, bag)
        assert done.returncode == 0, f"{block}\n---\n{done.stdout}{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    everything = "\n".join(outputs)
    assert "is valid" in everything  # bagit.py
    assert f"{pristine.key_id}  -" in everything  # the key id, computed from the key file
    assert everything.count("Signature Verified Successfully") >= 4
    assert re.search(r"all \d+ entries are in the signed checkpoint of \d+ entries", everything)
    assert "Verification: OK" in everything
    assert "Validation succeeded" in everything
    assert "digest pass" in everything


def test_verify_md_commands_fail_on_a_tampered_copy(pristine: Any, tmp_path: Path) -> None:
    """A byte changed in a file: the coreutils block fails. The same change with the
    manifests recomputed (no key to re-sign): the signature block fails."""
    bag = copy_bag(pristine.bag, tmp_path / "a")
    media = bag / "data" / "captures" / pristine.media_id / "seeded-clip.mp4"
    data = bytearray(media.read_bytes())
    data[100] ^= 0x01
    media.write_bytes(bytes(data))
    coreutils, signature = _verify_blocks(bag)[1], next(
        block for block in _verify_blocks(bag) if f"-sigfile {TAG_SIGNATURE_FILE}" in block)
    assert "sha256sum" in coreutils
    assert "pkeyutl" in signature
    assert _run_block(coreutils, bag).returncode != 0
    rebag(bag, key=None)
    assert _run_block(coreutils, bag).returncode == 0
    done = _run_block(signature, bag)
    assert done.returncode != 0
    assert "Signature Verification Failure" in done.stdout + done.stderr


def test_the_report_names_every_capture_event_and_digest(pristine: Any) -> None:
    """custody-report.html lists each capture, each file's SHA-256 and SHA-512, every
    ledger entry, the trusted time; custody-report.pdf is a PDF of several pages."""
    bag = pristine.bag
    report = (bag / "data" / "report" / "custody-report.html").read_text()
    for capture_id in (pristine.page_id, pristine.media_id):
        assert capture_id in report
        for artifact in _manifest(bag, capture_id)["artifacts"]:
            assert artifact["sha256"] in report
            assert artifact["sha512"] in report
    assert pristine.failed_id in report
    for seq in _index(bag)["custody"]["entries"]:
        assert f"<tr><td>{seq}</td>" in report
    assert "investigator@test.example" in report  # who viewed it
    assert "An independent Time-Stamping Authority attests" in report
    pdf = (bag / "data" / "report" / "custody-report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type /Page\b", pdf)) >= 2


def test_the_keys_are_the_ledgers_key_history(pristine: Any) -> None:
    """keys/<id>.pem is the archive's public key; history.json names the ledger entry
    that registered it."""
    keys = pristine.bag / "data" / "keys"
    assert (keys / f"{pristine.key_id}.pem").read_bytes() == pristine.key_pem.read_bytes()
    history = json.loads((keys / "history.json").read_bytes())
    (key,) = history["keys"]
    assert key["key_id"] == pristine.key_id
    assert key["ledger_seq"] == 0
    assert key["checkpoint_verifier_key"].split("+")[1] == (
        key["checkpoint_verifier_key"].split("+")[1].lower())


def test_the_export_is_a_ledger_event_with_the_bundles_digest_and_who_asked(
    pristine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bundle.exported: subject case:Case 7, actor the lawyer who asked, the ZIP's SHA-256,
    SHA-512 and size, the captures; a signed checkpoint covers it at once."""
    from export_helpers import archive_environment

    from archiver.archive import Archive
    from archiver.settings import load_settings

    archive_environment(monkeypatch, pristine.home,
                        f"sqlite:///{pristine.home.parent / 'archive.db'}")
    with Archive.open(load_settings()) as archive:
        entry = archive.ledger.entry(pristine.export_seq)
        checkpoint = archive.ledger.latest_checkpoint()
    data = pristine.bundle.read_bytes()
    assert entry.action == "bundle.exported"
    assert entry.subject == "case:Case 7"
    assert entry.actor == pristine.export_actor
    assert entry.payload["bundle_sha256"] == hashlib.sha256(data).hexdigest()
    assert entry.payload["bundle_sha512"] == hashlib.sha512(data).hexdigest()
    assert entry.payload["bundle_size"] == len(data)
    assert set(entry.payload["captures"]) == {pristine.page_id, pristine.media_id,
                                              pristine.failed_id}
    assert checkpoint is not None
    assert checkpoint.tree_size > entry.seq


# -- the command, on SQLite and PostgreSQL -----------------------------------------------


def test_export_and_verify_through_the_command(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """export --json reports the ZIP's digest (as recorded on the ledger, actor the
    operator); verify-bundle with the archive's key accepts it; --capture limits it."""
    cli.authorities(tsa.authority())
    first, second = (cli.json("capture", fixture_site.url(p), "--case", "Case 7")
                     for p in ("/page.html", "/gone-404"))
    other = cli.json("capture", fixture_site.url("/gone-410"), "--case", "Other")
    report = cli.json("export", "--case", "Case 7", "--out", str(tmp_path / "b.zip"))
    assert report["sha256"] == hashlib.sha256((tmp_path / "b.zip").read_bytes()).hexdigest()
    assert set(report["captures"]) == {first["id"], second["id"]}
    assert report["timestamps"][0]["tsa"] == tsa.url
    with cli.archive() as archive:
        entry = archive.ledger.entry(report["ledger_seq"])
    assert entry.payload["bundle_sha256"] == report["sha256"]
    assert entry.actor == "analyst@test.example"
    (tmp_path / "key.pem").write_text(cli.ok("key", "show"))
    out = cli.ok("verify-bundle", str(tmp_path / "b.zip"), "--trusted-key",
                 str(tmp_path / "key.pem"), "--tsa-ca", str(tsa.ca.cert))
    assert out.splitlines()[-1] == f"bundle {tmp_path / 'b.zip'}: verified"
    assert "WARN" not in out
    only = cli.json("export", "--case", "Case 7", "--capture", str(first["id"])[:8],
                    "--out", str(tmp_path / "one.zip"))
    assert only["captures"] == [first["id"]]
    code, _, err = cli("export", "--case", "Case 7", "--capture", str(other["id"]),
                       "--out", str(tmp_path / "x.zip"))
    assert code == 4
    assert f"capture {other['id']} is not in case 'Case 7' (it is in 'Other')" in err
    assert not (tmp_path / "x.zip").exists()


def test_export_refuses_what_it_cannot_do_in_one_line(cli: Cli, tmp_path: Path,
                                                      fixture_site: FixtureSite) -> None:
    """An unknown case (exit 4), an existing output file (exit 1, left untouched)."""
    code, _, err = cli("export", "--case", "Nope", "--out", str(tmp_path / "n.zip"))
    assert code == 4
    assert err == "archiver: error: no case named 'Nope'\n"
    cli.ok("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    (tmp_path / "taken.zip").write_bytes(b"keep me")
    code, _, err = cli("export", "--case", "Case 7", "--out", str(tmp_path / "taken.zip"))
    assert code == 1
    assert "already exists; an export never replaces a file" in err
    assert (tmp_path / "taken.zip").read_bytes() == b"keep me"


def test_an_export_without_trusted_time_says_so_everywhere(
    cli: Cli, tsa: LocalTsa, closed_port_url: str, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """No TSA configured, or the TSA down: the export still works, and the command, the
    bundle index, the report and verify-bundle all say there is no trusted timestamp."""
    cli.ok("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    code, _, err = cli("export", "--case", "Case 7", "--out", str(tmp_path / "none.zip"))
    assert code == 0
    assert "the bundle has NO trusted timestamp: no Time-Stamping Authority is configured" in err
    cli.authorities({"url": closed_port_url, "ca_file": str(tsa.ca.cert)})
    code, _, err = cli("export", "--case", "Case 7", "--out", str(tmp_path / "down.zip"))
    assert code == 0
    assert f"{closed_port_url}: TSA {closed_port_url} unreachable" in err
    bag = unzip(tmp_path / "down.zip", tmp_path / "down")
    problems = _index(bag)["custody"]["timestamp_problems"]
    assert problems == [f"{closed_port_url}: TSA {closed_port_url} unreachable: "
                        f"{problems[0].split('unreachable: ')[1]}"]
    assert "WARNING: this bundle carries NO trusted timestamp" in (
        bag / "data" / "report" / "custody-report.html").read_text()
    assert "This bundle carries NO trusted timestamp" in (bag / "VERIFY.md").read_text()
    code, out, _ = cli("verify-bundle", str(tmp_path / "down.zip"))
    assert code == 0
    assert "WARN  timestamp: NO trusted timestamp" in out
    assert out.splitlines()[-1].endswith("; no trusted timestamp)")


def test_export_uses_the_earliest_checkpoint_already_timestamped(
    cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """When a stamped checkpoint already covers every entry of the case, the export uses it
    (the tightest trusted time) and asks the TSA only for the checkpoint of its own event."""
    cli.authorities(tsa.authority("/earliest"))
    capture = cli.json("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    with cli.archive() as archive:
        stamped = archive.ledger.latest_checkpoint()
    assert stamped is not None
    cli.ok("capture", fixture_site.url("/gone-410"))  # later entries of no case
    asked = tsa.requests.count("/earliest")
    report = cli.json("export", "--case", "Case 7", "--out", str(tmp_path / "b.zip"))
    assert report["checkpoint"]["tree_size"] == stamped.tree_size
    assert stamped.tree_size == capture["ledger_seq"] + 1
    assert tsa.requests.count("/earliest") == asked + 1  # the bundle.exported checkpoint


def test_a_damaged_stored_copy_stops_the_export(cli: Cli, fixture_site: FixtureSite,
                                                tmp_path: Path) -> None:
    """A stored WARC that no longer matches its signed manifest: exit 1 naming it, no
    bundle written, nothing recorded."""
    capture = cli.json("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    warc = next(a for a in capture["artifacts"] if a["name"] == "capture.warc.gz")
    (blob,) = [p for p in (cli.home / "blobs").rglob(warc["sha256"]) if p.is_file()]
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with cli.archive() as archive:
        size = archive.ledger.size()
    code, _, err = cli("export", "--case", "Case 7", "--out", str(tmp_path / "b.zip"))
    assert code == 1
    assert (f"data/captures/{capture['id']}/capture.warc.gz does not match its capture's "
            "signed manifest") in err
    assert not (tmp_path / "b.zip").exists()
    assert list(tmp_path.glob(".b.zip.partial*")) == []
    with cli.archive() as archive:
        assert archive.ledger.size() == size


@pytest.mark.slow
def test_export_and_verify_stream_a_large_case_in_bounded_memory(
    pristine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture with a 256 MiB media file: `archiver export` and `archiver verify-bundle`
    (separate processes) each peak far below the file's size."""
    from export_helpers import archive_environment, seed_capture

    from archiver.archive import Archive
    from archiver.settings import load_settings

    big = tmp_path / "big.mp4"
    with big.open("wb") as handle:
        block = os.urandom(1024 * 1024)
        for _ in range(256):
            handle.write(block)
    archive_environment(monkeypatch, pristine.home,
                        f"sqlite:///{pristine.home.parent / 'archive.db'}")
    with Archive.open(load_settings()) as archive:
        like = archive.get_capture(pristine.page_id)
        seed_capture(archive, case="Big", like=like,
                     extra=[(big, "big.mp4", "media", "video/mp4")])
    big.unlink()
    script = str(Path(sys.executable).with_name("archiver"))

    def peak_mib(*argv: str) -> float:
        # A fresh parent whose only child is the command: RUSAGE_CHILDREN's ru_maxrss is
        # then the largest resident set of the command (or of a tool it ran).
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, script, *argv], capture_output=True, text=True,
            timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.splitlines()[-1]) / 1024

    export_peak = peak_mib("export", "--case", "Big", "--out", str(tmp_path / "big.zip"))
    assert (tmp_path / "big.zip").stat().st_size > 256 * 1024 * 1024
    verify_peak = peak_mib("verify-bundle", str(tmp_path / "big.zip"))
    # The interpreter and its libraries take about 100 MiB; holding the file would add 256.
    assert export_peak < 200, export_peak
    assert verify_peak < 200, verify_peak

"""A bundle whose captures were signed by a key that is no longer current (issue 14, item
6): ``archiver key rotate`` hands the archive to a new key (the old key signs the
``key.rotated`` entry), a capture before and one after, one export. ``verify-bundle``
trusting the new key accepts it, and the VERIFY.md step for older keys ties each capture's
key to its ``key.created`` / ``key.rotated`` entry and the entry that retired it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from archive_cli import PASSPHRASE
from export_helpers import Cli, LocalTsa, rebag, tool_env, unzip
from fixture_site import FixtureSite

from chain_of_custody.keys import SigningKey

VERIFY_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
KEY_BLOCK_MARK = "captures signed by a key"


def _key_block(bag: Path) -> str:
    blocks = [b for b in VERIFY_BLOCK.findall((bag / "VERIFY.md").read_text())
              if KEY_BLOCK_MARK in b]
    assert len(blocks) == 1
    return str(blocks[0])


def _run(block: str, bag: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=bag, env=tool_env(),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def rotated(cli: Cli, tsa: LocalTsa, fixture_site: FixtureSite, tmp_path: Path) -> Any:
    """A capture signed by key 1, ``key rotate``, a capture signed by key 2, an export."""
    cli.authorities(tsa.authority())
    old_key = cli.key()
    first = cli.json("capture", fixture_site.url("/page.html"), "--case", "Case 7")
    rotation = cli.json("key", "rotate", "--json")
    second = cli.json("capture", fixture_site.url("/style.css"), "--case", "Case 7")
    cli.ok("export", "--case", "Case 7", "--out", str(tmp_path / "b.zip"))
    bag = unzip(tmp_path / "b.zip", tmp_path / "bag")
    return old_key, rotation, first, second, bag


def test_key_rotate_hands_the_archive_to_a_new_key_signed_by_the_old(
    cli: Cli, rotated: Any
) -> None:
    """The new key is current and in the passphrase-protected key file; the old one is
    retired, its private key kept encrypted; the key.rotated entry is signed by the old
    key; the ledger verifies; captures after it are signed by the new key."""
    old_key, rotation, first, second, _bag = rotated
    assert rotation["old_key_id"] == old_key.key_id
    new_key = cli.key()  # loads with the archive's passphrase
    assert rotation["new_key_id"] == new_key.key_id != old_key.key_id
    retired = Path(rotation["retired_key_file"])
    assert retired.name == f"retired-{old_key.key_id}.pem"
    assert retired.stat().st_mode & 0o077 == 0
    keys = cli.json_lines("key", "show", "--all")
    assert [(k["key_id"], k["retired"] is None) for k in keys] == [
        (old_key.key_id, False), (new_key.key_id, True)]
    with cli.archive() as archive:
        entry = archive.ledger.entry(rotation["ledger_seq"])
        assert (entry.action, entry.signed_by) == ("key.rotated", old_key.key_id)
        assert entry.payload["replaces"] == old_key.key_id
        assert list(archive.public_keys()) == [old_key.key_id, new_key.key_id]
        assert archive.verify_ledger().entries > rotation["ledger_seq"]
        signers = {c: archive.verify_capture(c) for c in (first["id"], second["id"])}
    assert all(v.ok for v in signers.values()), signers


def test_a_bundle_with_a_capture_signed_by_the_old_key_verifies(
    cli: Cli, rotated: Any, tmp_path: Path
) -> None:
    """verify-bundle trusting the current (new) key: verified, the old capture's manifest
    signed by the old key; the VERIFY.md step ties each capture to the key entry."""
    old_key, rotation, first, second, bag = rotated
    new_key_id = rotation["new_key_id"]
    out = cli.ok("verify-bundle", str(tmp_path / "b.zip"), "--trusted-key", new_key_id)
    assert out.splitlines()[-1] == f"bundle {tmp_path / 'b.zip'}: verified"
    assert f"capture {first['id']}: manifest: manifest.json signed by key {old_key.key_id}" \
        in out
    assert f"capture {second['id']}: manifest: manifest.json signed by key {new_key_id}" in out
    history = json.loads((bag / "data" / "keys" / "history.json").read_bytes())
    assert [k["key_id"] for k in history["keys"]] == [old_key.key_id, new_key_id]
    done = _run(_key_block(bag), bag)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"key {old_key.key_id}: registered by entry \d+ \(key.created\), "
                     rf"retired by entry {rotation['ledger_seq']} \(key.rotated, signed by "
                     rf"it\)", done.stdout), done.stdout
    assert f"capture {first['id']}: signed by key {old_key.key_id}, completed in entry " \
        in done.stdout
    assert "0 of 2 captures signed by a key" in done.stdout


def test_a_capture_signed_by_a_key_after_its_retirement_fails_the_step(
    cli: Cli, rotated: Any, tmp_path: Path
) -> None:
    """The old key re-signs the new capture's manifest (what a thief of the retired key
    could do) and the bag is re-made: the VERIFY.md step fails, naming the capture."""
    old_key, _rotation, _first, second, bag = rotated
    folder = bag / "data" / "captures" / second["id"]
    manifest = json.loads((folder / "manifest.json").read_bytes())
    manifest["signer"]["key_id"] = old_key.key_id
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    (folder / "manifest.json").write_bytes(canonical)
    (folder / "manifest.sig").write_bytes(old_key.sign(canonical))
    rebag(bag, None)
    done = _run(_key_block(bag), bag)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"FAIL capture {second['id']}: signed by key {old_key.key_id}, which entry "
            in done.stdout), done.stdout
    assert "1 of 2 captures signed by a key" in done.stdout
    assert isinstance(old_key, SigningKey)


def test_key_rotate_refuses_without_the_passphrase_or_over_a_leftover_key(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong passphrase, or the new-key file an interrupted rotation left: one line, no
    traceback, and the archive keeps its key (no ledger entry, no file moved)."""
    key_id = cli.key().key_id
    key_file = cli.settings().key_file
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", "not the passphrase")
    code, out, err = cli("key", "rotate")
    assert (code, out) == (1, "")
    assert err == (f"archiver: error: cannot decrypt signing key {key_file}: wrong passphrase "
                   "(check ARCHIVER_SIGNING__PASSPHRASE or signing.passphrase_file)\n")
    monkeypatch.setenv("ARCHIVER_SIGNING__PASSPHRASE", PASSPHRASE)
    leftover = key_file.with_name(f"{key_file.name}.new")
    leftover.write_bytes(b"left by an interrupted rotation")
    code, out, err = cli("key", "rotate")
    assert (code, out) == (1, "")
    assert err == (f"archiver: error: a signing key already exists at {leftover} (left by an "
                   "interrupted key rotation? the ledger names the archive's current key: "
                   "see `archiver key show`)\n")
    assert leftover.read_bytes() == b"left by an interrupted rotation"
    assert cli.key().key_id == key_id
    assert [k["key_id"] for k in cli.json_lines("key", "show", "--all")] == [key_id]
    assert not list(key_file.parent.glob("retired-*"))

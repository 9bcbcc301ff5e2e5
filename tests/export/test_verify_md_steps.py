"""VERIFY.md's steps fail visibly: each block, run by plain bash exactly as printed (no
``set -e``, as a person pastes it), exits 0 on the honest bundle and non-zero when any
capture, not only the last one looked at, fails; the bag's listing step catches a file
planted at its top level; the ledger step names the capture each entry records."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_helpers import copy_bag, rebag, rezip, run, tool, tool_env

from chain_of_custody.bundle.verify import bounded, in_ascii

BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def _block(bag: Path, marker: str) -> str:
    """The one shell block of the bag's VERIFY.md that contains ``marker``."""
    found: list[str] = [b for b in BLOCK.findall((bag / "VERIFY.md").read_text()) if marker in b]
    assert len(found) == 1, (marker, found)
    return found[0]


def _as_printed(block: str, bag: Path) -> subprocess.CompletedProcess[str]:
    """The block run by bash with its default options, from the bag's folder."""
    return subprocess.run(["bash", "-c", block], cwd=bag, env=tool_env(), capture_output=True,
                          text=True, timeout=300, check=False)


def _captures(bag: Path) -> list[str]:
    """The capture folders in the order the blocks' globs visit them."""
    return sorted(p.name for p in (bag / "data" / "captures").iterdir())


# What marks each block (its own summary line or command)
SIGNATURES = "capture signatures failed"
ARTIFACTS = "differs from the manifest"
ON_LEDGER = "NO capture.completed entry names its manifest"
WARCS = "WARC files failed"
LISTED = "find . ! -type d"


def test_every_step_passes_as_printed_on_the_honest_bundle(pristine: Any, tmp_path: Path) -> None:
    """Plain bash, every block: exit 0, and each loop's summary says none of them failed;
    the ledger step names, for each capture, the entry file that records it."""
    bag = copy_bag(pristine.bag, tmp_path)
    captures = _captures(bag)
    assert len(captures) == 2
    for block in BLOCK.findall((bag / "VERIFY.md").read_text()):
        done = _as_printed(block, bag)
        assert done.returncode == 0, f"{block}\n---\n{done.stdout}{done.stderr}"
    assert "0 of 2 capture signatures failed" in _as_printed(_block(bag, SIGNATURES), bag).stdout
    assert "0 of 2 captures failed" in _as_printed(_block(bag, ARTIFACTS), bag).stdout
    assert "0 of 2 WARC files failed" in _as_printed(_block(bag, WARCS), bag).stdout
    assert _as_printed(_block(bag, LISTED), bag).stdout == (
        "every file of the bag is listed in its manifests\n")
    ledger = _as_printed(_block(bag, ON_LEDGER), bag).stdout
    for capture in captures:
        seq = _completed_entry(bag, capture)
        assert re.search(rf"^ok  data/custody/entries/{seq}\.json records capture {capture} "
                         r"\(completed \S+Z\)$", ledger, re.M), ledger
    assert ledger.endswith("0 of 2 captures failed\n")


def _completed_entry(bag: Path, capture: str) -> int:
    for path in (bag / "data" / "custody" / "entries").iterdir():
        entry = json.loads(path.read_bytes())
        if entry["action"] == "capture.completed" and entry["subject"] == f"capture:{capture}":
            return int(entry["seq"])
    raise AssertionError(f"no capture.completed entry of {capture}")


def _break_warc_record(path: Path) -> None:
    """One byte of the last response's body changed, each gzip member re-made: the WARC
    still reads, one record digest does not match."""
    data, members = path.read_bytes(), []
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        members.append(inflater.decompress(data) + inflater.flush())
        data = inflater.unused_data
    index = max(i for i, m in enumerate(members) if b"WARC-Type: response" in m)
    record = bytearray(members[index])
    record[-10] ^= 0x20
    members[index] = bytes(record)
    path.write_bytes(b"".join(gzip.compress(m, mtime=0) for m in members))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tamper_warc(bag: Path, first: Path) -> None:
    _break_warc_record(first / "capture.warc.gz")


def tamper_signature(bag: Path, first: Path) -> None:
    _flip(first / "manifest.sig", 5)


def tamper_artifact(bag: Path, first: Path) -> None:
    _flip(first / "dom.html", 10)


def drop_ledger_entry(bag: Path, first: Path) -> None:
    (bag / "data" / "custody" / "entries" / f"{_completed_entry(bag, first.name)}.json").unlink()


def misname_ledger_entry(bag: Path, first: Path) -> None:
    """The entry naming the first capture's manifest says it records another capture
    (in a name with an escape sequence, which the step must not print raw)."""
    path = bag / "data" / "custody" / "entries" / f"{_completed_entry(bag, first.name)}.json"
    text = path.read_text()
    assert text.count(f'"subject":"capture:{first.name}"') == 1
    path.write_text(text.replace(f'"subject":"capture:{first.name}"',
                                 '"subject":"capture:\\u001b[2Jother"'))


def plant_top_level_file(bag: Path, first: Path) -> None:
    (bag / "NOTES.txt").write_text("planted")


# name: (change, the block that must fail, what its output must say ({first}: the folder))
TAMPERING: dict[str, tuple[Callable[[Path, Path], None], str, list[str]]] = {
    "warc": (tamper_warc, WARCS, ["FAIL data/captures/{first}/capture.warc.gz",
                                  "1 of 2 WARC files failed"]),
    "signature": (tamper_signature, SIGNATURES, ["Signature Verification Failure",
                                                 "1 of 2 capture signatures failed"]),
    "artifact": (tamper_artifact, ARTIFACTS, ["data/captures/{first}/dom.html differs from "
                                              "the manifest", "1 of 2 captures failed"]),
    "ledger": (drop_ledger_entry, ON_LEDGER, [
        "data/captures/{first}/: NO capture.completed entry names its manifest",
        "1 of 2 captures failed"]),
    "ledger-subject": (misname_ledger_entry, ON_LEDGER, [
        "data/custody/entries/", "names the manifest of data/captures/{first}/ but records "
        "'capture:\\x1b[2Jother'", "1 of 2 captures failed"]),
    "top-level": (plant_top_level_file, LISTED, ["< NOTES.txt"]),
}


@pytest.mark.parametrize("name", sorted(TAMPERING))
def test_a_failure_in_an_earlier_capture_fails_the_step(
    name: str, pristine: Any, tmp_path: Path
) -> None:
    """The change is made to the first capture the loop visits (the last one is fine):
    the step, run as printed, exits non-zero and says what failed."""
    change, marker, expected = TAMPERING[name]
    bag = copy_bag(pristine.bag, tmp_path)
    first = _captures(bag)[0]
    assert _as_printed(_block(bag, marker), bag).returncode == 0
    change(bag, bag / "data" / "captures" / first)
    done = _as_printed(_block(bag, marker), bag)
    assert done.returncode != 0, done.stdout + done.stderr
    for text in expected:
        assert text.format(first=first) in done.stdout + done.stderr, done.stdout + done.stderr
    assert "\x1b" not in done.stdout + done.stderr


def test_a_file_planted_at_the_top_level_passes_bagit_but_not_the_listing_step(
    pristine: Any, tmp_path: Path
) -> None:
    """The gap the listing step closes: bagit.py calls the bag valid with an extra file
    beside its manifests; the listing step names it, and a file planted in data/ too."""
    bag = copy_bag(pristine.bag, tmp_path)
    (bag / "NOTES.txt").write_text("planted")
    validated = run(tool("bagit.py"), "--validate", ".", cwd=bag)
    assert "is valid" in validated.stdout + validated.stderr
    (bag / "data" / "captures" / "extra.bin").write_bytes(b"planted")
    done = _as_printed(_block(bag, LISTED), bag)
    assert done.returncode == 1
    assert [line for line in done.stdout.splitlines() if line[:1] in "<>"] == [
        "< NOTES.txt", "< data/captures/extra.bin"]


# -- FAIL lines quote a damaged WARC's bytes escaped ---------------------------------------

# ANSI colour, 0xff 0xfe, NUL, BEL, a bad UTF-8 pair, a right-to-left override.
DAMAGE = b"\x1b[31m\xff\xfe\x00\x07\xc3\x28 \xe2\x80\xae"


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_a_damaged_warc_header_is_quoted_escaped_in_the_fail_line(
    encoding: str, pristine: Any, tmp_path: Path
) -> None:
    """A WARC whose first header line holds control bytes and 0xff, the bag re-made and
    re-signed (so the payload checks pass): the installed command's output, on a UTF-8
    and on a Latin-1 terminal, holds no byte outside printable ASCII but the line ends,
    and the FAIL line shows the damaged bytes as escapes."""
    bag = copy_bag(pristine.bag, tmp_path)
    first = _captures(bag)[0]
    warc = bag / "data" / "captures" / first / "capture.warc.gz"
    warc.write_bytes(gzip.compress(b"WARC/1" + DAMAGE + b"\r\nWARC-Type: warcinfo\r\n\r\n"))
    rebag(bag, pristine.key)
    bundle = rezip(bag, tmp_path / "damaged.zip")
    env = {**tool_env(), "PYTHONIOENCODING": encoding}
    done = subprocess.run([tool("archiver"), "verify-bundle", str(bundle)], env=env,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == b""
    assert re.fullmatch(rb"[\x20-\x7e\n]*", done.stdout), done.stdout
    fails = [line for line in done.stdout.decode("ascii").splitlines()
             if line.startswith("FAIL")]
    assert (f"FAIL  capture {first}: WARC records: data/captures/{first}/capture.warc.gz: "
            r"not a readable WARC after 0 records: Invalid WARC record, first line: WARC/1"
            r"\x1b[31m\xff\xfe\x00\x07\xc3( \xe2\x80\xae") in fails, fails


def test_lone_surrogates_and_non_ascii_from_a_reader_are_escaped() -> None:
    """Bytes kept by ``surrogateescape`` never reach a check's detail raw (they would be
    written back as the bytes, or fail to print); a WARC reader's message is shown in
    ASCII, bidirectional overrides and Latin-1-decoded bytes included."""
    assert bounded("a\udcff\x07b") == "a\\udcff\\x07b"
    assert in_ascii("first line: \xff\xfe\x1b[31m \u202e \U0001f600 a\\b") == (
        "first line: \\xff\\xfe\\x1b[31m \\u202e \\U0001f600 a\\b")


def test_the_revisit_step_quotes_a_damaged_header_escaped(pristine: Any, tmp_path: Path) -> None:
    """A revisit whose WARC-Refers-To holds an escape sequence, a BEL and 0xff: the
    revisit step fails and its FAIL line shows them as escapes (no raw control byte)."""
    bag = copy_bag(pristine.bag, tmp_path)
    warc = bag / "data" / "captures" / pristine.page_id / "capture.warc.gz"
    data, members = warc.read_bytes(), []
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        members.append(inflater.decompress(data) + inflater.flush())
        data = inflater.unused_data
    index = next(i for i, m in enumerate(members) if b"WARC-Type: revisit\r\n" in m)
    members[index] = re.sub(rb"WARC-Refers-To: [^\r]*", b"WARC-Refers-To: <\x1b[2J\x07\xff>",
                            members[index], count=1)
    warc.write_bytes(b"".join(gzip.compress(m, mtime=0) for m in members))
    done = _as_printed(_block(bag, "revisits failed"), bag)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.fullmatch(r"[\x20-\x7e\n]*", done.stdout), done.stdout
    assert (r"refers to <\x1b[2J\x07\ufffd>, not a record of it") in done.stdout, done.stdout

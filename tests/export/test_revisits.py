"""Revisit records (issue 14, item 4): each revisit in a bundle's WARC must name a record of
the same WARC (``WARC-Refers-To``) carrying its ``WARC-Payload-Digest``. Checked by
``verify-bundle`` and by the standard-library step of VERIFY.md, on the honest bundle (its
page capture fetched several resources twice, so its WARC holds revisits) and on copies
whose revisit points to a missing record or carries another record's digest."""

from __future__ import annotations

import gzip
import re
import subprocess
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from export_helpers import copy_bag, rebag, rezip, tool_env

from archiver.cli import main

VERIFY_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
REVISIT_BLOCK_MARK = "revisits failed"


def _members(data: bytes) -> list[bytes]:
    members = []
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        members.append(inflater.decompress(data) + inflater.flush())
        data = inflater.unused_data
    return members


def _header(record: bytes, name: bytes) -> bytes:
    found = re.search(rb"\r\n" + name + rb": ([^\r]*)\r\n", record)
    assert found, name
    return found.group(1)


def _warc(bag: Path, p: Any) -> Path:
    return bag / "data" / "captures" / str(p.page_id) / "capture.warc.gz"


def _edit_first_revisit(path: Path, edit: Callable[[bytes, list[bytes]], bytes]) -> bytes:
    """Rewrite the WARC's first revisit record's headers with ``edit(record, members)``,
    recompressing record by record; return that revisit's record id."""
    members = _members(path.read_bytes())
    index = next(i for i, m in enumerate(members) if b"WARC-Type: revisit\r\n" in m)
    record = members[index]
    head, sep, block = record.partition(b"\r\n\r\n")
    members[index] = edit(head + b"\r\n", members)[:-2] + sep + block
    path.write_bytes(b"".join(gzip.compress(m, mtime=0) for m in members))
    return _header(record, b"WARC-Record-ID")


def refer_to_a_missing_record(path: Path) -> tuple[bytes, str]:
    missing = f"<urn:uuid:{uuid.uuid4()}>".encode()

    def edit(head: bytes, _members: list[bytes]) -> bytes:
        return head.replace(_header(head, b"WARC-Refers-To"), missing)

    revisit = _edit_first_revisit(path, edit)
    return revisit, f"refers to {missing.decode()!r}, which is not a record of this WARC"


def carry_another_digest(path: Path) -> tuple[bytes, str]:
    def edit(head: bytes, members: list[bytes]) -> bytes:
        own = _header(head, b"WARC-Payload-Digest")
        other = next(_header(m, b"WARC-Payload-Digest") for m in members
                     if b"WARC-Type: response\r\n" in m
                     and _header(m, b"WARC-Payload-Digest") != own)
        edit.other = other  # type: ignore[attr-defined]
        return head.replace(b"WARC-Payload-Digest: " + own, b"WARC-Payload-Digest: " + other)

    revisit = _edit_first_revisit(path, edit)
    other = edit.other.decode()  # type: ignore[attr-defined]
    return revisit, (f"carries WARC-Payload-Digest {other!r}, which is not the payload "
                     "digest of the record it refers to")


def _revisit_block(bag: Path) -> str:
    blocks = [b for b in VERIFY_BLOCK.findall((bag / "VERIFY.md").read_text())
              if REVISIT_BLOCK_MARK in b]
    assert len(blocks) == 1
    return str(blocks[0])


def _run(block: str, bag: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=bag, env=tool_env(),
                          capture_output=True, text=True, timeout=120, check=False)


def _verify(capsys: pytest.CaptureFixture[str], bundle: Path, key_id: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify-bundle", str(bundle), "--trusted-key", key_id])
    return code, capsys.readouterr().out


def test_the_honest_bundles_revisits_pass_both_checks(
    pristine: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-bundle counts the page capture's revisits as matching; the VERIFY.md step
    checks the same revisits and exits 0."""
    warc = _warc(pristine.bag, pristine)
    revisits = sum(b"WARC-Type: revisit\r\n" in m for m in _members(warc.read_bytes()))
    assert revisits >= 3  # the page's resources were fetched again: the test means something
    code, out = _verify(capsys, pristine.bundle, pristine.key_id)
    assert code == 0, out
    assert (f"ok    capture {pristine.page_id}: WARC records: data/captures/{pristine.page_id}"
            f"/capture.warc.gz: ") in out
    line = next(x for x in out.splitlines()
                if f"capture {pristine.page_id}: WARC records" in x)
    assert line.endswith(f"{revisits} revisits match the records they refer to"), line
    bag = copy_bag(pristine.bag, tmp_path)
    done = _run(_revisit_block(bag), bag)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"capture.warc.gz: {revisits} revisits checked" in done.stdout
    assert re.search(r"^0 of \d+ revisits failed$", done.stdout, re.M), done.stdout


@pytest.mark.parametrize("tamper", [refer_to_a_missing_record, carry_another_digest])
def test_a_revisit_that_does_not_match_fails_both_checks(
    tamper: Callable[[Path], tuple[bytes, str]], pristine: Any, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The WARC's first revisit changed (re-bagged and re-signed with the archive's key,
    so only the deeper checks can object): verify-bundle names the revisit in a FAIL of
    the capture's WARC records; the VERIFY.md step names it and exits non-zero."""
    bag = copy_bag(pristine.bag, tmp_path)
    revisit, why = tamper(_warc(bag, pristine))
    rebag(bag, pristine.key)
    code, out = _verify(capsys, rezip(bag, tmp_path / "tampered.zip"), pristine.key_id)
    assert code == 1
    expected = (f"FAIL  capture {pristine.page_id}: WARC records: data/captures/"
                f"{pristine.page_id}/capture.warc.gz: revisit record {revisit.decode()!r} "
                f"at offset ")
    failing = [x for x in out.splitlines() if x.startswith(expected)]
    assert len(failing) == 1, out
    assert why in failing[0], failing[0]
    done = _run(_revisit_block(bag), bag)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"FAIL data/captures/{pristine.page_id}/capture.warc.gz: revisit {revisit.decode()}" \
        in done.stdout
    assert re.search(r"^1 of \d+ revisits failed$", done.stdout, re.M), done.stdout

"""Crafted bundles: `archiver verify-bundle` never raises, never stalls, and names the
member and the problem in a FAIL line (or, for a file that is no ZIP at all, one error
line), whatever the attacker wrote into the ZIP.

The crafted bundles are made from one honest bundle (a real capture of the fixture site,
exported) by a ZIP writer of our own (``write_zip``) that controls every field of every
record, so each case changes exactly one thing. The ``bundle-flips`` family flips one
random byte of the honest bundle per trial (seeded) and checks it is caught and named.
"""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import export_helpers
import hostile_suite
import pytest

from archiver.cli import main
from chain_of_custody.bundle.zipread import audit

LINE_LIMIT = 1300  # a check's detail is at most 1000 characters, plus its name


@dataclass(frozen=True)
class Honest:
    bundle: Path
    root: str
    capture_id: str


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory, fixture_site: Any) -> Honest:
    """One page captured from the fixture site and exported as a bundle (no TSA)."""
    from archiver.archive import Archive, initialise
    from archiver.export.case import export_case
    from archiver.settings import load_settings

    root = tmp_path_factory.mktemp("honest")
    with pytest.MonkeyPatch.context() as mp:
        export_helpers.archive_environment(mp, root / "archive",
                                           f"sqlite:///{root / 'archive.db'}")
        settings = load_settings()
        initialise(settings)
        with Archive.open(settings) as archive:
            page = archive.capture(fixture_site.url("/page.html"), case="Case H")
            assert page.ok, page
            report = export_case(archive, case="Case H", out=root / "honest.zip")
    with zipfile.ZipFile(report.path) as bundle:
        bag = bundle.namelist()[0].split("/")[0]
    return Honest(report.path, bag, page.id)


# -- a ZIP writer that controls every field ----------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One member and every field of its local header and central directory entry."""

    name: bytes
    data: bytes
    method: int = 0
    flags: int = 0
    raw: bytes | None = None  # the compressed bytes, if not those of ``data``
    crc: int | None = None
    csize: int | None = None
    usize: int | None = None
    system: int = 3
    version: int = 20
    needed: int = 20
    internal: int = 0
    external: int = 0o100644 << 16
    comment: bytes = b""
    disk: int = 0
    zip64: bool = False
    local: dict[str, Any] = field(default_factory=dict)  # local header fields that differ
    descriptor: bytes = b""
    offset: int | None = None  # the central directory's offset, if not the real one


def compressed(member: Member) -> bytes:
    if member.raw is not None:
        return member.raw
    if member.method == zipfile.ZIP_DEFLATED:
        deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return deflate.compress(member.data) + deflate.flush()
    return member.data


def write_zip(members: list[Member], *, comment: bytes = b"", count: int | None = None,
              prefix: bytes = b"", gap: bytes = b"", suffix: bytes = b"", disk: int = 0,
              zip64_total: int | None = None) -> bytes:
    out = bytearray(prefix)
    central = bytearray()
    for m in members:
        raw = compressed(m)
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        csize = len(raw) if m.csize is None else m.csize
        usize = len(m.data) if m.usize is None else m.usize
        extra = struct.pack("<HHQQ", 1, 16, usize, csize) if m.zip64 else b""
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if m.zip64 else (csize, usize)
        lf = {"needed": m.needed, "flags": m.flags, "method": m.method, "crc": crc,
              "csize": sizes[0], "usize": sizes[1], "name": m.name, "time": 0, "date": 0x5B21,
              **m.local}
        offset = len(out)
        out += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", lf["needed"], lf["flags"],
                           lf["method"], lf["time"], lf["date"], lf["crc"], lf["csize"],
                           lf["usize"], len(lf["name"]), len(extra))
        out += lf["name"] + extra + raw + m.descriptor + gap
        central += struct.pack("<4sBBHHHHHIIIHHHHHII", b"PK\x01\x02", m.version, m.system,
                               m.needed, m.flags, m.method, 0, 0x5B21, crc, sizes[0],
                               sizes[1], len(m.name), len(extra), len(m.comment), m.disk,
                               m.internal, m.external,
                               offset if m.offset is None else m.offset)
        central += m.name + extra + m.comment
    cd_offset = len(out)
    out += central
    total = len(members) if count is None else count
    if zip64_total is not None:
        z64_at = len(out)
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, zip64_total,
                           zip64_total, len(central), cd_offset)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_at, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", disk, disk, total, total, len(central),
                       cd_offset, len(comment))
    return bytes(out + comment + suffix)


def members_of(bundle: Path) -> list[Member]:
    with zipfile.ZipFile(bundle) as z:
        return [Member(i.filename.encode(), z.read(i), method=i.compress_type,
                       flags=0x800 if not i.filename.isascii() else 0)
                for i in z.infolist()]


def at(members: list[Member], suffix: str) -> int:
    (index,) = [i for i, m in enumerate(members) if m.name.decode("utf-8", "replace")
                .endswith(suffix)]
    return index


def change(members: list[Member], suffix: str, **fields: Any) -> list[Member]:
    index = at(members, suffix)
    return [*members[:index], replace(members[index], **fields), *members[index + 1:]]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# -- the cases ----------------------------------------------------------------------------------

Craft = Callable[[list[Member], Honest], bytes]
W = "data/captures/{capture}/capture.warc.gz"


def warc_record(length: int, body: bytes) -> bytes:
    return (b"WARC/1.1\r\nWARC-Type: resource\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
            b"WARC-Target-URI: http://example.org/\r\nContent-Length: "
            + str(length).encode() + b"\r\n\r\n" + body)


def _rename(ms: list[Member], suffix: str, name: bytes, **fields: Any) -> list[Member]:
    return change(ms, suffix, name=name, **fields)


def _deep_manifest(ms: list[Member], h: Honest) -> bytes:
    return write_zip(change(ms, f"{h.capture_id}/manifest.json", data=nested(100_000)))


def _entry_name(ms: list[Member]) -> str:
    name = next(m.name.decode() for m in ms if b"/custody/entries/" in m.name)
    return name.split("/", 1)[1]


CASES: dict[str, tuple[Craft, tuple[str, ...]]] = {
    # id: (craft, the substrings one FAIL line, or the error line, must hold)
    "encrypted-member": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", flags=1)),
        ("ZIP members", "data/bundle.json is encrypted")),
    "method-6-implode": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=6)),
        ("data/bundle.json uses compression method 6 (implode)",)),
    "method-99-aes": (
        lambda ms, h: write_zip(change(ms, "bag-info.txt", method=99)),
        ("bag-info.txt uses compression method 99 (AES encryption)",)),
    "method-12-bzip2": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=12)),
        ("data/bundle.json uses compression method 12 (bzip2)",)),
    "corrupt-deflate": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=8,
                                       raw=b"\xff" * 64)),
        ("data/bundle.json is damaged in the ZIP: its deflate data is invalid",)),
    "deflate-cut-short": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=8,
                                       raw=compressed(ms[at(ms, "data/bundle.json")])[:20])),
        ("data/bundle.json is damaged in the ZIP: its deflate data is cut short",)),
    "deflate-with-trailing-bytes": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=8,
                                       raw=compressed(ms[at(ms, "data/bundle.json")])
                                       + b"hidden")),
        ("data/bundle.json is damaged in the ZIP: its deflate data ends before its "
         "compressed size",)),
    "bad-crc": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", crc=1234)),
        ("bagit.txt is damaged in the ZIP: Bad CRC-32",)),
    "zip-bomb-size-lie": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", method=8,
                                       data=b"\x00" * (4 << 20), usize=100,
                                       crc=zlib.crc32(b"\x00" * 100))),
        ("data/bundle.json is damaged in the ZIP: it holds more than its declared 100 "
         "bytes",)),
    "huge-declared-deflate-size": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", zip64=True, method=8,
                                       usize=1 << 60)),
        ("data/bundle.json declares 1152921504606846976 bytes from",
         "more than deflate can expand")),
    "stored-sizes-differ": (
        lambda ms, h: write_zip(change(ms, "tagmanifest-sha256.txt.sig", usize=10**6)),
        ("tagmanifest-sha256.txt.sig is stored (not compressed) but declares 1000000 bytes "
         "in",)),
    "json-nested-100000-deep": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=nested(100_000))),
        ("bundle index: data/bundle.json is unreadable: data/bundle.json is JSON nested "
         "too deep",)),
    "json-nested-deeper-than-64": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=nested(200))),
        ("data/bundle.json is JSON nested more than 64 deep",)),
    "manifest-json-nested-deep": (
        _deep_manifest, ("capture {capture}: manifest", "is JSON nested too deep")),
    "entry-json-nested-deep": (
        lambda ms, h: write_zip(change(ms, _entry_name(ms), data=nested(100_000))),
        ("ledger entries: entry", "is JSON nested too deep")),
    "json-huge-float": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=b'{"x": 1e999}')),
        ("data/bundle.json is not valid JSON: the number '1e999' is out of range",)),
    "json-huge-integer": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json",
                                       data=b'{"x": ' + b"9" * 5000 + b"}")),
        ("data/bundle.json is not valid JSON: a number of 5000 digits",)),
    "json-nan": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=b'{"x": NaN}')),
        ("data/bundle.json is not valid JSON: NaN is not a JSON number",)),
    "json-invalid-utf8": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=b'{"x": "\xff\xfe"}')),
        ("data/bundle.json is not valid JSON", "utf-8")),
    "json-duplicate-key": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json",
                                       data=b'{"type": "a", "type": "b"}')),
        ("data/bundle.json is not valid JSON: the member 'type' appears twice",)),
    "json-huge-string": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", data=_huge_id(ms))),
        ("captures: bundle.json lists a capture with id '\\x1b]0;x", "more characters)")),
    "zip-comment": (
        lambda ms, h: write_zip(ms, comment=b"\x1b[2Jtrust me"),
        ("ZIP structure: the ZIP carries a comment ('\\x1b[2Jtrust me')",)),
    "eocd-count-disagrees": (
        lambda ms, h: write_zip(ms, count=len(ms) - 1),
        ("ZIP structure: the end record counts", "the central directory holds")),
    "bytes-after-the-end-record": (
        lambda ms, h: write_zip(ms, suffix=b"appended"),
        ("declares a 0-byte comment, but 8 bytes follow it",)),
    "zip-prepended": (
        lambda ms, h: b"MZ" + b"\x00" * 100 + write_zip(ms),
        ("ZIP structure: the central directory", "102 bytes unaccounted for")),
    "bytes-before-the-first-member": (
        lambda ms, h: write_zip(ms, prefix=b"MZ" + b"\x00" * 100),
        ("ZIP structure: 102 bytes between the start of the ZIP and member",
         "belong to no member")),
    "bytes-hidden-between-members": (
        lambda ms, h: write_zip(ms[:1], gap=b"hidden") + b"",
        ("ZIP structure: 6 bytes between member", "belong to no member")),
    "duplicate-member-names": (
        lambda ms, h: write_zip([*ms, replace(ms[at(ms, "bagit.txt")],
                                              data=b"BagIt-Version: 0.97\n")]),
        ("ZIP structure: the ZIP holds two members named", "bagit.txt")),
    "dot-dot-name": (
        lambda ms, h: write_zip([*ms, Member(f"{h.root}/data/../../evil".encode(), b"x")]),
        ("ZIP structure: unsafe member name", "/data/../../evil")),
    "absolute-name": (
        lambda ms, h: write_zip([*ms, Member(b"/etc/cron.d/evil", b"x")]),
        ("ZIP structure: unsafe member name '/etc/cron.d/evil'",)),
    "backslash-name": (
        lambda ms, h: write_zip([*ms, Member(f"{h.root}\\..\\evil".encode(), b"x")]),
        ("ZIP structure: unsafe member name", "evil")),
    "drive-letter-name": (
        lambda ms, h: write_zip([*ms, Member(b"C:/Windows/evil.dll", b"x")]),
        ("ZIP structure: unsafe member name 'C:/Windows/evil.dll'",)),
    "nul-in-name": (
        lambda ms, h: write_zip([*ms, Member(f"{h.root}/data/a\x00.txt".encode(), b"x")]),
        ("ZIP structure: unsafe member name", "a\\x00.txt", "control characters")),
    "escape-sequence-in-name": (
        lambda ms, h: write_zip([*ms, Member(f"{h.root}/\x1b]0;pwned\x07".encode(), b"x")]),
        ("ZIP structure: unsafe member name", "\\x1b]0;pwned\\x07")),
    "invalid-utf8-name": (
        lambda ms, h: write_zip([*ms, Member(h.root.encode() + b"/\xff\xfe", b"x",
                                             flags=0x800)]),
        ("ZIP structure: member name", "is not valid UTF-8")),
    "non-ascii-name-without-utf8-flag": (
        lambda ms, h: write_zip([*ms, Member(h.root.encode() + b"/caf\xe9", b"x")]),
        ("ZIP structure: member name", "has no UTF-8 flag")),
    "local-name-differs": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", local={"name": b"x" * 5})),
        ("bagit.txt': its local header and central directory entry disagree (name)",)),
    "local-sizes-differ": (
        lambda ms, h: write_zip(change(ms, "bag-info.txt", local={"usize": 7})),
        ("bag-info.txt': its local header and central directory entry disagree (CRC and "
         "sizes)",)),
    "local-method-differs": (
        lambda ms, h: write_zip(change(ms, "data/bundle.json", local={"method": 0})),
        ("data/bundle.json': its local header and central directory entry disagree "
         "(method)",)),
    "data-descriptor-lies": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", flags=8,
                                       local={"crc": 0, "csize": 0, "usize": 0},
                                       descriptor=struct.pack("<4sIII", b"PK\x07\x08",
                                                              1, 2, 3))),
        ("bagit.txt': its local header and central directory entry disagree (data "
         "descriptor)",)),
    "overlapping-members": (
        lambda ms, h: write_zip([*ms, replace(ms[at(ms, "bagit.txt")], offset=0,
                                              name=f"{h.root}/data/again.txt".encode())]),
        ("overlaps member", "a zip bomb's trick")),
    "central-offset-past-the-data": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", offset=10**8)),
        ("ZIP structure: member", "bagit.txt': no local header at offset 100000000",)),
    "zip64-sizes-without-extra": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", csize=0xFFFFFFFF)),
        ("bagit.txt' has sizes marked ZIP64 but no ZIP64 extra field",)),
    "zip64-end-record-disagrees": (
        lambda ms, h: write_zip(ms, zip64_total=len(ms) + 5),
        ("the end record and the ZIP64 end record disagree on the entry count",)),
    "several-disks": (
        lambda ms, h: write_zip(ms, disk=1),
        ("ZIP structure: the ZIP spans several disks",)),
    "member-on-another-disk": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", disk=2)),
        ("bagit.txt' is on disk 2",)),
    "symlink-member": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", external=0o120777 << 16,
                                       data=b"/etc/passwd")),
        ("ZIP structure: member", "bagit.txt' is a symbolic link")),
    "fifo-member": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", external=0o010644 << 16)),
        ("bagit.txt' is not a regular file (mode 0o10644)",)),
    "setuid-member": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", external=0o104755 << 16)),
        ("bagit.txt' asks for set-user-ID",)),
    "member-comment": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", comment=b"see other file")),
        ("bagit.txt' carries a comment ('see other file')",)),
    "directory-with-data": (
        lambda ms, h: write_zip([*ms, Member(f"{h.root}/data/dir/".encode(), b"hidden")]),
        ("directory entry", "/data/dir/' holds 6 bytes")),
    "unknown-flags": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", flags=0x4000,
                                       local={"flags": 0x4000})),
        ("bagit.txt' sets general-purpose flags 0x4000",)),
    "version-needed-too-new": (
        lambda ms, h: write_zip(change(ms, "bagit.txt", needed=99)),
        ("ZIP structure: member", "bagit.txt' needs ZIP version 9.9 to be read",)),
    "manifest-names-a-file-twice": (
        lambda ms, h: write_zip(change(ms, "/manifest-sha256.txt",
                                       data=ms[at(ms, "/manifest-sha256.txt")].data * 2)),
        ("manifest-sha256.txt lists data/", "twice")),
    "warc-of-zeros": (
        lambda ms, h: write_zip(change(ms, W.format(capture=h.capture_id),
                                       data=bytes(2 << 20))),
        ("WARC records: " + W + ": not a readable WARC after 0 records: a header line "
         "longer than 65536 bytes",)),
    "warc-of-random-bytes": (
        lambda ms, h: write_zip(change(ms, W.format(capture=h.capture_id),
                                       data=random.Random(7).randbytes(1 << 20))),
        ("WARC records: " + W + ": not a readable WARC after 0 records",)),
    "warc-record-cut-short": (
        lambda ms, h: write_zip(change(ms, W.format(capture=h.capture_id),
                                       data=warc_record(10**9, b"short"))),
        ("WARC records: " + W + ": resource record '<urn:uuid:1>' at offset 0 ends",
         "short of its Content-Length")),
    "warc-record-misframed": (
        lambda ms, h: write_zip(change(ms, W.format(capture=h.capture_id),
                                       data=warc_record(2, b"abcdef\r\n\r\n"))),
        ("WARC records: " + W + ": the record before offset",
         "not followed by the blank lines")),
    "warc-response-without-target": (
        lambda ms, h: write_zip(change(ms, W.format(capture=h.capture_id),
                                       data=warc_record(0, b"\r\n\r\n").replace(
                                           b"resource", b"response").replace(
                                           b"WARC-Target-URI: http://example.org/\r\n", b""))),
        ("WARC records: " + W + ": not a readable WARC after 0 records: a 'response' record "
         "has no WARC-Target-URI",)),
    "wacz-compressed": (
        lambda ms, h: write_zip(change(ms, f"data/replay/{h.capture_id}.wacz", method=8)),
        ("replay WACZ: data/replay/{capture}.wacz is not a readable WACZ",
         "is compressed; a bundle stores it as it is")),
    "wacz-holds-encrypted-warc": (
        lambda ms, h: write_zip(change(ms, f"data/replay/{h.capture_id}.wacz",
                                       data=_encrypted_inside(
                                           ms[at(ms, f"{h.capture_id}.wacz")].data))),
        ("replay WACZ: data/replay/{capture}.wacz", "capture.warc.gz is encrypted")),
    "not-a-zip": (lambda ms, h: b"this is not a zip file at all\n" * 10,
                  ("error:", "is not a ZIP file, so not an evidence bundle")),
    "empty-file": (lambda ms, h: b"", ("error:", "is an empty file")),
    "truncated-zip": (lambda ms, h: write_zip(ms)[:-400],
                      ("error:", "is a truncated ZIP")),
}


def _huge_id(members: list[Member]) -> bytes:
    """bundle.json whose first capture id is 5 MB of escape sequences (as JSON escapes)."""
    index = json.loads(members[at(members, "data/bundle.json")].data)
    index["captures"][0]["id"] = "\x1b]0;x" * 1_000_000
    return json.dumps(index).encode()


def _encrypted_inside(wacz: bytes) -> bytes:
    """The WACZ again, its WARC member marked encrypted (the WACZ is Python-written, with
    data descriptors: rewritten with our writer)."""
    import io

    with zipfile.ZipFile(io.BytesIO(wacz)) as inner:
        members = [Member(i.filename.encode(), inner.read(i), method=i.compress_type,
                          flags=1 if i.filename.endswith(".warc.gz") else 0)
                   for i in inner.infolist()]
    return write_zip(members)


def verify(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["verify-bundle", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_bounded(out: str, err: str) -> None:
    """No traceback, no long line, no raw control character."""
    assert "Traceback" not in out + err
    for line in (out + err).splitlines():
        assert len(line) <= LINE_LIMIT, line[:200]
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", line), line[:200]


def test_the_honest_bundle_rewritten_by_our_writer_verifies(
    honest: Honest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The baseline of every case: our ZIP writer alone changes nothing the verifier
    objects to, so each case's failure is that case's change."""
    path = tmp_path / "same.zip"
    path.write_bytes(write_zip(members_of(honest.bundle)))
    code, out, _ = verify(capsys, path)
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"bundle {path}: verified")


@pytest.mark.hostile("bundles")
@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_bundle_fails_by_name_never_raises(
    case: str, honest: Honest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each crafted bundle: exit 1, a FAIL line naming the member and the problem (or one
    error line for what is no ZIP), bounded and escaped output, no traceback."""
    craft, expected = CASES[case]
    path = tmp_path / f"{case}.zip"
    path.write_bytes(craft(members_of(honest.bundle), honest))
    code, out, err = verify(capsys, path)
    assert code == 1, out + err
    assert_bounded(out, err)
    wanted = [text.format(capture=honest.capture_id) for text in expected]
    lines = (err.splitlines() if wanted[0] == "error:"
             else [line for line in out.splitlines() if line.startswith("FAIL  ")])
    assert any(all(text in line for text in wanted) for line in lines), \
        f"{wanted} in no line of:\n" + "\n".join(lines)


def test_names_that_differ_only_in_case_are_a_warning(
    honest: Honest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two members that collide on a case-insensitive disk: a WARN naming both."""
    members = members_of(honest.bundle)
    path = tmp_path / "case.zip"
    bagit = members[at(members, "/bagit.txt")]
    path.write_bytes(write_zip([*members, replace(bagit, name=bagit.name.upper())]))
    code, out, err = verify(capsys, path)
    assert code == 1
    assert_bounded(out, err)
    assert any(line.startswith("WARN  ZIP structure: members") and "bagit.txt" in line
               and "BAGIT.TXT" in line and "differ only in letter case" in line
               for line in out.splitlines()), out


# -- random byte flips -------------------------------------------------------------------------


def regions(bundle: Path) -> list[tuple[int, int, str]]:
    """(start, end, what a FAIL line must name) for every byte of the honest bundle:
    a member's bag path for its local header, data and descriptor; 'ZIP structure' for
    the central directory and end record."""
    with bundle.open("rb") as fp:
        found = audit(fp, bundle.stat().st_size, str(bundle))
    assert not found.problems, found.problems
    spans = [(e.offset, e.end, e.name.split("/", 1)[1]) for e in found.entries]
    last = max(end for _, end, _ in spans)
    return [*spans, (last, bundle.stat().st_size, "ZIP structure")]


@pytest.mark.hostile("bundle-flips")
@pytest.mark.parametrize("trial", range(hostile_suite.trials("bundle-flips", 20)))
def test_a_flipped_byte_is_caught_and_named(
    trial: int, honest: Honest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One byte of the honest bundle changed at a seeded random offset: exit 1 and a FAIL
    line naming the member whose bytes it was (or the ZIP structure), never a traceback."""
    rng = random.Random(hostile_suite.seed() * 1000 + trial)
    data = bytearray(honest.bundle.read_bytes())
    offset = rng.randrange(len(data))
    data[offset] ^= rng.randrange(1, 256)
    path = tmp_path / "flipped.zip"
    path.write_bytes(bytes(data))
    (name,) = [what for start, end, what in regions(honest.bundle) if start <= offset < end]
    code, out, err = verify(capsys, path)
    assert_bounded(out, err)
    failures = [line for line in out.splitlines() if line.startswith("FAIL  ")]
    assert code == 1, f"offset {offset} ({name}) not caught:\n{out}{err}"
    named = [line for line in failures + err.splitlines()
             if name in line or "ZIP structure" in line]
    assert named, f"offset {offset} ({name}) not named:\n{out}{err}"


# -- memory ------------------------------------------------------------------------------------

_PEAK = """
import sys
from archiver.cli import main
code = main(["verify-bundle", sys.argv[1]])
with open("/proc/self/status") as status:
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(f"peak-kib {peak}")
sys.exit(code)
"""


def _verify_peak(path: Path) -> tuple[int, str, float]:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True,
                          text=True, timeout=600, check=False)
    *lines, last = done.stdout.splitlines()
    assert last.startswith("peak-kib "), done.stdout[-2000:] + done.stderr[-2000:]
    return done.returncode, "\n".join(lines) + done.stderr, int(last.split()[1]) / 1024


@pytest.mark.hostile("bundles")
def test_a_warc_member_of_zeros_is_read_in_flat_memory(
    honest: Honest, tmp_path: Path
) -> None:
    """16 MiB of zeros as the capture's WARC: verify-bundle's peak memory stays within
    32 MiB of what the honest bundle needs, its FAIL line says why in a few hundred
    characters, and nothing raises."""
    path = tmp_path / "zeros.zip"
    warc = W.format(capture=honest.capture_id)
    path.write_bytes(write_zip(change(members_of(honest.bundle), warc, data=bytes(16 << 20))))
    code, _, honest_peak = _verify_peak(honest.bundle)
    assert code == 0
    code, out, peak = _verify_peak(path)
    assert code == 1
    assert_bounded(out, "")
    assert f"WARC records: {warc}: not a readable WARC after 0 records: a header line " \
        "longer than 65536 bytes" in out
    assert peak - honest_peak < 32, (peak, honest_peak)

"""The format-level bag writer, on its own: a bag the Library of Congress validator
accepts, hashed as it is written, signed over its tag manifest, refusing misuse."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import bagit
import pytest

from chain_of_custody.bundle import SIGNED_TAG_MANIFEST, TAG_SIGNATURE_FILE, BagWriter
from chain_of_custody.bundle.layout import decode_path, manifest_line, parse_tags
from chain_of_custody.digest import digest_bytes
from chain_of_custody.keys import SigningKey

WHEN = datetime(2026, 11, 24, 15, 3, 12, tzinfo=UTC)


def _write(tmp_path: Path, key: SigningKey) -> tuple[bytes, BagWriter]:
    (tmp_path / "a.bin").write_bytes(b"\x00" * 3000 + b"evidence")
    (tmp_path / "b.json").write_bytes(b'{"k": 1}\n')
    out = io.BytesIO()
    bag = BagWriter(out, root="evidence-test", when=WHEN)
    bag.add_tag_bytes("VERIFY.md", b"# how to check\n")
    bag.add_payload_file("data/captures/c1/a.bin", tmp_path / "a.bin")
    bag.add_payload_file("data/b.json", tmp_path / "b.json")
    assert bag.payload_oxum == "3017.2"
    digest = bag.finish([("Source-Organization", "test"), ("Bagging-Date", "2026-11-24")], key)
    data = out.getvalue()
    assert digest == digest_bytes(data)  # the ZIP was hashed as it was written
    return data, bag


def test_the_bag_is_valid_bagit_1_0_and_its_signature_covers_the_tag_manifest(
        tmp_path: Path) -> None:
    key = SigningKey.generate()
    data, _ = _write(tmp_path, key)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert names[0] == "evidence-test/bagit.txt"
        assert names[-1] == f"evidence-test/{TAG_SIGNATURE_FILE}"
        archive.extractall(tmp_path / "out")
    folder = tmp_path / "out" / "evidence-test"
    bag = bagit.Bag(str(folder))
    bag.validate()  # raises unless every manifest and the Oxum agree with the files
    assert bag.version_info == (1, 0)
    info = parse_tags((folder / "bag-info.txt").read_text())
    assert info["Payload-Oxum"] == ["3017.2"]
    assert list(info)[-1] == "Payload-Oxum"  # after the caller's fields, as documented
    tags = (folder / SIGNED_TAG_MANIFEST).read_text()
    for name in ("bagit.txt", "bag-info.txt", "VERIFY.md", "manifest-sha256.txt",
                 "manifest-sha512.txt"):
        sha = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert f"{sha}  {name}\n" in tags
    key.public.verify((folder / TAG_SIGNATURE_FILE).read_bytes(),
                      (folder / SIGNED_TAG_MANIFEST).read_bytes())


def test_the_writer_refuses_what_would_make_a_wrong_bag(tmp_path: Path) -> None:
    """Files it writes itself, payload outside data/, a name twice, a given Oxum."""
    (tmp_path / "f").write_bytes(b"x")
    bag = BagWriter(io.BytesIO(), root="r", when=WHEN)
    for path in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", SIGNED_TAG_MANIFEST,
                 TAG_SIGNATURE_FILE, "data/x.txt"):
        with pytest.raises(ValueError, match="cannot be added as a tag file"):
            bag.add_tag_bytes(path, b"")
    with pytest.raises(ValueError, match="is not under data/"):
        bag.add_payload_file("other/f", tmp_path / "f")
    bag.add_payload_file("data/f", tmp_path / "f")
    with pytest.raises(ValueError, match="already in the bag"):
        bag.add_payload_file("data/f", tmp_path / "f")
    with pytest.raises(ValueError, match="Payload-Oxum is computed by the writer"):
        bag.finish([("Payload-Oxum", "1.1")], SigningKey.generate())
    bag.abort()
    bag.abort()  # harmless twice


def test_manifest_lines_encode_what_bagit_must_escape() -> None:
    line = manifest_line("ab" * 32, "data/a%b\nc")
    assert line == f"{'ab' * 32}  data/a%25b%0Ac\n"
    assert decode_path(line.split("  ", 1)[1].rstrip("\n")) == "data/a%b\nc"

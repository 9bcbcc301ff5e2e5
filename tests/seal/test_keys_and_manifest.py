"""Signing keys at rest, and the capture manifest seal, judged by the real openssl."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from chain_of_custody.digest import Digest, digest_bytes
from chain_of_custody.errors import SigningKeyError, VerificationError
from chain_of_custody.keys import PublicKey, SigningKey
from chain_of_custody.manifest import (
    MANIFEST_TYPE,
    Artifact,
    build_manifest,
    canonical_json,
    sign_manifest,
    verify_manifest,
)


def _manifest(key: SigningKey, **overrides: object) -> dict[str, object]:
    warc = Artifact("capture.warc.gz", "warc", "application/warc", digest_bytes(b"warc bytes"))
    fields: dict[str, object] = {
        "capture_id": "c0ffee00-0000-4000-8000-000000000001",
        "requested": {"url": "https://example.org/p/1", "by": "analyst", "via": "cli"},
        "happened": {"started": "2026-11-22T10:00:00.000000Z"},
        "target": {"final_url": "https://example.org/p/1", "http_status": 200},
        "artifacts": [warc],
        "key_id": key.key_id,
    }
    fields.update(overrides)
    return build_manifest(**fields)  # type: ignore[arg-type]


def test_key_roundtrip_is_encrypted_and_private(tmp_path: Path) -> None:
    """The key file is encrypted PKCS#8, mode 0600, and loads back to the same key id."""
    key = SigningKey.generate()
    path = tmp_path / "keys" / "signing-key.pem"
    key.write_encrypted(path, b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert SigningKey.load_encrypted(path, b"correct horse").key_id == key.key_id
    assert key.key_id not in repr(key)[30:]  # repr shows a prefix only, never key material


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    SigningKey.generate().write_encrypted(path, b"right")
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        SigningKey.load_encrypted(path, b"wrong")


def test_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    SigningKey.generate().write_encrypted(path, b"pw")
    before = path.read_bytes()
    with pytest.raises(SigningKeyError, match="already exists"):
        SigningKey.generate().write_encrypted(path, b"pw")
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_missing_key_and_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="run 'archiver init'"):
        SigningKey.load_encrypted(tmp_path / "absent.pem", b"pw")
    with pytest.raises(SigningKeyError, match="empty passphrase"):
        SigningKey.generate().write_encrypted(tmp_path / "k.pem", b"")


def test_manifest_is_canonical_and_verifies(tmp_path: Path) -> None:
    key = SigningKey.generate()
    signed = sign_manifest(_manifest(key), key)
    parsed = verify_manifest(signed.canonical, signed.signature, {key.key_id: key.public})
    assert parsed["type"] == MANIFEST_TYPE
    assert canonical_json(parsed) == signed.canonical
    assert signed.digest == digest_bytes(signed.canonical)
    assert parsed["artifacts"][0] == {
        "name": "capture.warc.gz", "role": "warc", "media_type": "application/warc",
        "size": 10, "sha256": digest_bytes(b"warc bytes").sha256,
        "sha512": digest_bytes(b"warc bytes").sha512,
    }


def test_openssl_verifies_the_manifest_signature(tmp_path: Path) -> None:
    """`openssl pkeyutl -verify -pubin -rawin` accepts our signature over the file bytes."""
    key = SigningKey.generate()
    signed = sign_manifest(_manifest(key), key)
    (tmp_path / "manifest.json").write_bytes(signed.canonical)
    (tmp_path / "manifest.sig").write_bytes(signed.signature)
    (tmp_path / "key.pem").write_bytes(key.public.pem())
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "key.pem", "-rawin",
           "-in", "manifest.json", "-sigfile", "manifest.sig"]
    ok = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "Signature Verified Successfully" in ok.stdout
    # One flipped byte in the manifest: openssl must refuse it.
    tampered = bytearray(signed.canonical)
    tampered[tampered.index(b"example.org")] ^= 0x01
    (tmp_path / "manifest.json").write_bytes(bytes(tampered))
    bad = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "Signature Verification Failure" in bad.stdout + bad.stderr


def test_forged_signature_and_wrong_key_are_refused() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signed = sign_manifest(_manifest(key), key)
    keys = {key.key_id: key.public}
    forged = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    with pytest.raises(VerificationError, match="manifest signature is not valid"):
        verify_manifest(signed.canonical, forged, keys)
    # Signed by another key that claims to be ours: the signature does not verify.
    impostor = other.sign(signed.canonical)
    with pytest.raises(VerificationError, match="manifest signature is not valid"):
        verify_manifest(signed.canonical, impostor, keys)
    # Signed by a key the archive never had.
    foreign = sign_manifest(_manifest(other), other)
    with pytest.raises(VerificationError, match="signed by unknown key"):
        verify_manifest(foreign.canonical, foreign.signature, keys)


def test_non_canonical_or_foreign_documents_are_refused() -> None:
    key = SigningKey.generate()
    signed = sign_manifest(_manifest(key), key)
    keys = {key.key_id: key.public}
    pretty = json.dumps(json.loads(signed.canonical), indent=1).encode()
    with pytest.raises(VerificationError, match="not in RFC 8785 canonical form"):
        verify_manifest(pretty, key.sign(pretty), keys)
    other_type = canonical_json({"type": "something/else", "signer": {}})
    with pytest.raises(VerificationError, match="manifest type is not"):
        verify_manifest(other_type, key.sign(other_type), keys)
    with pytest.raises(VerificationError, match="not valid JSON"):
        verify_manifest(b"\xff\xfe", b"", keys)


def test_manifest_refuses_unknown_roles_duplicates_and_other_signers() -> None:
    key = SigningKey.generate()
    d = Digest("0" * 64, "0" * 128, 0)
    with pytest.raises(ValueError, match="unknown artifact role"):
        _manifest(key, artifacts=[Artifact("x", "selfie", "image/png", d)])
    with pytest.raises(ValueError, match="duplicate artifact names"):
        _manifest(key, artifacts=[Artifact("x", "warc", "a/b", d)] * 2)
    with pytest.raises(ValueError, match="does not name the signing key"):
        sign_manifest(_manifest(key), SigningKey.generate())


def test_public_key_pem_roundtrip() -> None:
    key = SigningKey.generate()
    assert PublicKey.from_pem(key.public.pem()) == key.public
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        PublicKey.from_pem(b"-----BEGIN NOTHING-----")

"""Signing keys at rest, and the capture manifest seal, judged by the real openssl."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chain_of_custody.digest import Digest, digest_bytes
from chain_of_custody.errors import SigningKeyError, VerificationError
from chain_of_custody.keys import PublicKey, SigningKey
from chain_of_custody.manifest import (
    MANIFEST_TYPE,
    Artifact,
    Manifest,
    ManifestArtifact,
    build_manifest,
    canonical_json,
    sign_manifest,
    verify_manifest,
)

_REQUESTED: dict[str, Any] = {
    "url": "https://example.org/p/1", "by": "analyst", "at": "2026-11-22T09:59:59.500000Z",
    "via": "cli", "source": None, "case": "Case 7", "note": None,
}
_HAPPENED: dict[str, Any] = {
    "started": "2026-11-22T10:00:00.000000Z", "ended": "2026-11-22T10:00:03.250000Z",
    "host": "collector-1", "software": {"evidence-archiver": "0.1.0", "python": "3.11.7"},
    "fetchers": {},
}
_TARGET: dict[str, Any] = {
    "final_url": "https://example.org/p/1", "http_status": 200, "peer_ip": "192.0.2.7",
    "tls_certificate_sha256": None, "redirects": [], "content_type": "text/html",
}


def _manifest(key: SigningKey, **overrides: object) -> Manifest:
    warc = Artifact("capture.warc.gz", "warc", "application/warc", digest_bytes(b"warc bytes"))
    fields: dict[str, object] = {
        "capture_id": "c0ffee00-0000-4000-8000-000000000001",
        "requested": _REQUESTED,
        "happened": _HAPPENED,
        "target": _TARGET,
        "artifacts": [warc],
        "key_id": key.key_id,
    }
    fields.update(overrides)
    return build_manifest(**fields)  # type: ignore[arg-type]


def _full_manifest(key: SigningKey) -> Manifest:
    """A manifest as the capture pipeline seals one: redirects, TLS, every kind of
    artifact, and the fetchers' own free-form reports (nested, with floats and nulls)."""
    artifacts = [
        Artifact("capture.warc.gz", "warc", "application/warc", digest_bytes(b"warc")),
        Artifact("clip-1.mp4", "media", "video/mp4", digest_bytes(b"video")),
        Artifact("clip-1.info.json", "metadata", "application/json", digest_bytes(b"{}")),
        Artifact("screenshot.png", "screenshot", "image/png", digest_bytes(b"png")),
        Artifact("page.pdf", "pdf", "application/pdf", digest_bytes(b"pdf")),
        Artifact("dom.html", "dom", "text/html", digest_bytes(b"<html>")),
        Artifact("provenance.json", "provenance", "application/json", digest_bytes(b"{ }")),
    ]
    media = {"outcome": {"status": "ok", "reason": None, "message": None},
             "yt_dlp_version": "2024.08.06", "format_selection": "bv*+ba/b",
             "items": [{"artifact": "clip-1.mp4", "kind": "video", "pdq": ["f" * 64],
                        "duration": 12.5, "protocols": ["https"], "title": "Ünïcödé ✓"}],
             "files": [], "problems": []}
    browser = {"outcome": {"status": "partial", "reason": "wall", "message": "a login wall"},
               "load_event": True, "scrolls": 3, "walls": ["login"], "not_recorded": 0}
    return build_manifest(
        capture_id="3f2a9c1e-0000-4000-8000-000000000002",
        requested={**_REQUESTED, "via": "watch", "source": "watch:12", "note": "weekly"},
        happened={**_HAPPENED, "software": {**_HAPPENED["software"], "yt-dlp": "2024.08.06",
                                            "chromium": "130.0.6723.31"},
                  "fetchers": {"media": media, "browser": browser}},
        target={**_TARGET, "final_url": "https://example.org/p/1/", "peer_ip": "2001:db8::1",
                "tls_certificate_sha256": "ab" * 32, "content_type": None,
                "redirects": [{"url": "https://example.org/p/1", "status": 301}]},
        artifacts=artifacts, key_id=key.key_id,
    )


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
    assert parsed.type == MANIFEST_TYPE
    assert parsed.canonical() == signed.canonical
    assert canonical_json(parsed.to_json()) == signed.canonical
    assert signed.digest == digest_bytes(signed.canonical)
    assert signed.manifest == parsed
    assert (signed.key_id, signed.algorithm) == (key.key_id, "ed25519")
    assert parsed.to_json()["artifacts"][0] == {
        "name": "capture.warc.gz", "role": "warc", "media_type": "application/warc",
        "size": 10, "sha256": digest_bytes(b"warc bytes").sha256,
        "sha512": digest_bytes(b"warc bytes").sha512,
    }
    assert parsed.artifacts[0].digest == digest_bytes(b"warc bytes")


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


# -- the Manifest model ------------------------------------------------------------------


def test_a_full_manifest_round_trips_byte_for_byte() -> None:
    """parse(canonical()) gives the same model, and its canonical() the same bytes: what a
    verifier reads is exactly what was signed, nothing dropped or added."""
    key = SigningKey.generate()
    manifest = _full_manifest(key)
    signed = sign_manifest(manifest, key)
    parsed = Manifest.parse(signed.canonical)
    assert parsed == manifest
    assert parsed.canonical() == signed.canonical
    assert json.loads(signed.canonical) == parsed.to_json()
    assert verify_manifest(signed.canonical, signed.signature, {key.key_id: key.public}) \
        == manifest
    assert parsed.requested.source == "watch:12"
    assert parsed.target.redirects[0].status == 301
    assert parsed.happened.software["chromium"] == "130.0.6723.31"
    assert parsed.happened.fetchers["media"]["items"][0]["duration"] == 12.5
    assert [a.role for a in parsed.artifacts] == [
        "warc", "media", "metadata", "screenshot", "pdf", "dom", "provenance"]


def test_artifact_lookup_returns_none_for_a_name_not_listed() -> None:
    key = SigningKey.generate()
    manifest = _full_manifest(key)
    found = manifest.artifact("clip-1.mp4")
    assert isinstance(found, ManifestArtifact)
    assert found.digest == digest_bytes(b"video")
    assert manifest.artifact("manifest.json") is None


def test_a_manifest_is_frozen_to_its_free_form_fetcher_reports() -> None:
    """Values are frozen all the way down: no caller can edit what was signed."""
    manifest = _full_manifest(SigningKey.generate())
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.capture_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.happened.fetchers["media"]["yt_dlp_version"] = "0"  # type: ignore[index]
    with pytest.raises(TypeError):
        manifest.happened.software["python"] = "2.7"  # type: ignore[index]


def _edited(edit: Callable[[dict[str, Any]], object]) -> bytes:
    """The canonical bytes of a full manifest after ``edit`` changed its document."""
    document = copy.deepcopy(_full_manifest(SigningKey.generate()).to_json())
    edit(document)
    return canonical_json(document)


def _duplicate_artifact(document: dict[str, Any]) -> None:
    document["artifacts"].append(dict(document["artifacts"][0], role="media"))


@pytest.mark.parametrize(("bytes_of", "message"), [
    (lambda: _edited(lambda d: d["requested"].update(extra="x")),
     "manifest has an unexpected field 'requested.extra'"),
    (lambda: _edited(lambda d: d.update(comment="x")),
     "manifest has an unexpected field 'comment'"),
    (lambda: _edited(lambda d: d["artifacts"][1].update(title="x")),
     "manifest has an unexpected field 'artifacts[1].title'"),
    (lambda: _edited(lambda d: d["target"].pop("peer_ip")),
     "manifest lacks the field 'target.peer_ip'"),
    (lambda: _edited(lambda d: d.pop("signer")),
     "manifest lacks the field 'signer'"),
    (lambda: _edited(lambda d: d["target"].update(http_status="200")),
     "manifest field 'target.http_status' must be an integer, not a string"),
    (lambda: _edited(lambda d: d["target"].update(http_status=True)),
     "manifest field 'target.http_status' must be an integer, not a boolean"),
    (lambda: _edited(lambda d: d["requested"].update(case=7)),
     "manifest field 'requested.case' must be a string or null, not an integer"),
    (lambda: _edited(lambda d: d["target"].update(redirects={})),
     "manifest field 'target.redirects' must be an array, not an object"),
    (lambda: _edited(lambda d: d["happened"]["fetchers"].update(media=[])),
     "manifest field 'happened.fetchers.media' must be an object, not an array"),
    (lambda: _edited(lambda d: d["happened"]["software"].update(python=3.11)),
     "manifest field 'happened.software.python' must be a string, not a number"),
    (lambda: _edited(lambda d: d["artifacts"][0].update(size=-1)),
     "manifest field 'artifacts[0].size' must not be negative"),
    (lambda: _edited(lambda d: d["artifacts"][0].update(sha256="AB" * 32)),
     "manifest field 'artifacts[0].sha256' must be 64 lower-case hex digits"),
    (lambda: _edited(lambda d: d["signer"].update(key_id="k1")),
     "manifest field 'signer.key_id' must be 64 lower-case hex digits"),
    (lambda: _edited(_duplicate_artifact),
     "manifest lists the artifact 'capture.warc.gz' twice"),
    (lambda: _edited(lambda d: d["artifacts"][0].update(role="selfie")),
     "manifest artifact 'capture.warc.gz' has an unknown role 'selfie'"),
    (lambda: _edited(lambda d: d.update(type="evidence-archiver/capture-manifest/v2")),
     "manifest type is not evidence-archiver/capture-manifest/v1"),
    (lambda: json.dumps(_full_manifest(SigningKey.generate()).to_json(), indent=1).encode(),
     "manifest bytes are not in RFC 8785 canonical form"),
    (lambda: _edited(lambda d: None).replace(b'{"artifacts"', b'{"type":"x","artifacts"', 1),
     "manifest is not valid JSON (the member 'type' appears twice in one object)"),
    (lambda: b"[1, 2]", "manifest is not a JSON object"),
    (lambda: b'{"type": NaN}',
     "manifest is not valid JSON (NaN is not a JSON number)"),
], ids=["extra", "extra-top-level", "extra-in-artifact", "missing", "missing-object",
        "wrong-type", "bool-for-int", "wrong-optional", "wrong-array", "wrong-fetcher",
        "wrong-software", "negative-size", "upper-case-digest", "bad-key-id",
        "duplicate-artifact", "unknown-role", "wrong-type-string", "not-canonical",
        "duplicate-member", "not-an-object", "nan"])
def test_parse_names_what_is_wrong(bytes_of: Callable[[], bytes], message: str) -> None:
    """Each malformed manifest is refused with the one VerificationError naming the
    field (by its path) and the problem."""
    with pytest.raises(VerificationError) as refused:
        Manifest.parse(bytes_of())
    assert str(refused.value) == message


def test_not_json_is_refused_with_the_parser_s_reason() -> None:
    with pytest.raises(VerificationError, match=r"^manifest is not valid JSON \("):
        Manifest.parse(b"\xff\xfe")


def test_a_validly_signed_manifest_of_the_wrong_shape_is_refused_after_its_signature() -> None:
    """verify_manifest checks the signature first (a tampered file is reported as
    tampered), then reads the document as strictly as parse."""
    key = SigningKey.generate()
    keys = {key.key_id: key.public}
    odd = _edited(lambda d: (d["target"].pop("content_type"),
                             d["signer"].update(key_id=key.key_id)))
    with pytest.raises(VerificationError,
                       match=r"^manifest lacks the field 'target\.content_type'$"):
        verify_manifest(odd, key.sign(odd), keys)
    with pytest.raises(VerificationError, match="manifest signature is not valid"):
        verify_manifest(odd, key.sign(odd + b" "), keys)


def test_build_manifest_refuses_a_mapping_of_the_wrong_shape() -> None:
    """A programming error in the pipeline (a field forgotten) is a ValueError naming it,
    before anything is signed."""
    key = SigningKey.generate()
    target = {k: v for k, v in _TARGET.items() if k != "redirects"}
    with pytest.raises(ValueError, match=r"^manifest lacks the field 'target\.redirects'$"):
        _manifest(key, target=target)


def test_sign_manifest_reads_an_edited_document_as_a_manifest() -> None:
    """A parsed document someone edited (a forger in a test) is signed once it reads as a
    manifest; one that does not is refused."""
    key = SigningKey.generate()
    document = _full_manifest(key).to_json()
    document["target"]["http_status"] = 404
    signed = sign_manifest(document, key)
    assert signed.manifest.target.http_status == 404
    assert signed.canonical == canonical_json(document)
    del document["target"]
    with pytest.raises(VerificationError, match="lacks the field 'target'"):
        sign_manifest(document, key)


def test_public_key_pem_roundtrip() -> None:
    key = SigningKey.generate()
    assert PublicKey.from_pem(key.public.pem()) == key.public
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        PublicKey.from_pem(b"-----BEGIN NOTHING-----")

"""Capture manifests: what was asked, what happened, what was kept, sealed by a signature.

The manifest is RFC 8785 (JCS) canonical JSON, so the signed bytes are the file itself:
``openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in manifest.json -sigfile
manifest.sig`` checks it with no tool of ours.

Domain separation: the signed bytes begin with the manifest's own ``type`` field
(``evidence-archiver/capture-manifest/v1``) and name the signing key, so a manifest
signature can never be replayed as a ledger checkpoint signature (a checkpoint is a
C2SP signed note, plain text that cannot parse as a JSON object) or vice versa, and a
signature cannot be re-attributed to another key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from chain_of_custody.digest import Digest, digest_bytes
from chain_of_custody.errors import VerificationError
from chain_of_custody.keys import PublicKey, SigningKey

MANIFEST_TYPE = "evidence-archiver/capture-manifest/v1"
ROLES = frozenset(
    {"warc", "media", "metadata", "screenshot", "pdf", "dom", "certificate", "provenance"}
)


@dataclass(frozen=True, slots=True)
class Artifact:
    """One sealed file of a capture."""

    name: str
    role: str
    media_type: str
    digest: Digest

    def as_manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "media_type": self.media_type,
            "size": self.digest.size,
            "sha256": self.digest.sha256,
            "sha512": self.digest.sha512,
        }


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON-compatible value."""
    return rfc8785.dumps(value)


def build_manifest(
    *,
    capture_id: str,
    requested: Mapping[str, Any],
    happened: Mapping[str, Any],
    target: Mapping[str, Any],
    artifacts: Sequence[Artifact],
    key_id: str,
    algorithm: str = "ed25519",
) -> dict[str, Any]:
    """Assemble the manifest document. Raises ``ValueError`` on an unknown role or a
    duplicate artifact name (programming errors, not user input)."""
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate artifact names in {names}")
    for artifact in artifacts:
        if artifact.role not in ROLES:
            raise ValueError(f"unknown artifact role {artifact.role!r}")
    return {
        "type": MANIFEST_TYPE,
        "capture_id": capture_id,
        "requested": dict(requested),
        "happened": dict(happened),
        "target": dict(target),
        "artifacts": [a.as_manifest_entry() for a in artifacts],
        "signer": {"algorithm": algorithm, "key_id": key_id},
    }


@dataclass(frozen=True)
class SignedManifest:
    """Canonical manifest bytes and the detached Ed25519 signature over exactly them."""

    canonical: bytes
    signature: bytes
    key_id: str
    algorithm: str

    @property
    def digest(self) -> Digest:
        return digest_bytes(self.canonical)


def sign_manifest(manifest: Mapping[str, Any], key: SigningKey) -> SignedManifest:
    """Canonicalise and sign. Raises ``ValueError`` if the manifest names another key."""
    signer = manifest.get("signer", {})
    if signer.get("key_id") != key.key_id or signer.get("algorithm") != key.algorithm:
        raise ValueError("manifest 'signer' does not name the signing key")
    canonical = canonical_json(manifest)
    return SignedManifest(canonical, key.sign(canonical), key.key_id, key.algorithm)


def verify_manifest(
    canonical: bytes, signature: bytes, keys: Mapping[str, PublicKey]
) -> dict[str, Any]:
    """Check a manifest and its signature; return the parsed manifest.

    ``keys`` maps key id to public key (the archive's key history). Raises
    :class:`VerificationError` naming the problem: not JSON, not canonical, wrong type,
    unknown signer, bad signature.
    """
    try:
        manifest = json.loads(canonical)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError("manifest is not valid JSON") from exc
    if not isinstance(manifest, dict) or manifest.get("type") != MANIFEST_TYPE:
        raise VerificationError(f"manifest type is not {MANIFEST_TYPE}")
    if canonical_json(manifest) != canonical:
        raise VerificationError("manifest bytes are not in RFC 8785 canonical form")
    signer = manifest.get("signer")
    if not isinstance(signer, dict) or signer.get("algorithm") != "ed25519":
        raise VerificationError("manifest names no ed25519 signer")
    key_id = signer.get("key_id")
    public = keys.get(key_id) if isinstance(key_id, str) else None
    if public is None:
        raise VerificationError(f"manifest signed by unknown key {key_id}")
    try:
        public.verify(signature, canonical)
    except VerificationError as exc:
        raise VerificationError(f"manifest signature is not valid: {exc}") from exc
    return manifest

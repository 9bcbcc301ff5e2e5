"""Chain of custody: digests, canonical manifests, signatures, the Merkle ledger, bundles.

This package is a library. It never imports ``archiver`` or ``storage``; ``archiver``
wires it together with the stores.

The names below are its public surface. They are loaded on first use (PEP 562), so that
``import chain_of_custody.digest`` does not pull in SQLAlchemy, ``cryptography.x509`` or
the RFC 3161 client: reading commands must start in a blink. Everything else lives in
its module (``chain_of_custody.merkle``, ``chain_of_custody.bundle.layout``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chain_of_custody.bundle import BagWriter, BundleReport, verify_bundle
    from chain_of_custody.digest import Digest, Hasher, HashingWriter, digest_bytes, digest_stream
    from chain_of_custody.errors import (
        BundleError,
        CustodyError,
        LedgerError,
        LedgerIntegrityError,
        ProofError,
        SigningKeyError,
        VerificationError,
    )
    from chain_of_custody.keys import PublicKey, SigningKey
    from chain_of_custody.ledger import KEY_ACTIONS, Checkpoint, Ledger, LedgerEntry
    from chain_of_custody.manifest import (
        Artifact,
        Manifest,
        ManifestArtifact,
        SignedManifest,
        build_manifest,
        sign_manifest,
        verify_manifest,
    )
    from chain_of_custody.times import rfc3339

_HOMES = {
    "chain_of_custody.bundle": ("BagWriter", "BundleReport", "verify_bundle"),
    "chain_of_custody.digest": ("Digest", "Hasher", "HashingWriter", "digest_bytes",
                                "digest_stream"),
    "chain_of_custody.errors": ("BundleError", "CustodyError", "LedgerError",
                                "LedgerIntegrityError", "ProofError", "SigningKeyError",
                                "VerificationError"),
    "chain_of_custody.keys": ("PublicKey", "SigningKey"),
    "chain_of_custody.ledger": ("KEY_ACTIONS", "Checkpoint", "Ledger", "LedgerEntry"),
    "chain_of_custody.manifest": ("Artifact", "Manifest", "ManifestArtifact", "SignedManifest",
                                  "build_manifest", "sign_manifest", "verify_manifest"),
    "chain_of_custody.times": ("rfc3339",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        # Not ours: lets ``from chain_of_custody import merkle`` import the submodule.
        raise AttributeError(f"module 'chain_of_custody' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})


__all__ = [
    "KEY_ACTIONS",
    "Artifact",
    "BagWriter",
    "BundleError",
    "BundleReport",
    "Checkpoint",
    "CustodyError",
    "Digest",
    "Hasher",
    "HashingWriter",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "LedgerIntegrityError",
    "Manifest",
    "ManifestArtifact",
    "ProofError",
    "PublicKey",
    "SignedManifest",
    "SigningKey",
    "SigningKeyError",
    "VerificationError",
    "build_manifest",
    "digest_bytes",
    "digest_stream",
    "rfc3339",
    "sign_manifest",
    "verify_bundle",
    "verify_manifest",
]

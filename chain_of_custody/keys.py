"""Ed25519 signing keys: created, stored encrypted at rest, loaded, and used to sign.

Threat model notes:

* The private key is written only as encrypted PKCS#8 PEM (``BestAvailableEncryption``:
  scrypt + AES-256-CBC in current ``cryptography``), mode 0600, published atomically.
  A stolen disk without the passphrase yields no signing power.
* The passphrase is handled as ``bytes`` here and never logged or put in an exception.
* A key is named by its *key id*: the lower-case hex SHA-256 of the raw 32-byte public
  key. Every signature we emit is stored next to the key id and the algorithm name, so
  an old signature still names the key that made it after a rotation.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from chain_of_custody.errors import SigningKeyError, VerificationError

ALGORITHM = "ed25519"


def key_id_for(public_raw: bytes) -> str:
    """The key id of a raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_raw).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key that can check signatures."""

    raw: bytes

    @property
    def key_id(self) -> str:
        return key_id_for(self.raw)

    @property
    def algorithm(self) -> str:
        return ALGORITHM

    def pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, as ``openssl pkeyutl -verify -pubin`` reads it."""
        return self._key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`VerificationError` unless ``signature`` is ours over ``data``."""
        try:
            self._key().verify(signature, data)
        except InvalidSignature as exc:
            raise VerificationError(
                f"signature does not verify with key {self.key_id[:16]}…"
            ) from exc

    def _key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.raw)

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Load a SubjectPublicKeyInfo PEM; raise :class:`SigningKeyError` if not Ed25519."""
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError("not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError("public key is not an Ed25519 key")
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


class SigningKey:
    """A loaded Ed25519 private key. Not a value type: it holds a secret."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @property
    def algorithm(self) -> str:
        return ALGORITHM

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:  # never show key material
        return f"SigningKey(key_id={self.key_id[:16]}…)"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def write_encrypted(self, path: Path, passphrase: bytes) -> None:
        """Write the key as encrypted PKCS#8 PEM, mode 0600, atomically; never overwrite.

        Raises :class:`SigningKeyError` if the passphrase is empty or ``path`` exists.
        """
        if not passphrase:
            raise SigningKeyError("refusing to store the signing key with an empty passphrase")
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # keys/: owner only
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # fails if path exists: never replace a key
            except FileExistsError as exc:
                raise SigningKeyError(f"a signing key already exists at {path}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load_encrypted(cls, path: Path, passphrase: bytes) -> SigningKey:
        """Load and decrypt a key written by :meth:`write_encrypted`.

        Raises :class:`SigningKeyError` naming the problem: missing file, wrong
        passphrase, not an Ed25519 key.
        """
        try:
            pem = path.read_bytes()
        except FileNotFoundError as exc:
            raise SigningKeyError(f"no signing key at {path}; run 'archiver init'") from exc
        except OSError as exc:
            raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except TypeError as exc:
            raise SigningKeyError(f"signing key {path} is not encrypted; refusing it") from exc
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(
                f"cannot decrypt signing key {path}: wrong passphrase "
                "(check ARCHIVER_SIGNING__PASSPHRASE or signing.passphrase_file)"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
        return cls(key)

"""The archive's web secret (``<home>/secrets/web.key``) and what is derived from it.

32 random bytes, created 0600 (in ``secrets/``, 0700) by ``archiver init``, or on first
use by an archive initialised before it existed. Keys are derived from it with HKDF, one
per purpose (``info``), never used directly: today the key that encrypts TOTP secrets at
rest (AES-256-GCM, bound to the user's id so a ciphertext cannot be moved to another
account); the web application derives its own.

Threat model: a copy of the database alone (a backup, a PostgreSQL dump) must not give
anyone the second factors; that takes the home directory's secret file too.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from archiver.settings import Settings

SECRET_BYTES = 32
_TOTP_INFO = b"evidence-archiver/totp-secret/v1"
_TOTP_PREFIX = "v1:"


def web_secret_path(settings: Settings) -> Path:
    return settings.home_dir / "secrets" / "web.key"


def web_secret(settings: Settings) -> bytes:
    """The archive's web secret, created (0600, in a 0700 ``secrets/``) if missing.

    Raises :class:`ArchiverError` naming the file when it cannot be read or created, or
    does not hold exactly 32 bytes.
    """
    path = web_secret_path(settings)
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ArchiverError(f"cannot create the web secret {path}: {exc.strerror or exc}") \
            from exc
    else:
        # Written whole before anyone can read it: two processes racing here both use
        # what the first wrote (the second's O_EXCL fails and it reads).
        try:
            os.write(fd, os.urandom(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiverError(f"cannot read the web secret {path}: {exc.strerror or exc}") \
            from exc
    if len(data) != SECRET_BYTES:
        raise ArchiverError(
            f"the web secret {path} holds {len(data)} bytes, not {SECRET_BYTES}: restore it "
            "from backup (enrolled second factors need it)")
    return data


def derive_key(secret: bytes, info: bytes, *, length: int = 32) -> bytes:
    """A key for one purpose (``info``), derived from the web secret with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def encrypt_totp_secret(secret: bytes, user_id: int, totp_secret: str) -> str:
    """``totp_secret`` encrypted for storage in ``users.totp_secret``."""
    nonce = os.urandom(12)
    sealed = AESGCM(derive_key(secret, _TOTP_INFO)).encrypt(
        nonce, totp_secret.encode("ascii"), _aad(user_id))
    return _TOTP_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_totp_secret(secret: bytes, user_id: int, stored: str) -> str:
    """The TOTP secret of ``users.totp_secret``. Raises :class:`ArchiverError` when it
    does not decrypt (another web secret, a row copied from another user)."""
    problem = (f"the TOTP secret of user #{user_id} does not decrypt with this archive's "
               "web secret (secrets/web.key replaced?); reset it with 'archiver user mfa "
               "reset'")
    if not stored.startswith(_TOTP_PREFIX):
        raise ArchiverError(problem)
    try:
        raw = base64.urlsafe_b64decode(stored[len(_TOTP_PREFIX):])
        plain = AESGCM(derive_key(secret, _TOTP_INFO)).decrypt(raw[:12], raw[12:],
                                                               _aad(user_id))
    except (InvalidTag, ValueError) as exc:
        raise ArchiverError(problem) from exc
    return plain.decode("ascii")


def _aad(user_id: int) -> bytes:
    return f"users.totp_secret/{user_id}".encode("ascii")

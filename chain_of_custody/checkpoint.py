"""Checkpoints: the ledger's signed tree heads, as C2SP signed notes.

A checkpoint (c2sp.org/tlog-checkpoint) is three lines of text::

    <origin>
    <tree size, decimal>
    <root hash, base64>

signed as a note (c2sp.org/signed-note): the text, a blank line, then one line per
signature ``— <key name> base64(key id (4 bytes) || Ed25519 signature)``, where the key
id is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``. The key name is the
origin. Any implementation of those two specifications can check our checkpoints, and
the signed text cannot be mistaken for a capture manifest (JSON) or vice versa.

Threat model notes: a note is trusted only through a signature by a key the verifier
already holds; signatures by other keys are ignored, as the spec requires, and a note
without a verifying signature from the expected key is refused. The origin is checked
so that a checkpoint of another archive (even one signed with a shared key) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from chain_of_custody.errors import VerificationError
from chain_of_custody.keys import PublicKey, SigningKey
from chain_of_custody.merkle import HASH_SIZE

ED25519_SIGNATURE_TYPE = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_NOTE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class TreeHead:
    """What a checkpoint asserts: the tree of ``size`` leaves under ``origin`` has
    ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes


def note_key_hash(name: str, key: PublicKey) -> bytes:
    """The 4-byte signed-note key id of an Ed25519 key under ``name``."""
    return hashlib.sha256(
        name.encode("utf-8") + b"\n" + ED25519_SIGNATURE_TYPE + key.raw
    ).digest()[:4]


def verifier_key(name: str, key: PublicKey) -> str:
    """The signed-note verifier key string ``<name>+<hex key id>+<base64(0x01 || key)>``,
    the form other tools (e.g. Go's ``golang.org/x/mod/sumdb/note``) take."""
    encoded = base64.b64encode(ED25519_SIGNATURE_TYPE + key.raw).decode("ascii")
    return f"{name}+{note_key_hash(name, key).hex()}+{encoded}"


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise ValueError(f"checkpoint origin {origin!r} must be non-empty, with no spaces or '+'")


def checkpoint_text(origin: str, size: int, root_hash: bytes) -> str:
    """The checkpoint body (ends in a newline)."""
    _check_origin(origin)
    if size < 0 or len(root_hash) != HASH_SIZE:
        raise ValueError("a checkpoint needs a size >= 0 and a 32-byte root hash")
    return f"{origin}\n{size}\n{base64.b64encode(root_hash).decode('ascii')}\n"


def sign_note(text: str, key: SigningKey, name: str) -> str:
    """``text`` signed by ``key`` under key name ``name``, as a complete signed note."""
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    signature = key.sign(text.encode("utf-8"))
    blob = base64.b64encode(note_key_hash(name, key.public) + signature).decode("ascii")
    return f"{text}\n{SIGNATURE_PREFIX}{name} {blob}\n"


def sign_checkpoint(origin: str, size: int, root_hash: bytes, key: SigningKey) -> str:
    return sign_note(checkpoint_text(origin, size, root_hash), key, origin)


def verify_note(note: str, origin: str, key: PublicKey) -> TreeHead:
    """Check a signed checkpoint; return what it asserts.

    Raises :class:`VerificationError` naming the problem: malformed note, wrong origin,
    no signature by ``key`` under the origin's name, a signature that does not verify.
    """
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise VerificationError("checkpoint note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise VerificationError("checkpoint note contains control characters")
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise VerificationError("checkpoint note has no signature block")
    text += "\n"
    head = parse_checkpoint(text)
    if head.origin != origin:
        raise VerificationError(
            f"checkpoint is for origin {head.origin!r}, expected {origin!r}"
        )
    wanted = note_key_hash(origin, key)
    found = False
    for line in signatures[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"malformed checkpoint signature line {line!r}")
        name, _, blob = line[len(SIGNATURE_PREFIX):].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise VerificationError("checkpoint signature is not valid base64") from exc
        if name != origin or raw[:4] != wanted:
            continue  # another witness's or key's signature: not ours to judge
        found = True
        try:
            key.verify(raw[4:], text.encode("utf-8"))
        except VerificationError as exc:
            raise VerificationError(
                f"checkpoint signature by key {key.key_id[:16]}… does not verify"
            ) from exc
    if not found:
        raise VerificationError(
            f"checkpoint carries no signature by key {key.key_id[:16]}… for {origin!r}"
        )
    return head


def parse_checkpoint(text: str) -> TreeHead:
    """Parse checkpoint text (origin, size, root, optional extension lines).

    Raises :class:`VerificationError` when it is malformed. Does not check signatures.
    """
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise VerificationError("checkpoint text must have origin, size and root lines")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not origin:
        raise VerificationError("checkpoint origin is empty")
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise VerificationError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError("checkpoint root hash is not valid base64") from exc
    if len(root) != HASH_SIZE:
        raise VerificationError("checkpoint root hash is not 32 bytes")
    return TreeHead(origin, int(size_text), root)


__all__ = [
    "TreeHead",
    "checkpoint_text",
    "note_key_hash",
    "parse_checkpoint",
    "sign_checkpoint",
    "sign_note",
    "verifier_key",
    "verify_note",
]

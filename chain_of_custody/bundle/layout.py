"""The layout of an evidence bundle: where each file is, and the formats of its tag files.

A bundle is a BagIt 1.0 bag (RFC 8493) serialised as a ZIP holding one folder::

    <bag>/bagit.txt  bag-info.txt  VERIFY.md
    <bag>/manifest-sha256.txt  manifest-sha512.txt         every payload file (data/...)
    <bag>/tagmanifest-sha256.txt  tagmanifest-sha512.txt   every other file, manifests too
    <bag>/tagmanifest-sha256.txt.sig                       Ed25519 over tagmanifest-sha256.txt
    <bag>/data/bundle.json                                 what the bundle holds, and why
    <bag>/data/captures/<capture id>/<artifact>            every artifact; manifest.json/.sig
    <bag>/data/replay/<capture id>.wacz                    the capture's WARC(s) for replay
    <bag>/data/custody/checkpoint.note                     signed checkpoint (C2SP signed note)
    <bag>/data/custody/entries/<seq>.json                  each ledger entry's leaf (RFC 8785)
    <bag>/data/custody/proofs/<seq>.json                   its inclusion proof (RFC 9162)
    <bag>/data/custody/timestamps/<n>.tsr, <n>-ca.pem      RFC 3161 tokens of the checkpoint
    <bag>/data/keys/<key id>.pem, history.json             the archive's public keys
    <bag>/data/report/custody-report.html, .pdf            the custody report, for people

Paths here are relative to the bag's folder. The writer and the verifier both derive
every path from ids with the functions below, so neither can disagree with the other,
and ``bundle.json`` cannot point a capture's manifest at another capture's file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chain_of_custody.errors import VerificationError

BUNDLE_TYPE = "evidence-archiver/bundle/v1"
PROOF_TYPE = "evidence-archiver/inclusion-proof/v1"
KEY_HISTORY_TYPE = "evidence-archiver/key-history/v1"
BAGIT_VERSION = "1.0"
ALGORITHMS = ("sha256", "sha512")
PAYLOAD_DIR = "data/"
BAGIT_FILE = "bagit.txt"
BAG_INFO_FILE = "bag-info.txt"
SIGNED_TAG_MANIFEST = "tagmanifest-sha256.txt"
TAG_SIGNATURE_FILE = "tagmanifest-sha256.txt.sig"
"""The archive's Ed25519 signature over :data:`SIGNED_TAG_MANIFEST` (not to be confused
with a capture's ``manifest.sig``, :data:`chain_of_custody.manifest.TAG_SIGNATURE_FILE`)."""
VERIFY_FILE = "VERIFY.md"
INDEX_FILE = "data/bundle.json"
CHECKPOINT_FILE = "data/custody/checkpoint.note"
KEY_HISTORY_FILE = "data/keys/history.json"
REPORT_HTML = "data/report/custody-report.html"
REPORT_PDF = "data/report/custody-report.pdf"


def payload_manifest(algorithm: str) -> str:
    """``manifest-<algorithm>.txt``: the digest of every payload file."""
    return f"manifest-{algorithm}.txt"


def tag_manifest(algorithm: str) -> str:
    """``tagmanifest-<algorithm>.txt``: the digest of every tag file, manifests included."""
    return f"tagmanifest-{algorithm}.txt"


def capture_dir(capture_id: str) -> str:
    return f"data/captures/{capture_id}"


def replay_path(capture_id: str) -> str:
    return f"data/replay/{capture_id}.wacz"


def entry_path(seq: int) -> str:
    return f"data/custody/entries/{seq}.json"


def proof_path(seq: int) -> str:
    return f"data/custody/proofs/{seq}.json"


def token_paths(number: int) -> tuple[str, str]:
    """(token, CA certificates) of the ``number``-th (1-based) timestamp token."""
    return (f"data/custody/timestamps/{number}.tsr",
            f"data/custody/timestamps/{number}-ca.pem")


def key_path(key_id: str) -> str:
    return f"data/keys/{key_id}.pem"


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\%]")


def check_file_name(name: str) -> str:
    """Return ``name`` if it can be one path component of a bag, else raise ValueError.

    Refused: empty, ``.``/``..``, leading dot, separators, control characters, and ``%``
    (which BagIt manifests would have to escape, and not every validator un-escapes).
    """
    if not name or name.startswith(".") or _UNSAFE_NAME.search(name) or len(name) > 200:
        raise ValueError(f"{name!r} cannot be a file name in an evidence bundle")
    return name


# -- manifest lines and tag files ---------------------------------------------------------


def manifest_line(digest_hex: str, path: str) -> str:
    """One manifest line: digest, two spaces, path (so ``sha256sum -c`` reads it too)."""
    encoded = path.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"{digest_hex}  {encoded}\n"


def decode_path(text: str) -> str:
    """The path of a manifest line, its ``%0D``, ``%0A`` and ``%25`` decoded (RFC 8493
    §2.1.3): the inverse of the encoding in :func:`manifest_line`."""
    return re.sub(r"%(0D|0A|25)", lambda m: {"0D": "\r", "0A": "\n", "25": "%"}[m.group(1)],
                  text, flags=re.IGNORECASE)


def tag_text(fields: Sequence[tuple[str, str]]) -> str:
    """A BagIt tag file (``bag-info.txt``): ``Label: value`` lines, values on one line."""
    lines = []
    for label, value in fields:
        flat = " ".join(str(value).split())
        lines.append(f"{label}: {flat}\n")
    return "".join(lines)


def parse_tags(text: str) -> dict[str, list[str]]:
    """Tag file labels and values (continuation lines, which begin with whitespace,
    are joined to the value before them). Raises :class:`VerificationError` on a line
    that is neither."""
    tags: dict[str, list[str]] = {}
    last: str | None = None
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and last is not None:
            tags[last][-1] += " " + line.strip()
            continue
        label, sep, value = line.partition(":")
        if not sep:
            raise VerificationError(f"malformed tag line {line[:80]!r}")
        last = label.strip()
        tags.setdefault(last, []).append(value.strip())
    return tags

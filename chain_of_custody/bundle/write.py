"""Writing a bag: a BagIt 1.0 ZIP streamed to a file, hashed as it goes, then signed.

:class:`BagWriter` knows the format, nothing of what a bag is *for*: the caller (the
case export) decides which files go in and what ``bag-info.txt`` says; the writer puts
``bagit.txt`` first, streams every file into the ZIP in 1 MiB chunks while computing its
SHA-256 and SHA-512, and at :meth:`BagWriter.finish` writes the payload manifests,
``bag-info.txt`` (with the ``Payload-Oxum`` only it knows), the tag manifests and the
Ed25519 signature over ``tagmanifest-sha256.txt``. Memory stays flat whatever the size.

Why not ``bagit.make_bag``: that function changes the process's working directory
(unsafe in a daemon whose threads resolve relative paths), hashes every payload file a
second time, and declares BagIt 0.97. The bag below is BagIt 1.0; the Library of
Congress validator (``bagit.py --validate``) is the tests' independent judge of it.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, cast

from chain_of_custody.bundle.layout import (
    ALGORITHMS,
    BAG_INFO_FILE,
    BAGIT_FILE,
    BAGIT_VERSION,
    PAYLOAD_DIR,
    SIGNED_TAG_MANIFEST,
    TAG_SIGNATURE_FILE,
    manifest_line,
    payload_manifest,
    tag_manifest,
    tag_text,
)
from chain_of_custody.digest import CHUNK_SIZE, Digest, Hasher, HashingWriter, digest_bytes
from chain_of_custody.keys import SigningKey

_DEFLATE_SUFFIXES = (".json", ".txt", ".md", ".html", ".pem", ".note", ".jsonl")
_DEFLATE_BELOW = 64 * 1024 * 1024
_WRITER_FILES = frozenset({
    BAGIT_FILE, BAG_INFO_FILE, TAG_SIGNATURE_FILE,
    *map(payload_manifest, ALGORITHMS), *map(tag_manifest, ALGORITHMS),
})
_OXUM = "Payload-Oxum"


class BagWriter:
    """Writes one bag, as a ZIP of one folder ``root``, into ``out``.

    ``out`` is only ever written to (never seeked or read), so it may be a pipe or a
    file being hashed; the ZIP's own digest is returned by :meth:`finish`. Add tag files
    (outside ``data/``) and payload files (under ``data/``) in the order they should
    appear, then call :meth:`finish` once; on any failure call :meth:`abort` and discard
    what was written. Paths are relative to the bag's folder.
    """

    def __init__(self, out: BinaryIO, *, root: str, when: datetime) -> None:
        # HashingWriter has write/flush/tell but no seek: zipfile then streams (data
        # descriptors), and every byte of the ZIP passes through the hash exactly once.
        self._out = HashingWriter(out)
        self._zip = zipfile.ZipFile(cast(IO[bytes], self._out), "w", allowZip64=True)
        self._root = root
        self._date_time = when.timetuple()[:6]
        self._payload: dict[str, Digest] = {}
        self._tags: dict[str, Digest] = {}
        self._finished = False
        declaration = tag_text([("BagIt-Version", BAGIT_VERSION),
                                ("Tag-File-Character-Encoding", "UTF-8")])
        self._tags[BAGIT_FILE] = self._add_bytes(BAGIT_FILE, declaration.encode("utf-8"))

    @property
    def payload_oxum(self) -> str:
        """``<octets>.<files>`` of the payload added so far."""
        return f"{sum(d.size for d in self._payload.values())}.{len(self._payload)}"

    def add_tag_bytes(self, path: str, data: bytes) -> Digest:
        """A tag file (such as ``VERIFY.md``), listed in the tag manifests.

        Raises ``ValueError`` for a path under ``data/``, one the writer makes itself
        (``bagit.txt``, ``bag-info.txt``, the manifests, the signature) or one already
        added.
        """
        if path.startswith(PAYLOAD_DIR) or path in _WRITER_FILES:
            raise ValueError(f"{path!r} cannot be added as a tag file")
        self._check_new(path, self._tags)
        digest = self._add_bytes(path, data)
        self._tags[path] = digest
        return digest

    def add_payload_file(self, path: str, source: Path,
                         on_bytes: Callable[[int], None] | None = None) -> Digest:
        """Stream ``source`` into the bag at ``path`` (under ``data/``), hashing it as it
        goes; returns the digest of exactly the bytes written. ``on_bytes`` (if given) is
        told the size of each chunk written.

        Raises ``ValueError`` for a path outside ``data/`` or already added, ``OSError``
        if ``source`` cannot be read.
        """
        if not path.startswith(PAYLOAD_DIR):
            raise ValueError(f"payload path {path!r} is not under {PAYLOAD_DIR}")
        self._check_new(path, self._payload)
        hasher = Hasher()
        with source.open("rb") as stream, \
                self._zip.open(self._info(path, source.stat().st_size), "w") as member:
            while chunk := stream.read(CHUNK_SIZE):
                hasher.update(chunk)
                member.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        digest = hasher.digest()
        self._payload[path] = digest
        return digest

    def finish(self, bag_info: Sequence[tuple[str, str]], key: SigningKey) -> Digest:
        """Write the payload manifests, ``bag-info.txt`` (``bag_info`` and then the
        ``Payload-Oxum``), the tag manifests and ``key``'s signature over
        ``tagmanifest-sha256.txt``; close the ZIP and return its digest.

        Raises ``ValueError`` if ``bag_info`` has a ``Payload-Oxum`` of its own or the bag
        is already finished; ``OSError`` if ``out`` cannot be written.
        """
        if self._finished:
            raise ValueError("the bag is already finished")
        if any(label == _OXUM for label, _ in bag_info):
            raise ValueError(f"{_OXUM} is computed by the writer, not given")
        for algorithm in ALGORITHMS:
            name = payload_manifest(algorithm)
            self._tags[name] = self._add_bytes(name, _manifest(self._payload, algorithm))
        info = tag_text([*bag_info, (_OXUM, self.payload_oxum)])
        self._tags[BAG_INFO_FILE] = self._add_bytes(BAG_INFO_FILE, info.encode("utf-8"))
        signed = b""
        for algorithm in ALGORITHMS:
            name = tag_manifest(algorithm)
            data = _manifest(self._tags, algorithm)
            self._add_bytes(name, data)
            if name == SIGNED_TAG_MANIFEST:
                signed = data
        # Domain separation: these bytes start with 64 hex digits and two spaces, so they
        # can be taken neither for a capture manifest (JSON) nor for a checkpoint note
        # (whose first line is an origin without spaces).
        self._add_bytes(TAG_SIGNATURE_FILE, key.sign(signed))
        self._zip.close()
        self._finished = True
        return self._out.digest()

    def abort(self) -> None:
        """Close the ZIP after a failure, without raising: left open, the ZipFile would
        write its directory into an already closed file when it is collected."""
        self._finished = True
        with contextlib.suppress(OSError, ValueError):
            self._zip.close()

    def _check_new(self, path: str, added: dict[str, Digest]) -> None:
        if path in added:
            raise ValueError(f"{path!r} is already in the bag")

    def _info(self, path: str, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(f"{self._root}/{path}", date_time=self._date_time)
        small_text = path.endswith(_DEFLATE_SUFFIXES) and size < _DEFLATE_BELOW
        info.compress_type = zipfile.ZIP_DEFLATED if small_text else zipfile.ZIP_STORED
        info.file_size = size  # lets zipfile choose ZIP64 for members past 4 GiB
        info.external_attr = 0o644 << 16
        return info

    def _add_bytes(self, path: str, data: bytes) -> Digest:
        with self._zip.open(self._info(path, len(data)), "w") as member:
            member.write(data)
        return digest_bytes(data)


def _manifest(files: dict[str, Digest], algorithm: str) -> bytes:
    text = "".join(manifest_line(getattr(files[p], algorithm), p) for p in sorted(files))
    return text.encode("utf-8")


__all__ = ["BagWriter"]

"""One WARC 1.1 file per capture: written record by record, published atomically.

Records are written with warcio's ``WARCWriter`` (one gzip member per record), but every
record is handed to it complete: WARC headers including both SHA-256 digests, a known
``Content-Length`` and a seekable stream over the exact bytes. warcio then neither
parses the HTTP message (its parser would re-serialise the headers, not keep the bytes
as received) nor buffers the body to compute digests (``ensure_digest`` returns at once
when both digests and the length are present); it copies the stream in 16 KiB pieces.

Atomic publish (threat: a crash, a full disk or a failed fetch leaving a half-written
WARC that a later step seals as evidence): the file is written under a temporary name in
the destination directory, fsync'ed, then renamed to its final name only when the
capture succeeded; on any failure the temporary file is deleted. The file's SHA-256,
SHA-512 and size are computed by a HashingWriter as the bytes go to disk.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from io import BytesIO
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO, cast

from warcio.recordloader import ArcWarcRecord
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from archiver.recorder.wire import MessageSpool, warc_digest
from chain_of_custody.digest import Digest, Hasher, HashingWriter
from chain_of_custody.times import rfc3339
from storage.files import publish

WARC_VERSION = "WARC/1.1"
PEM_CONTENT_TYPE = "application/x-pem-file"
REVISIT_PROFILE = "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest"
_FIELD_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


DEFAULT_GZIP_LEVEL = 6
COPY_SIZE = 1024 * 1024
_STORED_TYPES = ("video/", "audio/", "image/", "font/woff", "application/zip",
                 "application/gzip", "application/x-gzip", "application/pdf")


def gzip_level_for(content_type: str | None) -> int:
    """0 (stored, still a valid gzip member) for payloads that are compressed already,
    where deflate gains nothing and runs at a tenth of the speed; 6 otherwise."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith(_STORED_TYPES) and media != "image/svg+xml":
        return 0
    return DEFAULT_GZIP_LEVEL


class _GzipMember:
    """A writable that turns everything written until ``flush`` into one gzip member."""

    def __init__(self, out: HashingWriter, level: int) -> None:
        self._out = out
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, zlib.MAX_WBITS | 16)

    def write(self, data: bytes) -> int:
        self._out.write(self._compressor.compress(data))
        return len(data)

    def flush(self) -> None:
        self._out.write(self._compressor.flush())
        self._out.flush()


class _StoredGzipMember:
    """A gzip member (RFC 1952) of *stored* deflate blocks (RFC 1951 §3.2.4), framed here.

    Why not ``zlib.compressobj(0)``: at level 0 zlib still moves every byte through its
    window and runs at about 0.7 GB/s, the slowest step of writing a video into the WARC.
    A stored block is a 5-byte header and the bytes themselves, so framing them here
    runs at memory speed (CRC-32 by zlib); any gzip reader reads the result.
    """

    _HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])  # deflate, no mtime, OS unknown
    _MAX_BLOCK = 0xFFFF

    def __init__(self, out: HashingWriter) -> None:
        self._out = out
        self._crc = 0
        self._size = 0
        out.write(self._HEADER)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self._crc = zlib.crc32(view, self._crc)
        self._size += len(view)
        # One write per call (the blocks and their headers gathered first): the hashing
        # writer below costs per call, and a video arrives here in 1 MiB pieces.
        framed = bytearray()
        for start in range(0, len(view), self._MAX_BLOCK):
            block = view[start : start + self._MAX_BLOCK]
            n = len(block)
            framed += bytes((0, n & 0xFF, n >> 8, ~n & 0xFF, (~n >> 8) & 0xFF))
            framed += block
        self._out.write(framed)
        return len(data)

    def flush(self) -> None:
        # The final block: empty, stored, BFINAL set; then CRC-32 and size mod 2^32.
        self._out.write(b"\x01\x00\x00\xff\xff")
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        self._out.flush()


class _Writer(WARCWriter):  # type: ignore[misc]
    """warcio's writer, copying a record's block in 1 MiB pieces instead of 16 KiB: for
    a video that is 1,024 writes per GiB instead of 65,536, each of which is hashed twice
    and framed on its way to disk."""

    @staticmethod
    def _iter_stream(stream: IO[bytes]) -> Iterator[bytes]:
        while buf := stream.read(COPY_SIZE):
            yield buf


class _RawHeaderBlock(StatusAndHeaders):  # type: ignore[misc]
    """An HTTP header block that warcio writes verbatim instead of re-serialising."""

    def __init__(self, raw: bytes) -> None:
        super().__init__("", [], protocol="")
        self.headers_buff = raw

    def compute_headers_buffer(self, header_filter: object = None) -> None:
        return None

    def __bool__(self) -> bool:  # warcio skips a header block that looks empty
        return True


def warc_date(moment: datetime) -> str:
    """WARC 1.1 date: UTC, microseconds, 'Z' (the spec allows sub-second precision)."""
    if moment.tzinfo is None:
        raise ValueError("the clock must return timezone-aware datetimes")
    return rfc3339(moment)


def warc_fields(fields: Mapping[str, str]) -> bytes:
    """``application/warc-fields``: one ``name: value`` line per field, UTF-8.

    Raises ValueError for a name that is not an HTTP token or a value holding CR/LF:
    such a value would let whoever supplies it forge extra fields in the record.
    """
    lines = []
    for name, value in fields.items():
        if not _FIELD_NAME.match(name):
            raise ValueError(f"warcinfo field name {name!r} is not a token")
        if "\r" in value or "\n" in value:
            raise ValueError(f"warcinfo field {name!r} contains a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("utf-8")


class WarcFile:
    """A WARC being written to ``path``'s directory; visible at ``path`` only on publish.

    Use as a context manager: leaving it without :meth:`publish` (an exception, or a
    forgotten call) deletes the temporary file.
    """

    def __init__(
        self,
        path: Path,
        *,
        new_record_id: Callable[[], str],
    ) -> None:
        if path.exists():
            # Evidence is never overwritten; capture ids make paths unique.
            raise FileExistsError(f"{path} already exists; refusing to overwrite it")
        self.path = path
        self.temp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")
        self._new_record_id = new_record_id
        self._raw: BinaryIO = open(self.temp_path, "xb")  # noqa: SIM115 - closed in publish/discard
        self._hashing = HashingWriter(self._raw)
        self.warcinfo_id: str | None = None
        self._digest: Digest | None = None

    def __enter__(self) -> WarcFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._digest is None:
            self.discard()

    def record_id(self) -> str:
        record_id = self._new_record_id()
        if not (record_id.startswith("<") and record_id.endswith(">")) or " " in record_id:
            raise ValueError(f"record id {record_id!r} is not of the form <urn:…>")
        return record_id

    def _write(
        self,
        rec_type: str,
        headers: list[tuple[str, str]],
        content_type: str,
        stream: IO[bytes],
        length: int,
        *,
        level: int = DEFAULT_GZIP_LEVEL,
    ) -> None:
        # Content-Type and Content-Length are appended by warcio, last, as it always does.
        rec_headers = StatusAndHeaders("", headers, protocol=WARC_VERSION)
        record = ArcWarcRecord("warc", rec_type, rec_headers, stream, None, content_type, length)
        record.payload_length = length
        self._write_record(record, level)

    def _write_record(self, record: ArcWarcRecord, level: int) -> None:
        # One gzip member per record, as warcio's own gzip mode writes, but at a level
        # chosen per record: warcio always uses 9, which on a video (already compressed)
        # costs ~13x the time of level 0 for no gain.
        member: _GzipMember | _StoredGzipMember = (
            _StoredGzipMember(self._hashing) if level == 0
            else _GzipMember(self._hashing, level))
        _Writer(member, gzip=False, warc_version=WARC_VERSION).write_record(record)

    def write_warcinfo(self, fields: Mapping[str, str], *, date: datetime) -> str:
        """Write the ``warcinfo`` record first; returns its record id."""
        block = warc_fields(fields)
        record_id = self.record_id()
        self._write(
            "warcinfo",
            [
                ("WARC-Type", "warcinfo"),
                ("WARC-Record-ID", record_id),
                ("WARC-Date", warc_date(date)),
                ("WARC-Filename", self.path.name),
                ("WARC-Block-Digest", warc_digest_of(block)),
            ],
            "application/warc-fields",
            BytesIO(block),
            len(block),
        )
        self.warcinfo_id = record_id
        return record_id

    def _common(self, rec_type: str, record_id: str, url: str, date: datetime) -> list[
        tuple[str, str]
    ]:
        headers = [
            ("WARC-Type", rec_type),
            ("WARC-Record-ID", record_id),
            ("WARC-Date", warc_date(date)),
            ("WARC-Target-URI", url),
        ]
        if self.warcinfo_id is not None:
            headers.append(("WARC-Warcinfo-ID", self.warcinfo_id))
        return headers

    def write_http(
        self,
        rec_type: str,
        *,
        record_id: str,
        url: str,
        date: datetime,
        spool: MessageSpool,
        peer_ip: str | None,
        concurrent_to: str,
        payload_type: str | None = None,
        truncated: str | None = None,
    ) -> None:
        """Write a ``request`` or ``response`` record streaming from ``spool``.

        ``payload_type`` (the response's Content-Type) picks the gzip level: already
        compressed media is stored, not compressed again."""
        headers = self._common(rec_type, record_id, url, date)
        if peer_ip is not None:
            headers.append(("WARC-IP-Address", peer_ip))
        headers.append(("WARC-Concurrent-To", concurrent_to))
        if spool.truncated:
            headers.append(("WARC-Truncated", "length"))
        elif truncated is not None:  # "time", "disconnect": the exchange was cut short
            headers.append(("WARC-Truncated", truncated))
        headers.append(("WARC-Block-Digest", spool.block_digest))
        headers.append(("WARC-Payload-Digest", spool.payload_digest))
        msgtype = "request" if rec_type == "request" else "response"
        self._write(
            rec_type, headers, f"application/http; msgtype={msgtype}", spool.reader(),
            spool.size, level=gzip_level_for(payload_type),
        )

    def write_certificate_chain(
        self, *, record_id: str, url: str, date: datetime, pem: str, refers_to: str
    ) -> None:
        """A ``metadata`` record holding the server's certificate chain as PEM.

        The block is a plain PEM file (leaf first), so ``openssl x509``/``openssl verify``
        read it as extracted; it refers to the response that came over that connection.
        """
        block = pem.encode("ascii")
        headers = self._common("metadata", record_id, url, date)
        headers += [
            ("WARC-Refers-To", refers_to),
            ("WARC-Concurrent-To", refers_to),
            ("WARC-Block-Digest", warc_digest_of(block)),
            # warcio's checker reads the whole block of a non-HTTP record as its payload;
            # stating the digest keeps warcio from computing a SHA-1 one of its own.
            ("WARC-Payload-Digest", warc_digest_of(block)),
        ]
        self._write("metadata", headers, PEM_CONTENT_TYPE, BytesIO(block), len(block))

    def write_revisit(
        self,
        *,
        record_id: str,
        url: str,
        date: datetime,
        header_block: bytes,
        payload_digest: str,
        peer_ip: str | None,
        concurrent_to: str,
        refers_to: str,
        refers_to_url: str,
        refers_to_date: datetime,
    ) -> None:
        """A ``revisit`` record (identical-payload-digest profile) for a response whose
        payload is already in this WARC: the block is the HTTP header block as received,
        and the record points at the earlier response record of this same file."""
        headers = self._common("revisit", record_id, url, date)
        if peer_ip is not None:
            headers.append(("WARC-IP-Address", peer_ip))
        headers += [
            ("WARC-Concurrent-To", concurrent_to),
            ("WARC-Profile", REVISIT_PROFILE),
            ("WARC-Refers-To", refers_to),
            ("WARC-Refers-To-Target-URI", refers_to_url),
            ("WARC-Refers-To-Date", warc_date(refers_to_date)),
            ("WARC-Block-Digest", warc_digest_of(header_block)),
            ("WARC-Payload-Digest", payload_digest),
        ]
        # warcio writes only the HTTP headers of a revisit, re-serialised from parsed
        # fields; _RawHeaderBlock makes it write the header bytes exactly as received.
        rec_headers = StatusAndHeaders("", headers, protocol=WARC_VERSION)
        record = ArcWarcRecord(
            "warc", "revisit", rec_headers, BytesIO(b""), _RawHeaderBlock(header_block),
            "application/http; msgtype=response", len(header_block),
        )
        record.payload_length = 0
        self._write_record(record, DEFAULT_GZIP_LEVEL)

    def write_file_record(
        self,
        rec_type: str,
        *,
        record_id: str,
        url: str,
        date: datetime,
        path: Path,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
        digest: Digest | None = None,
    ) -> Digest:
        """A ``resource``, ``conversion`` or ``metadata`` record whose block is the file at
        ``path``, streamed (never held in memory). Returns the file's digest.

        The record's header carries the block digest, so it must be known before the
        block is written: given as ``digest`` (the caller hashed the file already), or
        computed here in a first pass. Either way the bytes written are hashed again as
        they stream, and a file that changed in between raises ``ValueError`` (the
        temporary WARC is then discarded with the capture: nothing inconsistent is ever
        published)."""
        if rec_type not in ("resource", "conversion", "metadata"):
            raise ValueError(f"not a file record type: {rec_type}")
        with path.open("rb") as handle:
            if digest is None:
                digest = _digest_file(handle, hashlib.sha256())
                handle.seek(0)
            block_digest = warc_digest_hex(digest.sha256)
            headers = self._common(rec_type, record_id, url, date)
            headers += list(extra or [])
            headers += [("WARC-Block-Digest", block_digest),
                        ("WARC-Payload-Digest", block_digest)]
            checked = _CheckedReader(handle, digest)
            self._write(rec_type, headers, content_type, cast(IO[bytes], checked), digest.size,
                        level=gzip_level_for(content_type))
            checked.finish()
        return digest

    def write_fields_record(
        self,
        *,
        record_id: str,
        url: str,
        date: datetime,
        fields: Mapping[str, str],
        extra: list[tuple[str, str]],
    ) -> None:
        """A ``metadata`` record whose block is ``application/warc-fields``."""
        block = warc_fields(fields)
        headers = self._common("metadata", record_id, url, date)
        headers += extra
        headers += [("WARC-Block-Digest", warc_digest_of(block)),
                    ("WARC-Payload-Digest", warc_digest_of(block))]
        self._write("metadata", headers, "application/warc-fields", BytesIO(block),
                    len(block))

    def publish(self) -> Digest:
        """fsync, rename to the final path, fsync the directory; the file's digest."""
        self._hashing.flush()
        self._raw.close()
        publish(self.temp_path, self.path)
        self._digest = self._hashing.digest()
        return self._digest

    def discard(self) -> None:
        """Close and delete the temporary file (nothing half-written is published)."""
        self._raw.close()
        self.temp_path.unlink(missing_ok=True)


def warc_digest_of(data: bytes) -> str:
    return warc_digest(hashlib.sha256(data))


def warc_digest_hex(sha256_hex: str) -> str:
    """``sha256:<BASE32>`` (the WARC form) of a SHA-256 given in hex."""
    return "sha256:" + base64.b32encode(bytes.fromhex(sha256_hex)).decode("ascii")


class _CheckedReader:
    """Reads a file for the WARC writer while hashing it again: the record's header was
    written with the digest the caller stated, so the bytes that follow must match."""

    def __init__(self, handle: BinaryIO, want: Digest) -> None:
        self._handle = handle
        self._want = want
        self._sha256 = hashlib.sha256()
        self._size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._sha256.update(data)
        self._size += len(data)
        return data

    def finish(self) -> None:
        if self._size != self._want.size or self._sha256.hexdigest() != self._want.sha256:
            raise ValueError("a file changed while it was written into the WARC")


def _digest_file(handle: BinaryIO, sha256: Any) -> Digest:
    """SHA-256 (fed into ``sha256`` too), SHA-512 and size of a file, 1 MiB at a time."""
    hasher = Hasher()
    while chunk := handle.read(1024 * 1024):
        hasher.update(chunk)
        sha256.update(chunk)
    return hasher.digest()

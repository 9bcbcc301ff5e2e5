"""Checking every record digest of a WARC, for the offline bundle verifier.

``chain_of_custody`` may not depend on a WARC library (see the design's package table),
so its verifier takes this function as an injected ``warc_checker``; it does what
``warcio check`` does (and is judged against it in the tests): read every record to its
end and compare its ``WARC-Block-Digest`` and ``WARC-Payload-Digest`` with the bytes.

Threat model notes (the WARC is the attacker's): warcio is built to read WARCs that are
merely sloppy, not hostile, so it is used here with its edges filed off:

* A header line is read in time linear in its length and only up to
  :data:`MAX_HEADER_LINE` bytes; a record's WARC and HTTP headers together up to
  :data:`MAX_HEADER_BYTES` (warcio's own ``readline`` joins pieces quadratically and
  without a bound: a member of zeros took 43 s and 560 MB for 32 MiB).
* Only WARC records are accepted (no fallback to ARC), and a record is read as bytes,
  never content-decoded (digests are over the bytes; a gzip bomb served as the body
  stays compressed, as in the WARC).
* What warcio would print to stderr (a record not followed by its blank lines, damaged
  gzip data after the first block) is a problem of the result instead, and a record
  cut short of its ``Content-Length`` is one too.
* Every message quotes at most a hundred bytes, escaped, and at most
  :data:`MAX_PROBLEMS` problems are kept (then a count), so the result is small
  whatever the WARC. Memory stays at a few blocks of the stream (a gzip block can
  inflate to at most 1032 times its size).

A revisit record carries no payload of its own: it stands for the record it names in
``WARC-Refers-To``, and says (``WARC-Payload-Digest``) that the payload was the same. So
each revisit must name a record of the same WARC that carries that payload digest, which
warcio checked against that record's bytes; a revisit whose record is missing, or whose
digest differs, would let a replay show other content than was seen. Only a short hash of
each record id and digest is remembered, so memory stays small per record.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import IO, Any

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.recordloader import ArcWarcRecordLoader
from warcio.statusandheaders import StatusAndHeadersParserException

from chain_of_custody.bundle import WarcCheck
from chain_of_custody.bundle.zipread import quote

MAX_HEADER_LINE = 64 * 1024
MAX_HEADER_BYTES = 1024 * 1024
MAX_PROBLEMS = 20
_BLOCK = 16 * 1024
_CHUNK = 1024 * 1024


def _short(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()[:16]


@dataclass(frozen=True)
class _Revisit:
    record_id: str  # quoted for messages
    offset: int
    refers_to: str | None
    digest: str | None


class _Unreadable(Exception):
    """The WARC cannot be read past this point (the message says why)."""


class _BoundedReader(DecompressingBufferedReader):  # type: ignore[misc]
    """warcio's reader with a linear, bounded ``readline`` and no stderr output."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(stream, block_size=_BLOCK)
        self.header_bytes = 0

    def readline(self, length: int | None = None) -> bytes:
        limit = MAX_HEADER_LINE if length is None else min(length, MAX_HEADER_LINE + 1)
        pieces: list[bytes] = []
        got = 0
        while got < limit:
            self._fillbuff()
            if self.empty():
                break
            piece = self.buff.readline(limit - got)
            pieces.append(piece)
            got += len(piece)
            if piece.endswith(b"\n"):
                break
        line = b"".join(pieces)
        if got >= MAX_HEADER_LINE and not line.endswith(b"\n"):
            raise _Unreadable(f"a header line longer than {MAX_HEADER_LINE} bytes begins "
                              f"{quote(line, 60)}")
        self.header_bytes += len(line)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Unreadable(f"a record's headers run past {MAX_HEADER_BYTES} bytes")
        return line

    def _decompress(self, data: bytes) -> bytes:
        if self.decompressor and data and self.num_block_read:
            try:
                return bytes(self.decompressor.decompress(data))
            except zlib.error as exc:  # warcio would print this and stop quietly
                raise _Unreadable(f"its gzip data is damaged ({exc})") from exc
        return bytes(super()._decompress(data))


class _Loader(ArcWarcRecordLoader):  # type: ignore[misc]
    """Records whose HTTP headers warcio would parse must name their target URI."""

    def _ensure_target_uri_format(self, rec_headers: Any) -> Any:
        uri = rec_headers.get_header("WARC-Target-URI")
        kind = rec_headers.get_header("WARC-Type")
        if uri is None and kind in self.HTTP_RECORDS:
            raise _Unreadable(f"a {quote(str(kind), 40)} record has no WARC-Target-URI")
        return uri  # as written (warcio would rewrite it, and log it unescaped)


class _Iterator(ArchiveIterator):  # type: ignore[misc]
    """WARC records only, read with :class:`_BoundedReader`; a record not followed by its
    two blank lines is a problem, not a line on stderr."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(stream, check_digests=True)
        self.known_format = "warc"
        self.reader = _BoundedReader(self.fh)
        self.loader = _Loader(verify_http=False, arc2warc=False)
        self.misframed: list[int] = []

    def _consume_blanklines(self) -> tuple[bytes | None, int]:
        empty = 0
        while True:
            line = self.reader.readline()
            if not line:
                return None, empty
            if line.strip():
                if empty < 4:  # a record ends with CRLF CRLF
                    self.misframed.append(self.offset)
                return line, empty
            empty += len(line)


def check_warc_records(stream: IO[bytes]) -> WarcCheck:
    """Read a (gzipped or plain) WARC to its end; report each record whose block or
    payload digest does not match, that is cut short or misframed, or where the file
    stops being a WARC. Never raises for what the WARC holds; a damaged stream's own
    error (such as the bundle's ``VerificationError``) passes through."""
    records = checked = more = 0
    problems: list[str] = []
    # record id -> its WARC-Payload-Digest (both shortened), for the revisits to name
    payloads: dict[bytes, bytes | None] = {}
    revisits: list[_Revisit] = []

    def problem(text: str) -> None:
        nonlocal more
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)
        else:
            more += 1

    iterator = _Iterator(stream)
    try:
        for record in iterator:
            records += 1
            raw = record.raw_stream
            while raw.read(_CHUNK):
                pass
            iterator.reader.header_bytes = 0
            record_id = quote(str(record.rec_headers.get_header("WARC-Record-ID")), 80)
            kind = quote(str(record.rec_headers.get_header("WARC-Type")), 40)[1:-1]
            offset = iterator.get_record_offset()
            left = getattr(raw, "limit", 0)
            own_id = record.rec_headers.get_header("WARC-Record-ID")
            digest = record.rec_headers.get_header("WARC-Payload-Digest")
            if own_id is not None:
                payloads[_short(own_id)] = None if digest is None else _short(digest)
            if kind == "revisit":
                revisits.append(_Revisit(record_id, offset,
                                         record.rec_headers.get_header("WARC-Refers-To"),
                                         digest))
            if record.length is None:
                problem(f"{kind} record {record_id} at offset {offset} has no valid "
                        "Content-Length")
            elif left:
                problem(f"{kind} record {record_id} at offset {offset} ends {left} bytes "
                        "short of its Content-Length (the WARC is cut)")
            elif record.digest_checker.passed is False:
                for text in record.digest_checker.problems[:4]:
                    problem(f"{kind} record {record_id} at offset {offset}: "
                            f"{quote(str(text), 200)[1:-1]}")
            elif record.digest_checker.passed is True:
                checked += 1
            for at in iterator.misframed:
                problem(f"the record before offset {at} is not followed by the blank lines "
                        "that end a WARC record (its Content-Length is wrong)")
            iterator.misframed.clear()
    except (_Unreadable, ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error,
            EOFError, ValueError) as exc:
        # A damaged gzip member or a broken record: the WARC cannot be read past here.
        reason = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, _Unreadable):
            reason = quote(reason, 100)[1:-1]
        problem(f"not a readable WARC after {records} records: {reason}")
    matched = 0
    for revisit in revisits:
        where = f"revisit record {revisit.record_id} at offset {revisit.offset}"
        if revisit.refers_to is None:
            problem(f"{where} has no WARC-Refers-To: the record it stands for is unknown")
            continue
        target = quote(revisit.refers_to, 80)
        key = _short(revisit.refers_to)
        if key not in payloads:
            problem(f"{where} refers to {target}, which is not a record of this WARC")
        elif revisit.digest is None:
            problem(f"{where} has no WARC-Payload-Digest to compare with {target}'s")
        elif payloads[key] != _short(revisit.digest):
            problem(f"{where} carries WARC-Payload-Digest {quote(revisit.digest, 80)}, "
                    f"which is not the payload digest of the record it refers to, {target}")
        else:
            matched += 1
    if more:
        problems.append(f"... and {more} more problems")
    return WarcCheck(records=records, digests_checked=checked, revisits_checked=matched,
                     problems=tuple(problems))


__all__ = ["MAX_HEADER_BYTES", "MAX_HEADER_LINE", "check_warc_records"]

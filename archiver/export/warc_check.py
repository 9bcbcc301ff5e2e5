"""Checking every record digest of a WARC, for the offline bundle verifier.

``chain_of_custody`` may not depend on a WARC library (see the design's package table),
so its verifier takes this function as an injected ``warc_checker``; it does what
``warcio check`` does (and is judged against it in the tests): read every record to its
end and compare its ``WARC-Block-Digest`` and ``WARC-Payload-Digest`` with the bytes.
"""

from __future__ import annotations

import zlib
from typing import IO

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

from chain_of_custody.bundle import WarcCheck

_CHUNK = 1024 * 1024


def check_warc_records(stream: IO[bytes]) -> WarcCheck:
    """Read a (gzipped or plain) WARC to its end; report each record whose block or
    payload digest does not match, or where the file stops being a WARC."""
    records = checked = 0
    problems: list[str] = []
    iterator = ArchiveIterator(stream, check_digests=True)
    try:
        for record in iterator:
            records += 1
            content = record.content_stream()
            while content.read(_CHUNK):
                pass
            record_id = record.rec_headers.get_header("WARC-Record-ID")
            kind = record.rec_headers.get_header("WARC-Type")
            if record.digest_checker.passed is False:
                offset = iterator.get_record_offset()
                for problem in record.digest_checker.problems:
                    problems.append(f"{kind} record {record_id} at offset {offset}: {problem}")
            elif record.digest_checker.passed is True:
                checked += 1
    except (ArchiveLoadFailed, zlib.error, EOFError, OSError, ValueError) as exc:
        # A damaged gzip member or a broken record: the WARC cannot be read past here.
        problems.append(f"not a readable WARC after {records} records: "
                        f"{str(exc).strip() or type(exc).__name__}")
    return WarcCheck(records=records, digests_checked=checked, problems=tuple(problems))


__all__ = ["check_warc_records"]

"""Pure parts of the recorder: link extraction, body decoding, spool digests, deadline."""

from __future__ import annotations

import gzip
import io
import zlib
from datetime import UTC, datetime
from pathlib import Path

import httpcore
import pytest
from warc_judges import sha256_b32
from warcio.archiveiterator import ArchiveIterator

from archiver.recorder.links import (
    BodyDecoder,
    CssUrlScanner,
    Link,
    PageLinkParser,
    parse_srcset,
)
from archiver.recorder.warcfile import COPY_SIZE, WarcFile
from archiver.recorder.wire import ByteLimitReached, Deadline, MessageSpool


def test_srcset_candidates_are_split_into_urls() -> None:
    """Descriptors are dropped; commas inside URLs (no following space) are kept."""
    assert parse_srcset("a.png 1x, b.png 2x,c.png") == ["a.png", "b.png", "c.png"]
    assert parse_srcset(" img,w=100.png 100w , x.png") == ["img,w=100.png", "x.png"]
    assert parse_srcset("") == []


def test_css_urls_are_found_across_chunk_boundaries() -> None:
    """url(...) split over two pieces of text is still found, quoted or not."""
    scanner = CssUrlScanner()
    text = 'a{b:url( "x.png" )} c{d:url(y.png)} @import \'z.css\'; e{f:URL(w.gif)}'
    for i in range(0, len(text), 3):
        scanner.feed(text[i : i + 3])
    scanner.close()
    assert scanner.found == ["x.png", "y.png", "z.css", "w.gif"]


def test_page_links_resolve_against_base_and_skip_non_fetchable() -> None:
    """<base href> applies to every link; data:, javascript:, mailto:, fragments skipped;
    an <audio>/<video> source is a media link (the media fetcher's, when it runs)."""
    parser = PageLinkParser(max_links=100)
    parser.feed('<img src="a.png"><base href="/assets/"><script src="s.js"></script>'
                '<img src="data:image/png;base64,AA"><a href="mailto:x@y">m</a>'
                '<img src="#top"><link rel="preload" href="f.woff">'
                '<audio src="//cdn.example/a.ogg"></audio><track src="t.vtt">'
                '<style>p{background:url(bg.png)}</style><div style="background:url(d.png)">')
    assert parser.finish("https://example.org/post/1") == [
        Link("https://example.org/assets/a.png", "other"),
        Link("https://example.org/assets/s.js", "other"),
        Link("https://example.org/assets/f.woff", "other"),
        Link("https://cdn.example/a.ogg", "media"),
        Link("https://example.org/assets/t.vtt", "other"),
        Link("https://example.org/assets/d.png", "other"),
        Link("https://example.org/assets/bg.png", "other"),
    ]


def test_malformed_urls_are_skipped_not_fatal() -> None:
    """A link or <base> that is not a URL at all is ignored; the others still count."""
    parser = PageLinkParser(max_links=100)
    parser.feed('<base href="http://[oops"><img src="http://[bad/x.png"><img src="ok.png">')
    assert parser.finish("http://h/p") == [Link("http://h/ok.png", "other")]


def test_stylesheet_kind_survives_deduplication() -> None:
    """A URL linked as an icon and as a stylesheet is fetched once, parsed as CSS."""
    parser = PageLinkParser(max_links=100)
    parser.feed('<link rel="icon" href="x.css"><link rel="stylesheet" href="x.css">')
    assert parser.finish("http://h/") == [Link("http://h/x.css", "stylesheet")]


def test_body_decoder_handles_gzip_members_raw_deflate_and_caps_output() -> None:
    """gzip (two members), deflate without zlib header, and a bounded output size."""
    two = gzip.compress(b"hello ") + gzip.compress(b"world")
    assert BodyDecoder("gzip", max_output=100).feed(two) == b"hello world"
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = raw.compress(b"deflated") + raw.flush()
    assert BodyDecoder("deflate", max_output=100).feed(data) == b"deflated"
    bomb = BodyDecoder("gzip", max_output=10)
    assert bomb.feed(gzip.compress(b"\0" * 10_000)) == b"\0" * 10
    assert bomb.exhausted
    assert not BodyDecoder("br", max_output=10).supported


def test_body_decoder_stops_a_bomb_at_the_ratio_past_the_floor_not_before() -> None:
    """Past ``ratio_floor`` decoded bytes, output stays within ``max_ratio`` times the
    input: zeros (about 1,000 to 1) stop there; text that compresses 3 to 1 never does."""
    bomb = gzip.compress(bytes(64 * 1024 * 1024))
    decoder = BodyDecoder("gzip", max_output=1 << 40, max_ratio=100, ratio_floor=1 << 20)
    out = sum(len(decoder.feed(bomb[i:i + 4096])) for i in range(0, len(bomb), 4096))
    assert decoder.limit == "ratio"
    assert out <= max(1 << 20, 100 * decoder.received)
    assert out < 2 << 20
    text = b"".join(b"%d witness statement, %x\n" % (i, i * 7919) for i in range(200_000))
    packed = gzip.compress(text)
    ordinary = BodyDecoder("gzip", max_output=1 << 40, max_ratio=100, ratio_floor=1 << 20)
    assert b"".join(ordinary.feed(packed[i:i + 4096])
                    for i in range(0, len(packed), 4096)) == text
    assert ordinary.limit is None
    small = BodyDecoder("gzip", max_output=1 << 40, max_ratio=100, ratio_floor=1 << 20)
    assert small.feed(gzip.compress(bytes(1 << 20))) == bytes(1 << 20)  # within the floor
    assert small.limit is None


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
def test_spool_payload_digest_matches_what_warcio_check_recomputes(
    tmp_path: Path, split: int
) -> None:
    """Header block end found as warcio finds it, however the bytes arrive (bare LF too)."""
    message = b"HTTP/1.1 200 OK\nX-A: b\n  folded\n\nbody\r\n\r\nmore"
    spool = MessageSpool(None, limit=None)
    for i in range(0, len(message), split):
        spool.feed(message[i : i + split])
    assert spool.payload_digest == sha256_b32(b"body\r\n\r\nmore")
    assert spool.block_digest == sha256_b32(message)
    # and warcio's own checker agrees once it is in a record
    request = MessageSpool(None, limit=None)
    request.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    path = tmp_path / "one.warc.gz"
    with WarcFile(path, new_record_id=lambda: "<urn:x:unused>") as warc:
        now = datetime.now(UTC)
        warc.write_http("request", record_id="<urn:x:a>", url="http://h/", date=now,
                        spool=request, peer_ip=None, concurrent_to="<urn:x:b>")
        warc.write_http("response", record_id="<urn:x:b>", url="http://h/", date=now,
                        spool=spool, peer_ip="192.0.2.1", concurrent_to="<urn:x:a>")
        warc.publish()
    with path.open("rb") as stream:
        for record in ArchiveIterator(stream, check_digests=True):
            record.content_stream().read()
            assert record.digest_checker.passed is True


def test_spool_limit_keeps_exactly_the_limit_and_signals() -> None:
    """The byte that would exceed the limit is not kept; ByteLimitReached is raised."""
    spool = MessageSpool(io.BytesIO(), limit=5)
    spool.feed(b"abc")
    with pytest.raises(ByteLimitReached):
        spool.feed(b"defg")
    assert spool.truncated
    assert spool.size == 5
    assert spool.reader().read() == b"abcde"


def test_deadline_bounds_timeouts_and_raises_when_spent() -> None:
    """Each I/O gets at most the time left; none left raises an httpcore timeout."""
    now = [100.0]
    deadline = Deadline(10, monotonic=lambda: now[0])
    assert deadline.bound(None, httpcore.ReadTimeout) == 10
    assert deadline.bound(3, httpcore.ReadTimeout) == 3
    now[0] = 108.0
    assert deadline.bound(5, httpcore.ReadTimeout) == pytest.approx(2)
    now[0] = 110.0
    with pytest.raises(httpcore.ReadTimeout, match="time limit of 10 s ran out"):
        deadline.bound(5, httpcore.ReadTimeout)


class _CountingFile(io.BytesIO):
    """A spool file that remembers how it was read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.reads.append(size)
        return super().read(size)


def test_warc_writer_streams_the_spool_once_in_pieces(tmp_path: Path) -> None:
    """The spooled body is copied once, 1 MiB at a time: no whole-body read, no second
    pass to compute digests (they are given)."""
    body = b"x" * (2 * COPY_SIZE + 100 * 1024)
    spooled = _CountingFile()
    spool = MessageSpool(spooled, limit=None)
    spool.feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with WarcFile(tmp_path / "s.warc.gz", new_record_id=lambda: "<urn:x:1>") as warc:
        warc.write_http("response", record_id="<urn:x:2>", url="http://h/",
                        date=datetime.now(UTC), spool=spool, peer_ip=None,
                        concurrent_to="<urn:x:3>")
        warc.publish()
    assert spooled.reads
    assert all(size == COPY_SIZE for size in spooled.reads)
    assert len(spooled.reads) == spool.size // COPY_SIZE + 2  # pieces, a short one, then b""

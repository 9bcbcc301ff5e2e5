"""The recording session that page fetcher, yt-dlp and browser share: one WARC, bodies
handed to the caller decoded, revisits for repeated payloads, derived-file records."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from pathlib import Path

import httpx
import pytest
from fixture_site import FixtureSite
from warc_judges import pywb_replay, read_records, sha256_b32, strict_problems, warcio_check

from archiver.errors import FetchRefused
from archiver.recorder import OutgoingRequest, RecorderOptions, open_session
from archiver.recorder.session import redirected_request as _redirected

WARCINFO = {"software": "evidence-archiver/test"}


def _options(**overrides: object) -> RecorderOptions:
    values: dict[str, object] = {"allow_private_networks": True, "timeout_seconds": 20.0}
    values.update(overrides)
    return RecorderOptions(**values)  # type: ignore[arg-type]


def test_exchange_hands_the_caller_the_decoded_body_and_keeps_wire_bytes(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A gzip response: the caller's file gets the entity, the WARC the bytes as sent."""
    warc = tmp_path / "s.warc.gz"
    body = io.BytesIO()
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        done = session.exchange(OutgoingRequest(url=fixture_site.url("/gzip.txt")),
                                role="media", body=body)
        session.publish()
    assert body.getvalue() == gzip.decompress(fixture_site.body("/gzip.txt"))
    assert done.body_size == len(body.getvalue())
    assert done.headers["content-encoding"] == "gzip"
    (response,) = [r for r in read_records(warc) if r.header("WARC-Type") == "response"]
    assert response.block == fixture_site.response("/gzip.txt")
    assert gzip.decompress(response.payload) == body.getvalue()


def test_a_repeated_payload_is_stored_once_as_a_revisit(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """The second fetch of the same bytes is a revisit record pointing at the first
    response of the same WARC; warcio and the strict judge accept the file, and pywb
    replays the resource from the revisit's URL."""
    warc = tmp_path / "s.warc.gz"
    url = fixture_site.url("/img/pixel.png")
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        first = session.exchange(OutgoingRequest(url=url), role="page")
        second = session.exchange(OutgoingRequest(url=url), role="browser",
                                  body=io.BytesIO())
        session.publish()
    assert first.revisit_of is None
    assert second.revisit_of == first.summary.response_record_id
    records = read_records(warc)
    (revisit,) = [r for r in records if r.header("WARC-Type") == "revisit"]
    assert revisit.header("WARC-Refers-To") == first.summary.response_record_id
    assert revisit.header("WARC-Refers-To-Target-URI") == url
    assert revisit.header("WARC-Profile") == (
        "http://netpreserve.org/warc/1.1/revisit/identical-payload-digest")
    assert revisit.header("WARC-Payload-Digest") == sha256_b32(fixture_site.payload(
        "/img/pixel.png"))
    head = fixture_site.response("/img/pixel.png")
    assert revisit.block == head[: head.index(b"\r\n\r\n") + 4]
    assert len([r for r in records if r.header("WARC-Type") == "response"]) == 1
    assert warcio_check(warc).returncode == 0
    assert strict_problems(warc) == []
    work = tmp_path / "pywb"
    work.mkdir()
    with pywb_replay(warc, work) as base, httpx.Client(trust_env=False, timeout=30) as client:
        replayed = client.get(f"{base}/c/20240501000000id_/{url}")
    assert replayed.status_code == 200
    assert replayed.content == fixture_site.body("/img/pixel.png")


def test_derived_files_become_records_warcio_accepts(fixture_site: FixtureSite,
                                                     tmp_path: Path) -> None:
    """A resource record (a file the capture made) carries its digest and points at the
    response it came from."""
    warc = tmp_path / "s.warc.gz"
    derived = tmp_path / "clip.mp4"
    derived.write_bytes(fixture_site.body("/clip.mp4"))
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        done = session.exchange(OutgoingRequest(url=fixture_site.url("/clip.mp4")),
                                role="media", body=io.BytesIO())
        record_id, digest = session.write_file(
            "resource", url=fixture_site.url("/clip.mp4"), path=derived,
            content_type="video/mp4", refers_to=done.summary.response_record_id,
        )
        session.publish()
    assert digest.sha256 == hashlib.sha256(derived.read_bytes()).hexdigest()
    (resource,) = [r for r in read_records(warc) if r.header("WARC-Type") == "resource"]
    assert resource.id == record_id
    assert resource.block == derived.read_bytes()
    assert resource.header("WARC-Refers-To") == done.summary.response_record_id
    assert warcio_check(warc).returncode == 0


def test_post_requests_are_recorded_with_their_body(fixture_site: FixtureSite,
                                                    tmp_path: Path) -> None:
    """A fetcher's POST (an API call) goes out with its body, recorded as sent."""
    warc = tmp_path / "s.warc.gz"
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        session.exchange(OutgoingRequest(url=fixture_site.url("/page.html"), method="POST",
                                         headers=(("Content-Type", "application/json"),
                                                  ("Connection", "keep-alive")),
                                         content=b'{"q": 1}'), role="media")
        session.publish()
    (request,) = [r for r in read_records(warc) if r.header("WARC-Type") == "request"]
    assert request.block.startswith(b"POST /page.html HTTP/1.1\r\n")
    assert request.block.endswith(b'\r\n\r\n{"q": 1}')
    assert b"Connection: close\r\n" in request.block
    assert b"keep-alive" not in request.block


def test_redirect_rules_drop_credentials_across_hosts() -> None:
    """303 turns POST into GET; credentials do not follow a redirect to another host."""
    post = OutgoingRequest(url="https://a.example/x", method="POST", content=b"1",
                           headers=(("Cookie", "s=1"), ("Content-Type", "text/plain"),
                                    ("Accept", "*/*")))
    same = _redirected(post, 303, "https://a.example/y")
    assert (same.method, same.content) == ("GET", b"")
    assert same.headers == (("Cookie", "s=1"), ("Accept", "*/*"))
    other = _redirected(post, 307, "https://b.example/y")
    assert (other.method, other.content) == ("POST", b"1")
    assert other.headers == (("Content-Type", "text/plain"), ("Accept", "*/*"))


def test_every_fetcher_passes_the_guard(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """With private networks refused, an exchange of any role is refused before any
    connection, and nothing is published."""
    warc = tmp_path / "s.warc.gz"
    with pytest.raises(FetchRefused, match="loopback"), open_session(
        warc, options=_options(allow_private_networks=False), warcinfo=WARCINFO
    ) as session:
        session.exchange(OutgoingRequest(url=fixture_site.url("/clip.mp4")), role="media")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("content_type", "level"), [
    ("video/mp4", 0), ("audio/mpeg", 0), ("image/jpeg; q=1", 0), ("application/gzip", 0),
    ("image/svg+xml", 6), ("text/html; charset=utf-8", 6), (None, 6),
])
def test_already_compressed_payloads_are_stored_not_deflated_again(
    content_type: str | None, level: int
) -> None:
    """Video, audio, raster images and compressed bodies get gzip level 0 (a stored
    member: valid gzip at memory speed); text keeps level 6."""
    from archiver.recorder.warcfile import gzip_level_for

    assert gzip_level_for(content_type) == level


def test_a_video_record_takes_no_more_room_than_the_video(fixture_site: FixtureSite,
                                                          tmp_path: Path) -> None:
    """A stored gzip member costs a few bytes per 64 KiB: the WARC holding the clip is
    barely larger than the clip (and warcio reads it back intact)."""
    warc = tmp_path / "s.warc.gz"
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        session.exchange(OutgoingRequest(url=fixture_site.url("/clip.mp4")), role="media")
        session.publish()
    clip = fixture_site.body("/clip.mp4")
    assert len(clip) < warc.stat().st_size < len(clip) * 1.01 + 8192
    assert warcio_check(warc).returncode == 0


def test_an_exchange_cut_by_its_deadline_is_recorded_as_truncated_in_time(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A response still streaming when its time runs out raises FetchTimeout, and the
    request and what arrived of the response stay in the WARC, WARC-Truncated: time."""
    from archiver.errors import FetchTimeout
    from archiver.recorder.wire import Deadline

    warc = tmp_path / "s.warc.gz"
    url = fixture_site.url("/slow")
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:
        with pytest.raises(FetchTimeout, match="ran out while fetching"):
            session.exchange(OutgoingRequest(url=url), role="media", deadline=Deadline(0.5))
        session.publish()
    records = {r.header("WARC-Type"): r for r in read_records(warc)}
    assert records["request"].block.startswith(b"GET /slow HTTP/1.1\r\n")
    response = records["response"]
    assert response.header("WARC-Truncated") == "time"
    assert response.block.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.block.count(b"slow.") >= 3
    assert warcio_check(warc).returncode == 0


def test_a_slow_exchange_does_not_hold_up_the_others(fixture_site: FixtureSite,
                                                     tmp_path: Path) -> None:
    """Exchanges of one session run side by side: a fast one started while a slow one
    streams completes first, and both are recorded."""
    import threading
    import time

    from archiver.errors import FetchTimeout
    from archiver.recorder.wire import Deadline

    warc = tmp_path / "s.warc.gz"
    finished: dict[str, float] = {}
    with open_session(warc, options=_options(), warcinfo=WARCINFO) as session:

        def slow() -> None:
            with pytest.raises(FetchTimeout):
                session.exchange(OutgoingRequest(url=fixture_site.url("/slow")),
                                 role="browser", deadline=Deadline(3.0))
            finished["slow"] = time.monotonic()

        thread = threading.Thread(target=slow)
        thread.start()
        session.exchange(OutgoingRequest(url=fixture_site.url("/img/pixel.png")),
                         role="browser")
        finished["fast"] = time.monotonic()
        thread.join(timeout=30)
        session.publish()
    assert finished["fast"] < finished["slow"]
    urls = [r.header("WARC-Target-URI") for r in read_records(warc)
            if r.header("WARC-Type") == "response"]
    assert sorted(urls) == sorted([fixture_site.url("/slow"),
                                   fixture_site.url("/img/pixel.png")])


class _SpoolReading:
    """A body file that reads from the response spool (the session's SpoolReader)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.offset = 0
        self.size = 0
        self.written = 0

    def from_spool(self, fileno: int, offset: int) -> None:
        self.fd, self.offset = os.dup(fileno), offset

    def grew(self, size: int) -> None:
        self.size = size

    def write(self, data: bytes) -> int:
        self.written += len(data)
        return len(data)

    def body(self) -> bytes:
        assert self.fd is not None
        try:
            return os.pread(self.fd, self.size, self.offset)
        finally:
            os.close(self.fd)


@pytest.mark.parametrize(("path", "from_spool"), [("/clip.mp4", True),
                                                  ("/gzip.txt", False),
                                                  ("/chunked.txt", False)])
def test_a_body_that_is_its_payload_is_read_from_the_spool_not_copied(
    fixture_site: FixtureSite, tmp_path: Path, path: str, from_spool: bool
) -> None:
    """A response neither compressed nor chunked: the caller reads the body from the
    spool (after the session closed its own descriptor) and is written nothing; a gzip
    or chunked one is decoded and copied into the caller's file as before."""
    reader = _SpoolReading()
    with open_session(tmp_path / "s.warc.gz", options=_options(),
                      warcinfo=WARCINFO) as session:
        done = session.exchange(OutgoingRequest(url=fixture_site.url(path)), role="media",
                                body=reader)  # type: ignore[arg-type]
        session.publish()
    if from_spool:
        assert reader.written == 0
        assert reader.body() == fixture_site.body(path)
        assert done.body_size == len(fixture_site.body(path))
    else:
        assert reader.fd is None
        assert reader.written == done.body_size > 0

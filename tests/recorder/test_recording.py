"""record_capture against the local fixture site, judged by warcio (reader and checker)."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import time
from pathlib import Path

import pytest
from cryptography import x509
from fixture_site import BIG_SIZE, FixtureSite
from warc_judges import read_records, sha256_b32, warcio_check

from archiver.capture.page import RecordingResult, record_capture
from archiver.errors import (
    FetchRefused,
    FetchTimeout,
    ResponseTooLarge,
    TlsError,
    TooManyRedirects,
)
from archiver.recorder import RecorderOptions
from archiver.recorder.addresses import IPAddress, non_global_reason

WARCINFO = {"software": "evidence-archiver/test", "operator": "tests"}


def local(**overrides: object) -> RecorderOptions:
    """Options for the fixture site: private networks allowed, short time limit."""
    settings: dict[str, object] = {"allow_private_networks": True, "timeout_seconds": 20.0}
    settings.update(overrides)
    return RecorderOptions(**settings)  # type: ignore[arg-type]


def capture(site: FixtureSite, path: str, tmp_path: Path, *, tls: bool = False,
            **overrides: object) -> tuple[RecordingResult, Path]:
    warc = tmp_path / "capture.warc.gz"
    if tls:
        overrides.setdefault("ca_bundle", site.ca_pem)
    result = record_capture(site.url(path, tls=tls), warc_path=warc, options=local(**overrides),
                            warcinfo=WARCINFO)
    check = warcio_check(warc)
    assert check.returncode == 0, check.stdout + check.stderr
    return result, warc


def only_127_0_0_1(address: IPAddress) -> str | None:
    """A policy for tests: the fixture site's 127.0.0.1 counts as public, all else as usual."""
    return None if address == ipaddress.IPv4Address("127.0.0.1") else non_global_reason(address)


def assert_nothing_published(tmp_path: Path) -> None:
    assert list(tmp_path.iterdir()) == [], "a failed capture left files behind"


# -- what a capture records ---------------------------------------------------------


def test_page_exchange_holds_the_exact_wire_bytes(fixture_site: FixtureSite,
                                                  tmp_path: Path) -> None:
    """Response block == bytes the server wrote; request holds line, Host and User-Agent."""
    result, warc = capture(fixture_site, "/page.html", tmp_path, fetch_subresources=False)
    records = read_records(warc)
    assert [r.type for r in records] == ["warcinfo", "request", "response"]
    info, request, response = records
    assert info.block == b"software: evidence-archiver/test\r\noperator: tests\r\n"
    assert info.header("Content-Type") == "application/warc-fields"
    assert response.block == fixture_site.response("/page.html")
    assert request.block.startswith(b"GET /page.html HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{fixture_site.http_port}\r\n".encode() in request.http_head
    assert b"User-Agent: evidence-archiver\r\n" in request.http_head
    assert request.block.endswith(b"\r\n\r\n")
    assert result.status == 200
    assert result.final_url == fixture_site.url("/page.html")
    assert result.peer_ip == "127.0.0.1"
    assert result.peer_port == fixture_site.http_port
    assert result.page_content_type == "text/html; charset=utf-8"
    assert result.tls_certificate_sha256 is None
    assert result.tls_chain_pem is None


def test_request_and_response_are_paired_and_carry_peer_ip_and_digests(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """WARC-Concurrent-To both ways, same URI and date, IP address, SHA-256 digests."""
    result, warc = capture(fixture_site, "/page.html", tmp_path)
    records = read_records(warc)
    warcinfo_id = records[0].id
    by_id = {r.id: r for r in records}
    requests = [r for r in records if r.type == "request"]
    assert len(requests) == len(result.exchanges)
    for request, summary in zip(requests, result.exchanges, strict=True):
        response = by_id[request.header("WARC-Concurrent-To") or ""]
        assert response.type == "response"
        assert response.header("WARC-Concurrent-To") == request.id
        assert (request.id, response.id) == (summary.request_record_id,
                                             summary.response_record_id)
        for record in (request, response):
            assert record.header("WARC-Target-URI") == summary.url
            assert record.header("WARC-IP-Address") == "127.0.0.1"
            assert record.header("WARC-Warcinfo-ID") == warcinfo_id
            assert record.header("WARC-Block-Digest") == sha256_b32(record.block)
            assert record.header("WARC-Payload-Digest") == sha256_b32(record.payload)
            assert record.header("Content-Length") == str(len(record.block))
        assert request.header("WARC-Date") == response.header("WARC-Date")
        assert len(response.block) == summary.response_bytes


def test_gzip_response_is_recorded_still_compressed(fixture_site: FixtureSite,
                                                    tmp_path: Path) -> None:
    """Content-Encoding: gzip stays on the record and the payload is the gzip bytes."""
    _, warc = capture(fixture_site, "/gzip.txt", tmp_path)
    response = read_records(warc)[2]
    assert b"Content-Encoding: gzip\r\n" in response.http_head
    assert response.payload == fixture_site.payload("/gzip.txt")
    assert response.payload[:2] == b"\x1f\x8b"
    assert gzip.decompress(response.payload) == b"compressed evidence\n" * 50


def test_chunked_response_keeps_its_framing(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """Transfer-Encoding: chunked is recorded with the chunk sizes as received."""
    _, warc = capture(fixture_site, "/chunked.txt", tmp_path)
    response = read_records(warc)[2]
    assert response.block == fixture_site.response("/chunked.txt")
    assert response.payload.startswith(b"c\r\nfirst chunk\n\r\n")
    assert response.payload.endswith(b"0\r\n\r\n")


def test_every_redirect_hop_is_its_own_exchange(fixture_site: FixtureSite,
                                                 tmp_path: Path) -> None:
    """301 → 302 → 200: three request/response pairs, redirects listed in order."""
    result, warc = capture(fixture_site, "/redirect/301", tmp_path)
    base = fixture_site.http
    assert result.redirects == ((base + "/redirect/301", 301), (base + "/redirect/302", 302))
    assert result.final_url == base + "/redirect/final"
    assert result.status == 200
    responses = [r for r in read_records(warc) if r.type == "response"]
    assert [r.header("WARC-Target-URI") for r in responses] == [
        base + "/redirect/301", base + "/redirect/302", base + "/redirect/final"]
    assert [r.block for r in responses] == [
        fixture_site.response(p) for p in ("/redirect/301", "/redirect/302", "/redirect/final")]


def test_redirect_loop_fails_after_max_redirects_and_publishes_nothing(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """A loop raises TooManyRedirects naming the limit; no WARC appears."""
    with pytest.raises(TooManyRedirects, match=r"more than 3 redirects .*capture\.max_redirects"):
        record_capture(fixture_site.url("/loop/a"), warc_path=tmp_path / "x.warc.gz",
                       options=local(max_redirects=3), warcinfo=WARCINFO)
    assert_nothing_published(tmp_path)


@pytest.mark.parametrize(("path", "status"), [("/gone-404", 404), ("/gone-410", 410)])
def test_takedown_status_is_recorded_evidence_not_an_error(
    fixture_site: FixtureSite, tmp_path: Path, path: str, status: int
) -> None:
    """404 and 410 main documents are returned with their status and recorded."""
    result, warc = capture(fixture_site, path, tmp_path)
    assert result.status == status
    assert read_records(warc)[2].block == fixture_site.response(path)


def test_result_digest_is_the_digest_of_the_published_file(fixture_site: FixtureSite,
                                                            tmp_path: Path) -> None:
    """SHA-256, SHA-512 and size computed while writing equal a re-read of the file."""
    result, warc = capture(fixture_site, "/page.html", tmp_path)
    data = warc.read_bytes()
    assert result.warc_digest.size == len(data)
    assert result.warc_digest.sha256 == hashlib.sha256(data).hexdigest()
    assert result.warc_digest.sha512 == hashlib.sha512(data).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["capture.warc.gz"]


def test_existing_warc_is_never_overwritten(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """A path that exists is refused before anything is fetched."""
    warc = tmp_path / "capture.warc.gz"
    warc.write_bytes(b"earlier evidence")
    with pytest.raises(FileExistsError):
        record_capture(fixture_site.url("/page.html"), warc_path=warc, options=local(),
                       warcinfo=WARCINFO)
    assert warc.read_bytes() == b"earlier evidence"


# -- subresources -----------------------------------------------------------------------


def test_subresources_are_found_resolved_deduplicated_and_recorded(
    fixture_site: FixtureSite, tmp_path: Path
) -> None:
    """img src/srcset, stylesheet, icon, script, video src/poster, CSS url() one level."""
    result, warc = capture(fixture_site, "/page.html", tmp_path)
    base = fixture_site.http
    fetched = [x.url for x in result.exchanges if x.role == "subresource"]
    expected = {base + p for p in (
        "/style.css", "/favicon.ico", "/app.js", "/img/pixel.png", "/img/pixel2x.png",
        "/clip.mp4", "/poster.png",                       # from the page
        "/img/bg.png", "/font.woff", "/print.css",        # from style.css
    )}
    assert set(fetched) == expected
    assert len(fetched) == len(expected)  # pixel.png appears twice on the page, fetched once
    assert result.subresources_fetched == len(expected)
    assert base + "/img/only-via-print.png" not in fetched  # CSS from CSS is not followed
    assert base + "/not-fetched.html" not in fetched        # <a href> is not a subresource
    assert result.warnings == ()
    responses = {r.header("WARC-Target-URI"): r for r in read_records(warc)
                 if r.type == "response"}
    for url in expected:
        assert responses[url].block == fixture_site.response(url.removeprefix(base))


def test_video_bytes_recorded_equal_the_ffmpeg_clip(fixture_site: FixtureSite,
                                                     tmp_path: Path) -> None:
    """The MP4 made by ffmpeg is in the WARC byte for byte."""
    _, warc = capture(fixture_site, "/page.html", tmp_path)
    (clip,) = [r for r in read_records(warc)
               if r.type == "response" and r.header("WARC-Target-URI", ).endswith("/clip.mp4")]
    assert clip.payload == fixture_site.body("/clip.mp4")
    assert clip.payload[4:8] == b"ftyp"


def test_oversized_subresource_is_truncated_and_reported(fixture_site: FixtureSite,
                                                          tmp_path: Path) -> None:
    """Over max_subresource_bytes: WARC-Truncated: length, a warning, still valid WARC."""
    limit = 1000
    result, warc = capture(fixture_site, "/page.html", tmp_path, max_subresource_bytes=limit)
    (clip,) = [r for r in read_records(warc)
               if r.type == "response" and (r.header("WARC-Target-URI") or "").endswith(".mp4")]
    assert clip.header("WARC-Truncated") == "length"
    assert clip.block == fixture_site.response("/clip.mp4")[:limit]
    summary = next(x for x in result.exchanges if x.url.endswith("/clip.mp4"))
    assert summary.truncated
    assert summary.response_bytes == limit
    assert any("clip.mp4 truncated at 1000 bytes" in w for w in result.warnings)
    assert result.status == 200


def test_subresource_count_limit_stops_fetching_with_a_warning(fixture_site: FixtureSite,
                                                                tmp_path: Path) -> None:
    """max_subresources bounds how many are fetched; the rest are named in a warning."""
    result, _ = capture(fixture_site, "/page.html", tmp_path, max_subresources=2)
    assert result.subresources_fetched == 2
    assert [x.role for x in result.exchanges] == ["page", "subresource", "subresource"]
    assert any("capture.max_subresources (2) reached" in w for w in result.warnings)


def test_total_byte_limit_stops_subresources(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """max_total_bytes counts every response; once spent, fetching stops with a warning."""
    page = len(fixture_site.response("/page.html"))
    result, _ = capture(fixture_site, "/page.html", tmp_path, max_total_bytes=page + 400)
    assert sum(x.response_bytes for x in result.exchanges) <= page + 400
    assert any(f"capture.max_total_bytes ({page + 400:,}) reached" in w
               for w in result.warnings)


def test_subresources_off_fetches_only_the_page(fixture_site: FixtureSite,
                                                tmp_path: Path) -> None:
    """fetch_subresources=False records the page alone."""
    result, _ = capture(fixture_site, "/page.html", tmp_path, fetch_subresources=False)
    assert [x.role for x in result.exchanges] == ["page"]
    assert result.subresources_fetched == 0


def test_refused_subresource_is_a_warning_and_never_fetched(fixture_site: FixtureSite,
                                                             tmp_path: Path) -> None:
    """A subresource on a private address is skipped with the guard's message."""
    warc = tmp_path / "capture.warc.gz"
    result = record_capture(fixture_site.url("/page-with-private.html"), warc_path=warc,
                            options=local(allow_private_networks=False), warcinfo=WARCINFO,
                            address_policy=only_127_0_0_1)
    assert result.subresources_fetched == 1
    assert [x.url for x in result.exchanges] == [
        fixture_site.url("/page-with-private.html"), fixture_site.url("/img/pixel.png")]
    (warning,) = result.warnings
    assert warning == (
        "subresource not captured: refusing to fetch "
        f"http://127.0.0.2:{fixture_site.http_port}/img/pixel.png: 127.0.0.2 is a loopback "
        "address; set capture.allow_private_networks = true to allow"
    )
    assert warcio_check(warc).returncode == 0


# -- limits and failures of the main document ---------------------------------------------


def test_slow_endless_response_hits_the_capture_deadline(fixture_site: FixtureSite,
                                                          tmp_path: Path) -> None:
    """A trickling, never-ending body raises FetchTimeout near timeout_seconds."""
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match=r"time limit of 1 s ran out while fetching .*/slow"):
        record_capture(fixture_site.url("/slow"), warc_path=tmp_path / "x.warc.gz",
                       options=local(timeout_seconds=1.0), warcinfo=WARCINFO)
    assert time.monotonic() - started < 10
    assert_nothing_published(tmp_path)


def test_oversized_page_fails_and_publishes_nothing(fixture_site: FixtureSite,
                                                     tmp_path: Path) -> None:
    """Over max_response_bytes the capture fails with ResponseTooLarge; no file remains."""
    assert BIG_SIZE > 1024 * 1024
    with pytest.raises(ResponseTooLarge, match=r"/big is larger than 1048576 bytes "
                                               r"\(capture\.max_response_bytes\)"):
        record_capture(fixture_site.url("/big"), warc_path=tmp_path / "x.warc.gz",
                       options=local(max_response_bytes=1024 * 1024), warcinfo=WARCINFO)
    assert_nothing_published(tmp_path)


def test_loopback_name_is_refused_at_connect_time(fixture_site: FixtureSite,
                                                   tmp_path: Path) -> None:
    """'localhost' resolves to loopback: refused, host and address named, nothing kept."""
    url = f"http://localhost:{fixture_site.http_port}/page.html"
    with pytest.raises(FetchRefused) as caught:
        record_capture(url, warc_path=tmp_path / "x.warc.gz",
                       options=local(allow_private_networks=False), warcinfo=WARCINFO)
    assert str(caught.value) == (
        f"refusing to fetch {url}: localhost (127.0.0.1) is a loopback address; "
        "set capture.allow_private_networks = true to allow"
    )
    assert_nothing_published(tmp_path)


def test_literal_loopback_url_is_refused(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """A literal 127.0.0.1 URL is refused with the documented one-line message."""
    url = fixture_site.url("/page.html")
    with pytest.raises(FetchRefused) as caught:
        record_capture(url, warc_path=tmp_path / "x.warc.gz",
                       options=local(allow_private_networks=False), warcinfo=WARCINFO)
    assert str(caught.value) == (
        f"refusing to fetch {url}: 127.0.0.1 is a loopback address; "
        "set capture.allow_private_networks = true to allow"
    )
    assert_nothing_published(tmp_path)


def test_redirect_from_public_page_to_loopback_is_refused(fixture_site: FixtureSite,
                                                           tmp_path: Path) -> None:
    """Every redirect hop passes the guard: a "public" page redirecting to loopback fails."""
    with pytest.raises(FetchRefused) as caught:
        record_capture(fixture_site.url("/to-loopback"), warc_path=tmp_path / "x.warc.gz",
                       options=local(allow_private_networks=False), warcinfo=WARCINFO,
                       address_policy=only_127_0_0_1)
    assert str(caught.value) == (
        f"refusing to fetch http://127.0.0.2:{fixture_site.http_port}/page.html: 127.0.0.2 is "
        "a loopback address; set capture.allow_private_networks = true to allow"
    )
    assert_nothing_published(tmp_path)


def test_redirect_to_file_scheme_is_refused(fixture_site: FixtureSite, tmp_path: Path) -> None:
    """A redirect to file:///etc/passwd is refused, whatever private networks allow."""
    with pytest.raises(FetchRefused, match="scheme 'file' is not allowed"):
        record_capture(fixture_site.url("/to-file"), warc_path=tmp_path / "x.warc.gz",
                       options=local(), warcinfo=WARCINFO)
    assert_nothing_published(tmp_path)


def test_unresolvable_host_fails_without_touching_the_internet(tmp_path: Path) -> None:
    """A .invalid name (RFC 6761, never resolves) fails as a network error."""
    from archiver.errors import FetchFailed

    with pytest.raises(FetchFailed, match=r"could not fetch http://capture\.invalid/"):
        record_capture("http://capture.invalid/", warc_path=tmp_path / "x.warc.gz",
                       options=local(), warcinfo=WARCINFO)
    assert_nothing_published(tmp_path)


# -- TLS ------------------------------------------------------------------------------------


def test_https_capture_records_the_certificate_chain(fixture_site: FixtureSite,
                                                      tmp_path: Path) -> None:
    """A metadata record (PEM, leaf then CA) refers to the response; leaf SHA-256 returned."""
    result, warc = capture(fixture_site, "/page.html", tmp_path, tls=True,
                           fetch_subresources=False)
    records = read_records(warc)
    assert [r.type for r in records] == ["warcinfo", "request", "response", "metadata"]
    response, metadata = records[2], records[3]
    assert response.block == fixture_site.response("/page.html")
    assert metadata.header("Content-Type") == "application/x-pem-file"
    assert metadata.header("WARC-Refers-To") == response.id
    assert metadata.header("WARC-Target-URI") == fixture_site.url("/page.html", tls=True)
    chain = x509.load_pem_x509_certificates(metadata.block)
    from cryptography.hazmat.primitives.serialization import Encoding

    assert [c.public_bytes(Encoding.DER) for c in chain] == [fixture_site.leaf_der,
                                                             fixture_site.ca_der]
    assert result.tls_certificate_sha256 == hashlib.sha256(fixture_site.leaf_der).hexdigest()
    assert result.tls_chain_pem == metadata.block.decode("ascii")
    assert result.exchanges[0].certificate_record_id == metadata.id


def test_untrusted_certificate_fails_with_tls_error(fixture_site: FixtureSite,
                                                     tmp_path: Path) -> None:
    """Without the test CA the handshake fails: TlsError naming the verification failure."""
    with pytest.raises(TlsError, match="certificate verify failed"):
        record_capture(fixture_site.url("/page.html", tls=True),
                       warc_path=tmp_path / "x.warc.gz", options=local(), warcinfo=WARCINFO)
    assert_nothing_published(tmp_path)


def test_verify_tls_off_still_records_the_served_certificate(fixture_site: FixtureSite,
                                                              tmp_path: Path) -> None:
    """verify_tls=False: the capture succeeds and the chain as served is recorded."""
    result, _ = capture(fixture_site, "/page.html", tmp_path, verify_tls=False,
                        fetch_subresources=False)
    result_tls = record_capture(fixture_site.url("/page.html", tls=True),
                                warc_path=tmp_path / "tls.warc.gz",
                                options=local(verify_tls=False, fetch_subresources=False),
                                warcinfo=WARCINFO)
    assert result.tls_certificate_sha256 is None
    assert result_tls.tls_certificate_sha256 == hashlib.sha256(
        fixture_site.leaf_der).hexdigest()

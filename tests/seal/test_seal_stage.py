"""The seal stage is pure: the same recording, host facts, key and clock give the same
signed bytes, and everything it states comes from its arguments."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from archiver.capture.fetcher import DerivedArtifact, FetcherReport, Outcome
from archiver.capture.page import PageCapture
from archiver.capture.seal import seal
from archiver.capture.values import CaptureRequest, HostFacts, Recording, StagedFile
from archiver.recorder.model import ExchangeSummary
from chain_of_custody.digest import digest_bytes
from chain_of_custody.keys import SigningKey
from chain_of_custody.manifest import Artifact, Manifest, verify_manifest

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 27, 12, 0, 3, 250000, tzinfo=UTC)
SEALED = datetime(2026, 11, 27, 12, 0, 4, tzinfo=UTC)


def _recording(tmp_path: Path) -> Recording:
    warc = tmp_path / "capture.warc.gz"
    warc.write_bytes(b"warc bytes")
    shot = tmp_path / "screenshot.png"
    shot.write_bytes(b"png bytes")
    page = PageCapture(
        requested_url="https://example.org/post/1", final_url="https://example.org/post/1",
        status=200, peer_ip="93.184.216.34", peer_port=443, tls_certificate_sha256="ab" * 32,
        tls_chain_pem=None, redirects=(), content_type="text/html", links=(),
        subresources_fetched=0, response_record_id="<urn:uuid:1>",
    )
    exchange = ExchangeSummary(
        url=page.final_url, method="GET", role="page", status=200, peer_ip="93.184.216.34",
        peer_port=443, request_record_id="<urn:uuid:0>", response_record_id="<urn:uuid:1>",
        certificate_record_id=None, response_bytes=1234, truncated=False, started=T0,
        ended=T0,
    )
    report = FetcherReport(
        name="browser", outcome=Outcome("ok"),
        artifacts=(DerivedArtifact("screenshot.png", "screenshot", "image/png", shot,
                                   digest_bytes(b"png bytes")),),
        software={"chromium": "156.0"}, summary={"title": "Post 1"},
        provenance={"flags": ["--x"]},
    )
    return Recording(
        page=page, exchanges=(exchange,), warnings=("one warning",), started=T0, ended=T1,
        warc=StagedFile(Artifact("capture.warc.gz", "warc", "application/warc",
                                 digest_bytes(b"warc bytes")), path=warc),
        reports=(report,),
    )


HOST = HostFacts(hostname="archive-1", platform="Linux-test", operator="analyst@test",
                 software={"evidence-archiver": "0.1.0", "python": "3.11.7"},
                 capture_options={"timeout_seconds": 120.0}, config_sha256="cd" * 32)
REQUEST = CaptureRequest(capture_id="c0ffee00-0000-4000-8000-000000000001",
                         url="https://example.org/post/1", actor="analyst@test", via="cli",
                         requested_at=T0, case="Case 1", note=None, source=None)


def test_seal_is_deterministic_and_states_only_its_arguments(tmp_path: Path) -> None:
    """Twice the same inputs: byte-identical manifest, signature and provenance; the
    manifest verifies, lists every artifact with its digests, names the host facts,
    the fetcher's software and outcome; provenance carries the injected seal time."""
    key = SigningKey.generate()
    recording = _recording(tmp_path)
    first = seal(REQUEST, recording, host=HOST, key=key, clock=lambda: SEALED)
    second = seal(REQUEST, recording, host=HOST, key=key, clock=lambda: SEALED)
    assert first == second
    assert first.manifest.data is not None
    assert first.signature.data is not None
    manifest = verify_manifest(first.manifest.data, first.signature.data,
                               {key.key_id: key.public})
    assert manifest == Manifest.parse(first.manifest.data)
    assert [a.name for a in manifest.artifacts] == ["capture.warc.gz", "screenshot.png",
                                                    "provenance.json"]
    assert manifest.happened.host == "archive-1"
    assert manifest.happened.software["chromium"] == "156.0"
    assert manifest.happened.fetchers["browser"]["title"] == "Post 1"
    assert manifest.requested.case == "Case 1"
    provenance = next(f for f in first.files if f.name == "provenance.json")
    assert provenance.data is not None
    document = json.loads(provenance.data)
    assert document["timings"]["sealed"] == "2026-11-27T12:00:04.000000Z"
    assert document["host"] == {"hostname": "archive-1", "platform": "Linux-test",
                                "operator": "analyst@test"}
    assert manifest.artifact("provenance.json").digest == digest_bytes(provenance.data)

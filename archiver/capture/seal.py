"""Seal: a recording becomes signed evidence.

Pure: everything it states comes in as arguments (the request, the recording, the host
facts gathered at the edge, the key, the clock), and what it makes (``provenance.json``,
the RFC 8785 manifest, the Ed25519 signature) comes back in memory, in a
:class:`~archiver.capture.values.Sealed`; it opens no file, socket or database. So the
exact bytes of a seal are pinned by a test with a fixed clock and key, and an
import-linter contract keeps I/O modules out of this one.

What is sealed is what the record stage measured while writing: every artifact's size,
SHA-256 and SHA-512 were computed as its bytes went to disk, and are taken from there,
not re-read.
"""

from __future__ import annotations

from typing import Any

from archiver.capture.values import CaptureRequest, HostFacts, Recording, Sealed, StagedFile
from archiver.clock import Clock, rfc3339
from chain_of_custody.digest import digest_bytes
from chain_of_custody.keys import SigningKey
from chain_of_custody.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Artifact,
    build_manifest,
    canonical_json,
    sign_manifest,
)

PROVENANCE_FILE = "provenance.json"
PROVENANCE_TYPE = "evidence-archiver/provenance/v1"


def seal(request: CaptureRequest, recording: Recording, *, host: HostFacts,
         key: SigningKey, clock: Clock) -> Sealed:
    """Describe, list and sign what ``recording`` holds.

    Raises ``ValueError`` only for programming errors (two artifacts of one name, an
    unknown role); a target cannot make seal fail.
    """
    files = [recording.warc]
    for report in recording.reports:
        files += [StagedFile(Artifact(d.name, d.role, d.media_type, d.digest), path=d.path)
                  for d in report.artifacts]
    provenance = canonical_json(provenance_json(request, recording, host,
                                                sealed_at=rfc3339(clock())))
    files.append(StagedFile(Artifact(PROVENANCE_FILE, "provenance", "application/json",
                                     digest_bytes(provenance)), data=provenance))
    software = dict(host.software)
    for report in recording.reports:
        software.update(report.software)
    page = recording.page
    manifest = build_manifest(
        capture_id=request.capture_id,
        requested=request.manifest_json(),
        happened={
            "started": rfc3339(recording.started),
            "ended": rfc3339(recording.ended),
            "host": host.hostname,
            "software": software,
            "fetchers": {
                report.name: {"outcome": report.outcome.as_json(), **report.summary}
                for report in recording.reports
            },
        },
        target={
            "final_url": page.final_url,
            "http_status": page.status,
            "peer_ip": page.peer_ip,
            "tls_certificate_sha256": page.tls_certificate_sha256,
            "redirects": [{"url": u, "status": s} for u, s in page.redirects],
            "content_type": page.content_type,
        },
        artifacts=[f.artifact for f in files],
        key_id=key.key_id,
    )
    signed = sign_manifest(manifest, key)
    # The manifest and its signature are stored and listed like artifacts, but the
    # manifest cannot list itself: the roles "manifest"/"signature" exist only outside it.
    return Sealed(
        capture_id=request.capture_id,
        key_id=key.key_id,
        files=tuple(files),
        manifest=StagedFile(Artifact(MANIFEST_FILE, "manifest", "application/json",
                                     signed.digest), data=signed.canonical),
        signature=StagedFile(Artifact(SIGNATURE_FILE, "signature", "application/octet-stream",
                                      digest_bytes(signed.signature)), data=signed.signature),
    )


def provenance_json(request: CaptureRequest, recording: Recording, host: HostFacts, *,
                    sealed_at: str) -> dict[str, Any]:
    """``provenance.json``: software, host, options, timings and every exchange."""
    duration = (recording.ended - recording.started).total_seconds()
    page = recording.page
    return {
        "type": PROVENANCE_TYPE,
        "capture_id": request.capture_id,
        "software": dict(host.software),
        "host": {"hostname": host.hostname, "platform": host.platform,
                 "operator": host.operator},
        "options": dict(host.capture_options),
        "config_sha256": host.config_sha256,
        "timings": {
            "started": rfc3339(recording.started),
            "ended": rfc3339(recording.ended),
            "duration_ms": round(duration * 1000, 3),
            "sealed": sealed_at,
        },
        "network": {
            "requested_url": page.requested_url,
            "final_url": page.final_url,
            "peer_ip": page.peer_ip,
            "peer_port": page.peer_port,
            "tls_certificate_sha256": page.tls_certificate_sha256,
            "redirects": [{"url": u, "status": s} for u, s in page.redirects],
            "exchanges": [
                {
                    "url": x.url,
                    "method": x.method,
                    "role": x.role,
                    "status": x.status,
                    "peer_ip": x.peer_ip,
                    "started": rfc3339(x.started),
                    "ended": rfc3339(x.ended),
                    "response_bytes": x.response_bytes,
                    "truncated": x.truncated,
                    "revisit_of": x.revisit_of,
                }
                for x in recording.exchanges
            ],
        },
        "subresources_fetched": page.subresources_fetched,
        "fetchers": {
            report.name: {"outcome": report.outcome.as_json(), **report.provenance}
            for report in recording.reports
        },
        "warnings": list(recording.warnings),
        **({"urls": dict(recording.urls)} if recording.urls else {}),
        **({"budget": dict(recording.budget)} if recording.budget else {}),
    }

"""Commit: what happened to a capture, on the ledger and in the database, at once.

Three steps write to the database, each in a transaction the caller opens:

* :func:`open_request` appends ``capture.requested`` (and creates the case) before
  anything is fetched, so a capture that dies half-way is still on the ledger;
* :func:`commit_completed` appends ``capture.completed`` (naming the manifest, the
  signature, every artifact and every store that holds them), ``target.gone`` for each
  fetcher that saw the post taken down, and inserts the capture and artifact rows;
* :func:`commit_failed` appends ``capture.failed`` with the reason and inserts the row.

Whatever else must change with the capture (the job that asked for it, a takedown a
revisit found) is written by the caller in the same transaction, so the ledger never
says a capture completed while its job still runs, or the other way round. Nothing is
committed before every file is stored and verified (the store stage), so no entry ever
names a half-written file.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa

from archiver import models
from archiver.capture.values import (
    SERVICE_ACTOR,
    ArtifactView,
    Capture,
    CaptureRequest,
    Failure,
    Recording,
    Stored,
)
from archiver.clock import rfc3339
from chain_of_custody.ledger import Ledger


def open_request(conn: sa.Connection, ledger: Ledger, request: CaptureRequest, *,
                 now: datetime) -> int | None:
    """Append ``capture.requested``; returns the case's id (creating the case), if any."""
    case_id = case_id_for(conn, request.case, now=now) if request.case else None
    ledger.append(actor=request.actor, action="capture.requested",
                  subject=f"capture:{request.capture_id}", payload=request.ledger_json(),
                  connection=conn)
    return case_id


def completed(request: CaptureRequest, recording: Recording, stored: Stored) -> Capture:
    """The capture as :func:`commit_completed` will record it (``ledger_seq`` unset)."""
    sealed = stored.sealed
    page = recording.page
    return Capture(
        id=request.capture_id, url=request.url, case=request.case, note=request.note,
        requested_by=request.actor, requested_via=request.via,
        requested_at=request.at, status="completed", reason=None, message=None,
        started=rfc3339(recording.started), ended=rfc3339(recording.ended),
        final_url=page.final_url, http_status=page.status,
        manifest_sha256=sealed.manifest.digest.sha256, key_id=sealed.key_id,
        ledger_seq=None,
        artifacts=tuple(sorted(
            (ArtifactView(f.name, f.artifact.role, f.artifact.media_type, f.digest.size,
                          f.digest.sha256, f.digest.sha512) for f in sealed.all_files),
            key=lambda a: a.name)),
        outcomes=recording.outcomes,
    )


def failed(request: CaptureRequest, failure: Failure) -> Capture:
    """The capture as :func:`commit_failed` will record it (``ledger_seq`` and the
    time it ended unset)."""
    return Capture(
        id=request.capture_id, url=request.url, case=request.case, note=request.note,
        requested_by=request.actor, requested_via=request.via, requested_at=request.at,
        status="failed", reason=failure.reason, message=failure.message, started=None,
        ended=None, final_url=None, http_status=None, manifest_sha256=None,
        key_id=None, ledger_seq=None,
    )


def commit_completed(conn: sa.Connection, ledger: Ledger, capture: Capture,
                     recording: Recording, stored: Stored, *, case_id: int | None) -> Capture:
    """Record ``capture`` (made by :func:`completed`) as completed; returns it as
    recorded."""
    entry = ledger.append(
        actor=SERVICE_ACTOR,
        action="capture.completed",
        subject=f"capture:{capture.id}",
        payload={
            "url": capture.url,
            "final_url": capture.final_url,
            "http_status": capture.http_status,
            "fetchers": recording.outcomes,
            "manifest_sha256": capture.manifest_sha256,
            "signature_sha256": stored.sealed.signature.digest.sha256,
            "key_id": capture.key_id,
            "artifacts": [{"name": f.name, "sha256": f.digest.sha256, "size": f.digest.size}
                          for f in stored.sealed.all_files],
            "stores": list(stored.stores),
        },
        connection=conn,
    )
    capture = replace(capture, ledger_seq=entry.seq)
    conn.execute(sa.insert(models.captures).values(
        id=capture.id, url=capture.url, case_id=case_id, note=capture.note,
        requested_by=capture.requested_by, requested_via=capture.requested_via,
        requested_at=capture.requested_at, status=capture.status, started=capture.started,
        ended=capture.ended, final_url=capture.final_url, http_status=capture.http_status,
        manifest_sha256=capture.manifest_sha256, key_id=capture.key_id,
        ledger_seq=capture.ledger_seq, outcomes=json.dumps(capture.outcomes, sort_keys=True),
    ))
    for report in recording.gone:
        # The platform's refusal is itself evidence, sealed in this capture.
        ledger.append(
            actor=SERVICE_ACTOR,
            action="target.gone",
            subject=f"capture:{capture.id}",
            payload={"url": capture.url, "fetcher": report.name,
                     "reason": report.outcome.reason, "message": report.outcome.message,
                     "manifest_sha256": capture.manifest_sha256},
            connection=conn,
        )
    conn.execute(sa.insert(models.artifacts), [
        {"capture_id": capture.id, "name": a.name, "role": a.role,
         "media_type": a.media_type, "size": a.size, "sha256": a.sha256, "sha512": a.sha512}
        for a in capture.artifacts
    ])
    return capture


def commit_failed(conn: sa.Connection, ledger: Ledger, capture: Capture, *,
                  case_id: int | None) -> Capture:
    """Record ``capture`` (made by :func:`failed`) as failed; returns it as recorded."""
    entry = ledger.append(
        actor=SERVICE_ACTOR,
        action="capture.failed",
        subject=f"capture:{capture.id}",
        payload={"url": capture.url, "reason": capture.reason, "message": capture.message},
        connection=conn,
    )
    capture = replace(capture, ended=entry.time, ledger_seq=entry.seq)
    conn.execute(sa.insert(models.captures).values(
        id=capture.id, url=capture.url, case_id=case_id, note=capture.note,
        requested_by=capture.requested_by, requested_via=capture.requested_via,
        requested_at=capture.requested_at, status="failed", reason=capture.reason,
        message=capture.message, ended=capture.ended, ledger_seq=capture.ledger_seq,
    ))
    return capture


def case_id_for(conn: sa.Connection, name: str, *, now: datetime) -> int:
    """The id of the case called ``name``, created if new."""
    found = conn.execute(
        sa.select(models.cases.c.id).where(models.cases.c.name == name)
    ).scalar_one_or_none()
    if found is not None:
        return int(found)
    inserted = conn.execute(sa.insert(models.cases).values(name=name, created=rfc3339(now)))
    primary_key = inserted.inserted_primary_key
    assert primary_key is not None
    return int(primary_key[0])

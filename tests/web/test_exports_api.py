"""Exports through the API: asked for by a case's legal member, made in the server's
background worker, downloaded streamed, verified by ``archiver verify-bundle``; the
ledger names the person throughout; other cases' people get 404. Over the real app on a
real port (tests/fixtures/api.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from api_fixtures import Api
from fixture_site import FixtureSite

from archiver import models
from archiver.capture.leases import ProcessIdentity
from archiver.clock import rfc3339
from archiver.export.requests import ExportQueueFull, ExportWorker
from chain_of_custody.ledger import LedgerEntry

NOT_FOUND = {"error": {"code": "not-found", "message": "not found"}}


def capture(api: Api, site: FixtureSite, path: str, case: str) -> str:
    """A capture of the fixture site's ``path`` filed under ``case`` (by the CLI)."""
    return str(api.cli.json("capture", site.url(path), "--case", case)["id"])


def wait_done(http: httpx.Client, export_id: str, *, seconds: float = 120) -> dict[str, Any]:
    """The export once it is done or failed (polled with a deadline)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = http.get(f"/api/exports/{export_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["state"] in ("done", "failed"):
            return body
        assert time.monotonic() < deadline, f"export still {body['state']}"
        time.sleep(0.1)


def entries(api: Api, action: str) -> list[LedgerEntry]:
    return list(api.archive.ledger.entries(actions=[action]))


def context_of(http: httpx.Client) -> dict[str, str]:
    """What the ledger records as the context of a client's requests."""
    me = http.get("/api/me").json()
    context = {"client": "127.0.0.1"}
    if me["session"] is not None:
        context["session"] = me["session"]
    if me["token"] is not None:
        context["token"] = me["token"]["id"]
    return context


def test_export_end_to_end(api: Api, fixture_site: FixtureSite, tmp_path: Path) -> None:
    """POST export -> poll until done -> download the ZIP streamed -> verify-bundle
    accepts it with the key the API publishes; export.requested, bundle.exported and
    access.downloaded name the legal member and the session they came through."""
    lena = api.user("lena", cases={"Case 7": "legal"})
    first = capture(api, fixture_site, "/page.html", "Case 7")
    second = capture(api, fixture_site, "/gone-404", "Case 7")
    http = lena.client()
    context = context_of(http)

    asked = http.post("/api/cases/Case 7/exports", json={})
    assert asked.status_code == 202, asked.text
    export_id = asked.json()["export_id"]
    assert asked.headers["location"] == f"/api/exports/{export_id}"
    assert asked.json()["state"] in ("queued", "running", "done")
    (requested,) = entries(api, "export.requested")
    assert (requested.actor, requested.subject) == ("user:lena", "case:Case 7")
    assert requested.payload == {"export_id": export_id, "case": "Case 7", "captures": None,
                                 "context": context}

    done = wait_done(http, export_id)
    assert done["state"] == "done", done["error"]
    assert done["bundle"] == f"/api/exports/{export_id}/bundle"
    (exported,) = entries(api, "bundle.exported")
    assert done["ledger_seq"] == exported.seq
    assert exported.actor == "user:lena"
    assert exported.payload["context"] == context
    assert sorted(exported.payload["captures"]) == sorted([first, second])
    assert exported.payload["bundle_sha256"] == done["sha256"]

    bundle = tmp_path / "bundle.zip"
    with http.stream("GET", done["bundle"]) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/zip"
        assert answer.headers["content-disposition"] == \
            f'attachment; filename="{done["file_name"]}"'
        assert int(answer.headers["content-length"]) == done["size"]
        with bundle.open("wb") as out:
            for chunk in answer.iter_bytes():
                out.write(chunk)
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == done["sha256"]
    (downloaded,) = [e for e in entries(api, "access.downloaded")
                     if e.payload.get("export_id") == export_id]
    assert (downloaded.actor, downloaded.subject) == ("user:lena", "case:Case 7")
    assert downloaded.payload == {"export_id": export_id, "bundle_sha256": done["sha256"],
                                  "size": done["size"], "file_name": done["file_name"],
                                  "context": context}

    keys = http.get("/api/keys").json()["items"]
    (tmp_path / "key.pem").write_text(keys[-1]["public_pem"])
    # exit 0 (cli.ok); no TSA is configured here, and verify-bundle says so
    out = api.cli.ok("verify-bundle", str(bundle), "--trusted-key", str(tmp_path / "key.pem"))
    assert out.splitlines()[-1] == f"bundle {bundle}: verified (no trusted timestamp)"

    listed = http.get("/api/cases/Case 7/exports").json()
    assert [e["export_id"] for e in listed["items"]] == [export_id]
    assert listed["next"] is None


def test_bundle_range_and_not_ready(api: Api, fixture_site: FixtureSite) -> None:
    """A byte range of the bundle is 206 with those bytes (recorded with the range); a
    range past the end is 416; one capture of the case can be asked for alone."""
    lena = api.user("lena", cases={"Case 7": "legal"})
    only = capture(api, fixture_site, "/page.html", "Case 7")
    capture(api, fixture_site, "/gone-404", "Case 7")
    http = lena.client()
    asked = http.post("/api/cases/Case 7/exports", json={"capture_ids": [only]})
    assert asked.status_code == 202, asked.text
    assert asked.json()["captures"] == [only]
    done = wait_done(http, asked.json()["export_id"])
    assert done["state"] == "done", done["error"]
    whole = http.get(done["bundle"]).content
    part = http.get(done["bundle"], headers={"Range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-109/{done['size']}"
    assert part.content == whole[10:110]
    ranged = [e for e in entries(api, "access.downloaded") if "range" in e.payload]
    assert [e.payload["range"] for e in ranged] == [[10, 109]]
    past = http.get(done["bundle"], headers={"Range": f"bytes={done['size']}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{done['size']}"
    (exported,) = entries(api, "bundle.exported")
    assert exported.payload["captures"] == [only]


def test_other_cases_get_404_and_roles_without_export_403(
        api: Api, fixture_site: FixtureSite) -> None:
    """Legal of another case gets the same 404 as for nothing at all, on the case, the
    export and its bundle; an investigator of the case may not export (403); a capture
    of another case in capture_ids is 404 and nothing is queued."""
    lena = api.user("lena", cases={"Case 7": "legal"})
    carol = api.user("carol", cases={"Case 8": "legal"})
    ivan = api.user("ivan", cases={"Case 7": "investigator"})
    capture(api, fixture_site, "/page.html", "Case 7")
    theirs = capture(api, fixture_site, "/gone-404", "Case 8")
    http = lena.client()
    export_id = http.post("/api/cases/Case 7/exports").json()["export_id"]
    wait_done(http, export_id)

    other = carol.client()
    for answer in (other.post("/api/cases/Case 7/exports", json={}),
                   other.post("/api/cases/Nope/exports", json={}),
                   other.get("/api/cases/Case 7/exports"),
                   other.get(f"/api/exports/{export_id}"),
                   other.get(f"/api/exports/{export_id}/bundle"),
                   other.get("/api/exports/exp_0000000000000000"),
                   other.get("/api/exports/exp_0000000000000000/bundle")):
        assert answer.status_code == 404
        assert answer.json() == NOT_FOUND
    forbidden = ivan.client().post("/api/cases/Case 7/exports", json={})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"

    mixed = http.post("/api/cases/Case 7/exports", json={"capture_ids": [theirs]})
    assert mixed.status_code == 404
    assert mixed.json() == NOT_FOUND
    unfiled = http.post("/api/cases/unfiled/exports", json={})
    assert unfiled.status_code == 400
    assert unfiled.json()["error"]["message"] == (
        "the unfiled captures are not a case; file them under a case to export them")
    bad = http.post("/api/cases/Case 7/exports", json={"capture_ids": ["short"]})
    assert bad.status_code == 422
    assert len(entries(api, "export.requested")) == 1


def test_a_case_without_captures_is_refused(api: Api) -> None:
    """Nothing to export: 409 with the reason, nothing queued."""
    lena = api.user("lena", cases={"Empty": "legal"})
    answer = lena.client().post("/api/cases/Empty/exports", json={})
    assert answer.status_code == 409
    assert answer.json()["error"] == {"code": "refused",
                                      "message": "case 'Empty' has no captures to export"}
    assert entries(api, "export.requested") == []


def test_a_token_of_export_scope_exports(api: Api, fixture_site: FixtureSite) -> None:
    """A bearer token of scope export asks and downloads; the ledger names its token."""
    lena = api.user("lena", cases={"Case 7": "legal"})
    capture(api, fixture_site, "/page.html", "Case 7")
    secret = lena.token("export", ["Case 7"])
    http = api.anonymous(bearer=secret)
    context = context_of(http)
    assert "token" in context
    asked = http.post("/api/cases/Case 7/exports", json={})
    assert asked.status_code == 202, asked.text
    done = wait_done(http, asked.json()["export_id"])
    assert done["state"] == "done", done["error"]
    (exported,) = entries(api, "bundle.exported")
    assert exported.payload["context"] == context
    reader = api.anonymous(bearer=lena.token("read", ["Case 7"]))
    assert reader.post("/api/cases/Case 7/exports", json={}).status_code == 403


def _dead_worker() -> str:
    """The worker name of a process of this machine that has ended."""
    process = subprocess.Popen(["true"])  # a process that ends at once
    process.wait()
    here = ProcessIdentity.current()
    return "|".join([str(process.pid), "1", here.boot_id or "", here.pid_namespace or "",
                     here.host])


def test_exports_left_by_a_dead_server_are_failed_at_start_up(api: Api) -> None:
    """An export left running by a server process that is gone, and one queued by a
    server (elsewhere) whose lease ran out, are marked failed when a server starts,
    saying why; export.failed is on the ledger; a live lease is left alone."""
    case_id = api.case("Case 7")
    now = api.archive.clock()
    rows = [
        ("exp_dead000000000001", "running", _dead_worker(), rfc3339(now)),
        ("exp_lapsed0000000002", "queued", "1|1|other-boot|other-ns|elsewhere",
         "2020-01-01T00:00:00.000000Z"),
        ("exp_alive0000000003", "running", "1|1|other-boot|other-ns|elsewhere",
         "2999-01-01T00:00:00.000000Z"),
    ]
    with api.archive.engine.begin() as conn:
        for export_id, state, worker, lease in rows:
            conn.execute(sa.insert(models.exports).values(
                id=export_id, case_id=case_id, requested_by="user:lena", created=rfc3339(now),
                state=state, worker=worker, lease_until=lease))
    api.start()
    with api.archive.engine.connect() as conn:
        found = {r.id: r for r in conn.execute(sa.select(models.exports))}
    assert found["exp_dead000000000001"].state == "failed"
    assert found["exp_dead000000000001"].error == (
        "the server running this export stopped before it finished (its server process "
        "is gone); ask for the export again")
    assert found["exp_lapsed0000000002"].state == "failed"
    assert found["exp_lapsed0000000002"].error == (
        "the server waiting this export stopped before it finished (its server stopped "
        "renewing its lease (it ran out at 2020-01-01T00:00:00.000000Z)); ask for the "
        "export again")
    assert found["exp_alive0000000003"].state == "running"
    failed = entries(api, "export.failed")
    assert sorted(e.payload["export_id"] for e in failed) == [
        "exp_dead000000000001", "exp_lapsed0000000002"]
    assert {(e.actor, e.subject) for e in failed} == {("service:archiver", "case:Case 7")}


def test_the_queue_is_bounded(api: Api) -> None:
    """A worker of one thread and no queue takes one export; the next is refused until
    it ends; stopping fails what never started."""
    case_id = api.case("Case 7")
    worker = ExportWorker(api.archive, workers=1, queue_size=0)  # not started: nothing runs
    first = worker.submit(case_id=case_id, capture_ids=None, actor="user:lena",
                          context={"client": "127.0.0.1"})
    with pytest.raises(ExportQueueFull) as refused:
        worker.submit(case_id=case_id, capture_ids=None, actor="user:lena", context=None)
    assert str(refused.value) == ("1 exports are running or waiting on this server already; "
                                  "ask again when one has finished")
    worker.stop(timeout=1)
    failed = worker.get(first.id)
    assert (failed.state, failed.error) == (
        "failed", "the server stopped before this export started; ask for it again")



def test_an_export_of_damaged_evidence_fails_saying_why(
        api: Api, fixture_site: FixtureSite, caplog: pytest.LogCaptureFixture) -> None:
    """A capture whose stored file is gone cannot be exported: the export ends failed
    with a reason code and a sentence that names no path of the server (the store's
    error, paths and all, is in the server's log only), export.failed is on the ledger
    with the same two, there is no bundle."""
    lena = api.user("lena", cases={"Case 7": "legal"})
    capture_id = capture(api, fixture_site, "/page.html", "Case 7")
    artifact = next(a for a in api.archive.get_capture(capture_id).artifacts
                    if a.name.endswith(".warc.gz"))
    api.archive.store.stores[0].path_for(artifact.sha256).unlink()  # type: ignore[attr-defined]
    http = lena.client()
    export_id = http.post("/api/cases/Case 7/exports", json={}).json()["export_id"]
    with caplog.at_level(logging.WARNING, logger="archiver.export.requests"):
        failed = wait_done(http, export_id)
    assert (failed["state"], failed["reason"], failed["error"]) == (
        "failed", "store-unreadable", "a stored copy of the case's evidence could not be "
        "read; an auditor should verify the case's captures")
    (entry,) = entries(api, "export.failed")
    assert entry.payload == {"export_id": export_id, "requested_by": "user:lena",
                             "reason": "store-unreadable", "error": failed["error"]}
    store_root = str(api.archive.store.stores[0].root)  # type: ignore[attr-defined]
    (logged,) = [r.getMessage() for r in caplog.records if export_id in r.getMessage()]
    assert logged.startswith(f"export {export_id} failed (store-unreadable): cannot read "
                             f"blob {artifact.sha256}: ")
    assert store_root in logged  # the operator's log has the whole story …
    listed = http.get("/api/cases/Case 7/exports").json()["items"]
    for shown in (failed, *listed, entry.payload):  # … the person and the ledger none of it
        assert store_root not in json.dumps(shown)
        assert str(api.archive.settings.home) not in json.dumps(shown)
    assert entries(api, "bundle.exported") == []
    bundle = http.get(f"/api/exports/{export_id}/bundle")
    assert bundle.status_code == 409
    assert bundle.json()["error"] == {
        "code": "not-ready",
        "message": f"export {export_id} is failed; its bundle can be downloaded once it "
                   "is done"}


def test_the_exports_table_is_what_migration_0009_makes(database_url: str) -> None:
    """archiver.models.exports and migration 0009 agree on every column and index."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from archiver import schema
    from archiver.db import make_engine

    engine = make_engine(database_url)
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            def exports_only(obj: object, name: str | None, kind: str, *_: object) -> bool:
                table = name if kind == "table" else getattr(getattr(obj, "table", None),
                                                             "name", None)
                return table == "exports"

            context = MigrationContext.configure(conn, opts={"include_object": exports_only})
            assert compare_metadata(context, models.metadata) == []
            assert "exports" in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()

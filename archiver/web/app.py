"""The composition root of the HTTP API: :func:`create_app` over one open archive.

The app is a FastAPI application (chosen over Litestar: its dependency injection is how
every route declares its action and receives its :class:`~archiver.web.gate.Gate`, it
writes the OpenAPI document from the same declarations, and it streams responses
through Starlette without holding them in memory). Sync routes run in the server's
thread pool; :class:`~archiver.archive.Archive` is thread-safe.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archiver.web import errors
from archiver.web.auth import authenticate
from archiver.web.gate import Authenticator, CheckedMiddleware
from archiver.web.pagination import Cursors

if TYPE_CHECKING:
    from archiver.archive import Archive

MAX_BODY_BYTES = 1024 * 1024
"""The largest request body the API reads (a watchlist import is the largest: 1 MiB)."""

def content_security_policy(replay_origin: str | None) -> bytes:
    """The app's CSP: no inline script, nothing from elsewhere, except the frames of the
    replay origin (archived pages are replayed there, never here)."""
    frames = f"frame-src {replay_origin}; " if replay_origin else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; font-src 'self'; form-action 'self'; "
        f"{frames}base-uri 'none'; frame-ancestors 'none'"
    ).encode("ascii")


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", content_security_policy(None)),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
)


@dataclass(frozen=True, slots=True)
class WebOptions:
    """How the app is served (from ``archiver serve``'s options and settings)."""

    secure_cookies: bool = True  # False only for plain HTTP on loopback (--insecure-http)
    trusted_proxies: Sequence[str] = field(default_factory=tuple)  # honour X-Forwarded-* from these
    hsts: bool = False  # sent when served over TLS (directly or behind a proxy)
    export_workers: int = 1  # exports this server runs at once (each reads a whole case)
    export_queue: int = 4  # exports that may wait; beyond, POST .../exports answers 429
    replay_origin: str | None = None  # where captures are replayed (archiver.web.replay)
    assets_dir: Path | None = None  # node_modules of the vendored browser code (/assets/)


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response, unless the route set its own
    value (a download sets its own cache and disposition headers); the CSP allows
    frames of ``replay_origin`` when there is one."""

    def __init__(self, app: ASGIApp, *, hsts: bool, replay_origin: str | None = None) -> None:
        self.app = app
        csp = (b"content-security-policy", content_security_policy(replay_origin))
        self.headers = tuple(csp if name == csp[0] else (name, value)
                             for name, value in SECURITY_HEADERS) + (
            ((b"strict-transport-security", b"max-age=31536000"),) if hsts else ()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuses (413) a request body larger than ``limit``, whether announced by
    Content-Length or streamed in chunks, before a route reads it."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced < 0 or announced > self.limit:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # Starlette's HTTPException, not ApiError: FastAPI re-raises it from
                    # its body parsing (any other exception there becomes a 400).
                    raise HTTPException(413, f"the request body is larger than {self.limit} "
                                             "bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = errors.response(413, "too-large",
                                 f"the request body is larger than {self.limit} bytes")
        await answer(scope, receive, send)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (cursors, CSRF, replay tokens) from the web secret."""
    label = b"evidence-archiver web\x00" + purpose.encode()
    return hmac.new(secret, label, hashlib.sha256).digest()


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The background services of the server: started before the first request (the
    # export worker first marks failed what a dead server left), stopped after the last.
    exports = app.state.exports
    await run_in_threadpool(exports.start)
    try:
        yield
    finally:
        await run_in_threadpool(exports.stop)


def create_app(
    archive: Archive,
    *,
    secret: bytes,
    authenticator: Authenticator | None = None,
    options: WebOptions = WebOptions(),
) -> FastAPI:
    """The API over ``archive``. ``secret``: the archive's web secret (32 bytes).
    ``authenticator``: who sends a request; :func:`archiver.web.auth.authenticate`
    (session cookie with CSRF, or bearer token) unless a test gives another."""
    from archiver import __version__
    from archiver.export.requests import ExportWorker
    from archiver.web import assets, pages
    from archiver.web.api import ROUTERS
    from archiver.web.replay import ReplayTokens

    app = FastAPI(
        title="Evidence Archiver API",
        version=__version__,
        description="Submit, follow, view, verify and export evidence captures. "
                    "Every call is checked against the caller's roles; every view, "
                    "download and export is recorded on the custody ledger.",
        # The OpenAPI document only (served by api/health.py, declared like every
        # route): the interactive docs pages of FastAPI load their script from a CDN,
        # which the content security policy (rightly) refuses.
        docs_url=None, redoc_url=None, openapi_url=None,
        lifespan=_lifespan,
    )
    app.state.archive = archive
    app.state.exports = ExportWorker(archive, workers=options.export_workers,
                                     queue_size=options.export_queue)
    app.state.authenticator = authenticator or authenticate
    app.state.options = options
    app.state.secret = secret
    app.state.cursors = Cursors(derive_key(secret, "cursor"))
    app.state.replay_tokens = ReplayTokens(secret)
    errors.install(app)
    pages.install(app)  # the errors of page paths as HTML pages (after errors.install)
    for router in (*ROUTERS, assets.router):
        # Added as they are rather than with include_router (which recent FastAPI
        # versions resolve lazily, out of sight of app.routes): the route table a test
        # enumerates is then exactly what the app serves.
        app.router.routes.extend(router.routes)
    for router in pages.ROUTERS:
        app.router.routes.extend(router.routes)
    app.add_middleware(CheckedMiddleware)
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, hsts=options.hsts,
                       replay_origin=options.replay_origin)
    return app

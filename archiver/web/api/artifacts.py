"""``GET /api/captures/{id}/artifacts/{name}``: an artifact's bytes, streamed from the store.

Threat model, next to the code that defends against it:

- *Archived content is hostile.* A captured page, SVG or PDF served from the API's own
  origin could run script with the person's session. Every artifact answer carries
  ``Content-Security-Policy: sandbox`` (no script, no same-origin access even if a
  browser renders it) and ``nosniff``; anything a browser could render as active
  content is sent as ``attachment`` (see :func:`disposition`). Only the types listed in
  :data:`INLINE_TYPES` (and audio and video) may be shown inline.
- *A header from a captured server.* The recorded media type came from the captured
  site; it is sent as it was recorded only when it is a well-formed media type of
  printable ASCII (else ``application/octet-stream``), so it can never split a header.
  The file name is rebuilt from safe characters (RFC 6266, with ``filename*`` for the
  rest).
- *Altered evidence.* A full download re-hashes the bytes as they stream and holds the
  last piece back until the digest and length match what was recorded; on a mismatch
  the connection is cut, so the client is left with a truncated body (its length short
  of ``Content-Length``), never a clean copy of altered evidence, and the server logs
  it. A partial (Range) download cannot be checked piecewise: ``archiver verify`` and
  the full download are the judges.
- *An unrecorded access.* ``access.downloaded`` (artifact, digest, size, the range if
  partial, the person and how they came) is appended before the first byte is sent: the
  act is the access, even if the client stops reading.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from contextlib import ExitStack
from typing import Any, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from archiver.capture.values import ArtifactView
from archiver.logs import event
from archiver.people.access import Action
from archiver.web.api.captures import archive_of, checked_capture
from archiver.web.errors import ApiError, not_found
from archiver.web.gate import GateDep, route
from storage.errors import StorageError

log = logging.getLogger("archiver.web")
router = APIRouter(tags=["captures"])

CHUNK = 1024 * 1024

INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp",
    "text/plain", "application/json",
    "application/warc", "application/gzip", "application/x-gzip",
})
"""Media types a browser shows without running anything (with audio/* and video/*).
Everything else (HTML, XHTML, SVG, XML, JavaScript, PDF, any type not known here) is
sent as an attachment."""

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token
_MEDIA_TYPE = re.compile(
    rf"({_TCHARS})/({_TCHARS})"
    rf"((?:\s*;\s*{_TCHARS}=(?:{_TCHARS}|\"[^\"\\]*\"))*)\s*")
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})", re.IGNORECASE)
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_type(recorded: str) -> tuple[str, str]:
    """The Content-Type to send for a recorded media type, and its essence (lower-case
    ``type/subtype``); ``application/octet-stream`` when the record is not one."""
    match = _MEDIA_TYPE.fullmatch(recorded)
    if match is None or len(recorded) > 200:
        return "application/octet-stream", "application/octet-stream"
    return recorded.strip(), f"{match.group(1)}/{match.group(2)}".lower()


def inline_allowed(essence: str) -> bool:
    """Whether a browser may show this type in place (it runs no script)."""
    return essence in INLINE_TYPES or essence.startswith(("audio/", "video/"))


def disposition(name: str, *, inline: bool) -> str:
    """``Content-Disposition`` (RFC 6266): an ASCII ``filename`` made of safe
    characters, and ``filename*`` (RFC 5987) carrying the name in UTF-8."""
    base = name.rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\"\\") or "artifact"
    ascii_name = _FILENAME_UNSAFE.sub("_", base).strip("._") or "artifact"
    kind = "inline" if inline else "attachment"
    value = f'{kind}; filename="{ascii_name[:150]}"'
    if ascii_name != base:
        value += f"; filename*=UTF-8''{quote(base[:150], safe='')}"
    return value


class Unsatisfiable(Exception):
    """The Range asks for bytes past the end."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first and last byte a ``Range`` header asks for, or None to send it all (no
    header, a malformed one, or several ranges: RFC 9110 lets a server ignore those).
    Raises :class:`Unsatisfiable`."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)


class _Reader:
    """Reads ``length`` bytes from ``start`` in chunks; with ``expect`` (a full
    download) hashes them and withholds the last chunk until the SHA-256 and length
    match the record, raising :class:`_Altered` when they do not."""

    def __init__(self, stream: BinaryIO, start: int, length: int,
                 expect: ArtifactView | None) -> None:
        self.stream = stream
        self.left = length
        self.expect = expect
        self.hasher = hashlib.sha256() if expect is not None else None
        self.done = False
        if start:
            stream.seek(start)

    def next_chunk(self) -> bytes:
        """The next piece; b"" once all was given. Raises :class:`_Altered`."""
        if self.done:
            return b""
        chunk = self.stream.read(min(CHUNK, self.left)) if self.left > 0 else b""
        if self.left > 0 and not chunk:
            raise _Altered("the stored copy is shorter than recorded")
        self.left -= len(chunk)
        if self.hasher is not None:
            self.hasher.update(chunk)
        if self.left > 0:
            return chunk
        self.done = True
        if self.hasher is not None:
            assert self.expect is not None
            if self.stream.read(1):
                raise _Altered("the stored copy is longer than recorded")
            if self.hasher.hexdigest() != self.expect.sha256:
                raise _Altered("the stored copy does not match its recorded SHA-256")
        return chunk


class _Altered(Exception):
    pass


class ArtifactResponse(Response):
    """Streams an opened artifact (1 MiB pieces read in a worker thread, the next read
    while the previous piece is sent); cuts the connection if the bytes turn out not to
    be the recorded ones."""

    def __init__(self, *, stream: BinaryIO, closer: ExitStack, status_code: int,
                 headers: dict[str, str], start: int, length: int,
                 expect: ArtifactView | None, label: dict[str, Any]) -> None:
        self.status_code = status_code
        self.background: BackgroundTask | None = None
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in headers.items()]
        self._reader = _Reader(stream, start, length, expect)
        self._closer = closer
        self._label = label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch_disconnect())
        pending: asyncio.Future[bytes] | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            pending = loop.run_in_executor(None, self._reader.next_chunk)
            while True:
                try:
                    chunk = await pending
                except (_Altered, OSError) as exc:
                    # The one response that must not end cleanly: returning without the
                    # final message makes the server close the connection mid-body.
                    name = "download.altered" if isinstance(exc, _Altered) \
                        else "download.unreadable"
                    event(log, name, level=logging.ERROR, problem=str(exc), **self._label)
                    return
                if not chunk or gone.is_set():
                    break
                # the next piece is read (and hashed) while this one is sent
                pending = loop.run_in_executor(None, self._reader.next_chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            if pending is not None and not pending.done():
                # never close the file under a read still running in the pool
                await asyncio.wait([pending])
            if pending is not None and not pending.cancelled():
                pending.exception()  # retrieved: a read the exit cut short is no news
            await loop.run_in_executor(None, self._closer.close)


@route(router, "GET", "/api/captures/{capture_id}/artifacts/{name:path}",
       action=Action.ARTIFACT_DOWNLOAD, name="download_artifact",
       response_class=Response,
       responses={200: {"content": {"application/octet-stream": {}},
                        "description": "the artifact's bytes"},
                  206: {"description": "the requested byte range"},
                  416: {"description": "the range lies past the end"}})
def download_artifact(capture_id: str, name: str, gate: GateDep,
                      request: Request) -> Response:
    """The artifact's bytes (HTTP Range: one range, 206; past the end, 416), recorded
    as ``access.downloaded`` before the first byte is sent."""
    archive = archive_of(request)
    capture = checked_capture(request, gate, capture_id)
    artifact = next((a for a in capture.artifacts if a.name == name), None)
    if artifact is None:
        raise not_found()
    size = artifact.size
    etag = f'"{artifact.sha256}"'
    if_range = request.headers.get("if-range")
    wanted = None
    try:
        if if_range is None or if_range.strip() == etag:
            wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        raise ApiError(416, "range-not-satisfiable",
                       f"the range asks for bytes past the end of {name} ({size} bytes)",
                       {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
                       ) from None
    sent_type, essence = content_type(artifact.media_type)
    headers = {
        "Content-Type": sent_type,
        "Content-Disposition": disposition(name, inline=inline_allowed(essence)),
        "Content-Security-Policy": "sandbox",
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, no-store",
    }
    start, length = 0, size
    if wanted is not None:
        start, length = wanted[0], wanted[1] - wanted[0] + 1
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
    headers["Content-Length"] = str(length)
    closer = ExitStack()
    try:
        stream = closer.enter_context(archive.open_artifact(artifact))
    except StorageError as exc:
        closer.close()
        event(log, "download.unreadable", level=logging.ERROR, capture=capture.id,
              artifact=name, error=str(exc))
        raise ApiError(500, "evidence-unreadable",
                       f"the stored copy of {name} cannot be read; an operator should run "
                       f"'archiver verify {capture.id}'") from exc
    try:
        archive.record_download(capture, artifact, actor=gate.actor, context=gate.context(),
                                byte_range=wanted)
    except BaseException:
        closer.close()
        raise
    return ArtifactResponse(
        stream=stream, closer=closer, status_code=206 if wanted is not None else 200,
        headers=headers, start=start, length=length,
        expect=artifact if wanted is None else None,
        label={"capture": capture.id, "artifact": name, "actor": gate.actor},
    )

"""Exact wire bytes: a network backend for httpcore that tees every byte of a connection.

Why a network backend and not httpx events or response objects: httpx hands us parsed
headers (normalised names, joined values) and, unless asked otherwise, decoded bodies;
neither is what the server sent. A court needs the bytes as exchanged: request line and
headers as sent, status line, headers and body as received, with chunked framing and
content-encoding untouched. httpcore reads and writes through a ``NetworkStream`` that
the pool obtains from its ``NetworkBackend``; wrapping that backend is the one layer
where the bytes are still exactly the wire's (after TLS, before HTTP parsing), and it is
a supported injection point of httpcore's pool, not a monkey-patch.

The same layer is where the SSRF guard belongs (``connect_tcp``: resolve, check, then
connect to the checked address itself) and where the capture deadline is enforced (every
read and write gets at most the time left).

One connection carries exactly one exchange (the recorder builds a fresh pool with no
keep-alive for each request), so "the bytes of this exchange" is simply "the bytes of
this connection": no guessing where one response ends and the next begins, and the peer
address and TLS certificate recorded are those of that exchange.

Memory: response bytes are never held in memory. They are spooled to an anonymous
temporary file in the capture's own directory (not /tmp, which may be RAM), and their
SHA-256 digests (whole block, and payload after the HTTP header block) are computed
while spooling, so the WARC writer can stream the record without a second pass.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpcore

from archiver.recorder.addresses import AddressPolicy
from archiver.recorder.guard import connect_checked


class ByteLimitReached(Exception):
    """Raised from inside the stream when a response reached its byte limit.

    It deliberately derives from neither httpx nor httpcore errors, so it passes through
    both untouched (they close the connection and re-raise) and the recorder decides:
    fail the capture (main document) or keep the truncated record (subresource).
    """


class Deadline:
    """The capture's single time budget, shared by every connection of the capture."""

    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._monotonic = monotonic
        self._end = monotonic() + seconds

    def remaining(self) -> float:
        return self._end - self._monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def bound(self, timeout: float | None, expired: type[httpcore.TimeoutException]) -> float:
        """``timeout`` capped to the time left; raise ``expired`` when none is left."""
        left = self.remaining()
        if left <= 0:
            # An httpcore timeout, so it takes the same translation path as a socket
            # timeout (httpcore → httpx → archiver.errors.FetchTimeout).
            raise expired(f"the capture time limit of {self.seconds:g} s ran out")
        return left if timeout is None else min(timeout, left)


def warc_digest(hashed: Any) -> str:
    """``sha256:<BASE32>``, the form warcio writes and ``warcio check`` reads."""
    return f"sha256:{base64.b32encode(hashed.digest()).decode('ascii')}"


class _HeaderBlockScanner:
    """Find where the HTTP header block ends, exactly as warcio's parser does.

    warcio reads lines (split on LF) and stops at the first line that is empty after
    decoding (UTF-8, else Latin-1) and stripping whitespace; the payload digest it checks
    covers the bytes after that line. We mirror that rule so that our precomputed
    WARC-Payload-Digest is the one ``warcio check`` recomputes.
    """

    _MAX_LINE = 64 * 1024  # only blank-ness matters; a long line is kept as a flag

    def __init__(self) -> None:
        self.done = False
        self._line = bytearray()
        self._line_overflow = False

    def feed(self, data: bytes) -> int:
        """Consume ``data``; return how many of its bytes belong to the header block."""
        if self.done:
            return 0
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                self._append(data[start:])
                return len(data)
            self._append(data[start : newline + 1])
            blank = not self._line_overflow and _decode_header_line(bytes(self._line)).strip() == ""
            self._line.clear()
            self._line_overflow = False
            if blank:
                self.done = True
                return newline + 1
            start = newline + 1

    def _append(self, piece: bytes) -> None:
        if self._line_overflow:
            return
        if len(self._line) + len(piece) > self._MAX_LINE:
            self._line_overflow = True
            self._line.clear()
            return
        self._line += piece


def _decode_header_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("iso-8859-1")


class MessageSpool:
    """Bytes of one HTTP message as they pass, with block and payload SHA-256.

    ``limit`` bounds what is kept: the byte that would exceed it is not spooled, the
    spool is marked truncated and :class:`ByteLimitReached` is raised.
    """

    def __init__(self, file: IO[bytes] | None, *, limit: int | None,
                 meter: Callable[[int], int] | None = None) -> None:
        self._file = file
        self._memory = bytearray() if file is None else None
        self.limit = limit
        self._meter = meter  # the capture's byte budget: how much of a piece it takes
        self.size = 0
        self.truncated = False
        self._block = hashlib.sha256()
        self._payload = hashlib.sha256()
        self._headers = _HeaderBlockScanner()
        self.header_size = 0  # bytes of the HTTP header block (status line included)

    def feed(self, data: bytes) -> None:
        keep = len(data)
        if self.limit is not None:
            keep = min(keep, self.limit - self.size)
        if self._meter is not None:
            keep = self._meter(keep)
        if keep < len(data):
            self._store(data[:keep])
            self.truncated = True
            raise ByteLimitReached(f"more than {self.size} bytes")
        self._store(data)

    def _store(self, data: bytes) -> None:
        if not data:
            return
        if self._file is not None:
            self._file.write(data)
        else:
            assert self._memory is not None
            self._memory += data
        self.size += len(data)
        self._block.update(data)
        in_headers = self._headers.feed(data)
        self.header_size += in_headers
        if in_headers < len(data):
            self._payload.update(data[in_headers:])

    @property
    def block_digest(self) -> str:
        return warc_digest(self._block)

    @property
    def payload_digest(self) -> str:
        return warc_digest(self._payload)

    @property
    def headers_complete(self) -> bool:
        return self._headers.done

    def header_block(self, *, max_size: int = 1024 * 1024) -> bytes | None:
        """The HTTP header block as received, or None if incomplete or over ``max_size``."""
        if not self._headers.done or self.header_size > max_size:
            return None
        stream = self.reader()
        block = stream.read(self.header_size)
        return block if len(block) == self.header_size else None

    def fileno(self) -> int | None:
        """The spool file's descriptor (None for an in-memory spool)."""
        return self._file.fileno() if self._file is not None else None

    def flush(self) -> None:
        """Hand what was fed to the operating system, for a reader of :meth:`fileno`."""
        if self._file is not None:
            self._file.flush()

    def reader(self) -> IO[bytes]:
        """A stream over the spooled bytes from the start (the spool stays usable)."""
        if self._file is not None:
            self._file.flush()
            self._file.seek(0)
            return self._file
        assert self._memory is not None
        return io.BytesIO(bytes(self._memory))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass(frozen=True, slots=True)
class TlsPeer:
    """What the TLS handshake showed: the certificate chain, leaf first, as DER."""

    chain_der: tuple[bytes, ...]
    version: str | None
    cipher: str | None

    @property
    def leaf_sha256(self) -> str | None:
        return hashlib.sha256(self.chain_der[0]).hexdigest() if self.chain_der else None

    @property
    def chain_pem(self) -> str:
        return "".join(ssl.DER_cert_to_PEM_cert(der) for der in self.chain_der)


def certificate_chain(ssl_object: Any) -> tuple[bytes, ...]:
    """The peer's certificate chain (DER, leaf first) from an ssl object.

    Python 3.13 makes ``get_verified_chain``/``get_unverified_chain`` public on
    ``SSLSocket``; on 3.11 and 3.12 they exist on the private ``_ssl._SSLSocket``, which
    is what httpcore's ``get_extra_info("ssl_object")`` returns. The verified chain
    (ending at the trust anchor that vouched for it) is preferred; without verification
    it is empty, and the chain as the server sent it is used; when neither method exists
    only the leaf (``getpeercert(binary_form=True)``, public API) is recorded.
    """
    for name in ("get_verified_chain", "get_unverified_chain"):
        method = getattr(ssl_object, name, None)
        if method is None:
            continue
        chain = method()
        if chain:
            return tuple(ssl.PEM_cert_to_DER_cert(cert.public_bytes()) for cert in chain)
    leaf = ssl_object.getpeercert(binary_form=True)
    return (leaf,) if leaf else ()


class Wire:
    """Everything one connection carried: request bytes, response spool, peer, TLS."""

    # Request bytes stay in memory: requests are GETs and small API POSTs (yt-dlp's
    # metadata calls), a few kilobytes. The cap is a guard against a bug, not a feature.
    MAX_REQUEST_BYTES = 1024 * 1024

    def __init__(self, spool_dir: Path, *, limit: int | None,
                 meter: Callable[[int], int] | None = None) -> None:
        self.request = MessageSpool(None, limit=self.MAX_REQUEST_BYTES)
        self.response = MessageSpool(
            # closed by Wire.close(); an anonymous file, gone even if we crash
            tempfile.TemporaryFile(dir=spool_dir, prefix=".spool-"),  # noqa: SIM115
            limit=limit, meter=meter,
        )
        self.peer: tuple[str, int] | None = None
        self.tls: TlsPeer | None = None

    def close(self) -> None:
        self.response.close()


class TeeStream(httpcore.NetworkStream):
    """A network stream that copies every byte read or written into a :class:`Wire`."""

    def __init__(self, inner: httpcore.NetworkStream, wire: Wire, deadline: Deadline) -> None:
        self._inner = inner
        self._wire = wire
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = self._inner.read(max_bytes, self._deadline.bound(timeout, httpcore.ReadTimeout))
        self._wire.response.feed(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.bound(timeout, httpcore.WriteTimeout))
        self._wire.request.feed(buffer)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The handshake happens inside the ssl module; what we tee afterwards is the
        # plaintext HTTP, which is what a WARC records for https.
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._deadline.bound(timeout, httpcore.ConnectTimeout)
        )
        ssl_object = inner.get_extra_info("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            self._wire.tls = TlsPeer(
                chain_der=certificate_chain(ssl_object),
                version=ssl_object.version(),
                cipher=cipher[0] if cipher else None,
            )
        return TeeStream(inner, self._wire, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class RecordingBackend(httpcore.NetworkBackend):
    """Guarded, recording connections for one exchange (``url``) into ``wire``."""

    def __init__(
        self,
        *,
        url: str,
        wire: Wire,
        deadline: Deadline,
        allow_private_networks: bool,
        policy: AddressPolicy | None = None,
        inner: httpcore.NetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._url = url
        self._wire = wire
        self._deadline = deadline
        self._allow_private = allow_private_networks
        self._inner = inner if inner is not None else httpcore.SyncBackend()
        self._connected = False

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._connected:
            # One exchange, one connection: a second one would mix two exchanges' bytes.
            raise RuntimeError("recording backend used for a second connection")
        self._connected = True
        stream, address = connect_checked(
            self._inner, self._url, host, port,
            allow_private_networks=self._allow_private, policy=self._policy,
            timeout=self._deadline.bound(timeout, httpcore.ConnectTimeout),
            local_address=local_address, socket_options=socket_options,
        )
        self._wire.peer = (str(address), port)
        return TeeStream(stream, self._wire, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for captures")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

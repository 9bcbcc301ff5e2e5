"""``archiver serve``: the HTTP API on uvicorn, safe by default.

It listens on 127.0.0.1 unless told otherwise, and refuses any other address unless the
server speaks TLS itself (``--tls-cert`` and ``--tls-key``) or stands behind a reverse
proxy that does (``--behind-proxy``; ``X-Forwarded-*`` are then honoured from the
trusted proxy addresses only). Plain HTTP is for loopback only and must be asked for
(``--insecure-http``): session cookies then go without ``Secure``.

Every view is a signed ledger entry, so the server needs the signing passphrase; it
checks it before it listens. SIGTERM or SIGINT stops it: requests in flight finish,
then it exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from archiver.cli.common import EXIT_OK, emit_json, shown

if TYPE_CHECKING:
    from archiver.settings import Settings, WebSettings

LOOPBACK_PROXIES = ("127.0.0.1", "::1")
"""The trusted proxies of ``--behind-proxy`` when none are named: a proxy on this host."""


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``serve``."""
    p.add_argument("--host", help="address to listen on (default: web.host, 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default: web.port, 8000; 0: any free)")
    p.add_argument("--insecure-http", action="store_true", default=None,
                   help="plain HTTP, on loopback only (cookies without Secure)")
    p.add_argument("--behind-proxy", action="store_true", default=None,
                   help="a reverse proxy in front terminates TLS; honour its X-Forwarded-*")
    p.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                   help="address or network of the reverse proxy (repeatable; default "
                        "with --behind-proxy: web.trusted_proxies, else loopback)")
    p.add_argument("--replay-port", type=_port,
                   help="port of the replay origin, where archived pages are replayed "
                        "(default: web.replay_port, else port + 1; 0: any free)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain (HTTPS)")
    p.add_argument("--tls-key", type=Path, help="PEM private key (HTTPS)")
    p.add_argument("--json", action="store_true",
                   help="print the address served on as one JSON object")
    p.set_defaults(handler=cmd_serve)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (0 to 65535)")
    return value


@dataclass(frozen=True, slots=True)
class ServePlan:
    """How the server will listen, once the options are judged safe."""

    host: str
    port: int
    tls_cert: Path | None
    tls_key: Path | None
    insecure_http: bool
    trusted_proxies: tuple[str, ...]

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    def url(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plan(web: WebSettings, *, host: str | None = None, port: int | None = None,
         insecure_http: bool | None = None, behind_proxy: bool | None = None,
         trusted_proxies: Sequence[str] | None = None, tls_cert: Path | None = None,
         tls_key: Path | None = None) -> ServePlan:
    """Judge the options (over the ``web`` settings) against the rules of safe serving.
    Raises :class:`BadInput` with what to do instead."""
    from archiver.errors import BadInput

    host = web.host if host is None else host
    port = web.port if port is None else port
    insecure = web.insecure_http if insecure_http is None else insecure_http
    proxied = web.behind_proxy if behind_proxy is None else behind_proxy
    proxies = tuple(web.trusted_proxies if trusted_proxies is None else trusted_proxies)
    cert = web.tls_cert if tls_cert is None else tls_cert
    key = web.tls_key if tls_key is None else tls_key
    loopback = is_loopback(host)
    if (cert is None) != (key is None):
        raise BadInput("HTTPS needs both --tls-cert and --tls-key")
    for path in (cert, key):
        if path is not None and not os.access(path, os.R_OK):
            raise BadInput(f"cannot read {shown(str(path))}")
    if insecure and cert is not None:
        raise BadInput("--insecure-http and --tls-cert contradict each other: choose one")
    if insecure and not loopback:
        raise BadInput(f"--insecure-http is for loopback only (127.0.0.1, ::1), not "
                       f"{shown(host)}: give --tls-cert and --tls-key, or --behind-proxy")
    if not loopback and cert is None and not proxied:
        raise BadInput(
            f"refusing to serve on {shown(host)} without TLS: give --tls-cert and "
            "--tls-key, or --behind-proxy with a reverse proxy terminating TLS in front "
            "(or listen on 127.0.0.1)")
    if loopback and cert is None and not proxied and not insecure:
        raise BadInput(
            "plain HTTP needs --insecure-http (loopback only; session cookies are then "
            "sent without Secure), or give --tls-cert and --tls-key, or --behind-proxy")
    if proxies and not proxied:
        raise BadInput("trusted proxies are named but the server is not behind a proxy: "
                       "add --behind-proxy (web.behind_proxy), or drop them")
    if proxied and not proxies:
        proxies = LOOPBACK_PROXIES
    for address in proxies:
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            raise BadInput(f"not an IP address or network: {shown(address)}") from None
    return ServePlan(host, port, cert, key, insecure, proxies if proxied else ())


def cmd_serve(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    chosen = plan(settings.web, host=args.host, port=args.port,
                  insecure_http=args.insecure_http, behind_proxy=args.behind_proxy,
                  trusted_proxies=args.trusted_proxy, tls_cert=args.tls_cert,
                  tls_key=args.tls_key)
    # Every request a person makes is a signed ledger entry: no passphrase, no server
    # (ConfigError, exit 2), before anything listens.
    settings.passphrase()

    from archiver.archive import Archive
    from archiver.people.webkey import web_secret
    from archiver.web.app import WebOptions, create_app
    from archiver.web.assets import default_assets_dir
    from archiver.web.replay import create_replay_app

    archive = Archive.open(settings)
    try:
        archive.ledger.signing_key()  # a wrong passphrase fails now, not at first login
        listener = _listen(chosen)
        url = chosen.url(listener.getsockname()[1])
        wanted_replay = args.replay_port if args.replay_port is not None else \
            settings.web.replay_port
        if wanted_replay is None:
            wanted_replay = chosen.port + 1 if chosen.port else 0
        replay_listener = _listen(replace(chosen, port=wanted_replay))
        app_origin, replay_origin = origins(
            settings.web, chosen, url, replay_listener.getsockname()[1])
        secret = web_secret(settings)
        assets = settings.web.assets_dir or default_assets_dir()
        options = WebOptions(secure_cookies=not chosen.insecure_http,
                             trusted_proxies=chosen.trusted_proxies,
                             hsts=not chosen.insecure_http, replay_origin=replay_origin,
                             assets_dir=assets)
        app = create_app(archive, secret=secret, options=options)
        replay_app = create_replay_app(archive, secret=secret, app_origin=app_origin,
                                       assets_dir=assets, hsts=not chosen.insecure_http)
        if args.json:
            emit_json(out, {"url": url, "replay_origin": replay_origin})
        else:
            print(f"serving the API on {url}, replays on {replay_origin} (SIGTERM or "
                  "Ctrl-C stops it)", file=out)
            out.flush()
        _run([(app, listener), (replay_app, replay_listener)], chosen)
    finally:
        archive.close()
    return EXIT_OK


def origins(web: WebSettings, chosen: ServePlan, url: str, replay_port: int) -> tuple[str, str]:
    """The app's origin and the replay origin browsers use. Raises :class:`BadInput`
    when they cannot be known (off loopback: set both) or are one origin."""
    from archiver.errors import ArchiverError, BadInput
    from archiver.web.replay import check_origin, default_replay_origin

    # Behind a proxy, or off loopback, browsers do not use the address served on.
    direct = is_loopback(chosen.host) and not chosen.trusted_proxies
    try:
        if web.app_origin is not None:
            app_origin = check_origin(web.app_origin, "web.app_origin")
        elif direct:
            app_origin = url.rstrip("/")
        else:
            raise BadInput("set web.app_origin (e.g. https://archive.example.org): the "
                           "origin browsers use for the app (behind a proxy or off loopback "
                           "it is not the address served on)")
        if web.replay_origin is not None:
            replay_origin = check_origin(web.replay_origin)
        elif direct:
            replay_origin = default_replay_origin(chosen.host, replay_port, chosen.scheme)
        else:
            raise BadInput("set web.replay_origin (e.g. https://replay.archive.example.org): "
                           "the origin browsers use for the replay port")
    except BadInput:
        raise
    except ArchiverError as exc:
        raise BadInput(str(exc)) from None
    if app_origin == replay_origin:
        raise BadInput(f"web.replay_origin must be another origin than the app's "
                       f"({app_origin}): archived pages must never run on the app's origin")
    return app_origin, replay_origin


def _listen(chosen: ServePlan) -> socket.socket:
    from archiver.errors import BadInput

    try:
        infos = socket.getaddrinfo(chosen.host, chosen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _name, address = infos[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        raise BadInput(f"cannot listen on {shown(chosen.host)} port {chosen.port}: "
                       f"{exc.strerror or exc}") from exc
    return listener


def _run(apps: Sequence[tuple[Any, socket.socket]], chosen: ServePlan) -> None:
    """Serve each app on its listener in one event loop until SIGTERM or SIGINT."""
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The signals are handled once for every server, below.
            yield

    servers = [Server(uvicorn.Config(
        app, log_level="warning", access_log=False, server_header=False,
        # the app reads X-Forwarded-* itself, from the trusted proxies only
        proxy_headers=False, forwarded_allow_ips=None,
        ssl_certfile=None if chosen.tls_cert is None else str(chosen.tls_cert),
        ssl_keyfile=None if chosen.tls_key is None else str(chosen.tls_key),
        timeout_graceful_shutdown=30,
    )) for app, _listener in apps]

    # Our handlers only ask the servers to stop (finishing requests in flight); uvicorn's
    # own would re-raise the signal afterwards, and the process would end killed rather
    # than exit 0. A second signal stops them without waiting.
    def stop(_signum: int, _frame: FrameType | None) -> None:
        for server in servers:
            if server.should_exit:
                server.force_exit = True
            server.should_exit = True

    async def serve_all() -> None:
        await asyncio.gather(*(server.serve(sockets=[listener])
                               for server, (_app, listener) in zip(servers, apps, strict=True)))

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        asyncio.run(serve_all())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""The inside of the SSRF suite: a network where private addresses really answer.

Run by ``tests/hostile/test_ssrf.py`` as ``unshare -rnm python ssrf_inner.py CASES WORK``:
a new user, network and mount namespace, where this process is root of an empty network.
It brings ``lo`` up, puts a *public* address (93.184.216.34, globally routable, so the
guard lets it through) and private ones (10/8, 192.168/16, 172.16/12, 100.64/10,
169.254.169.254, fd00::/8, fe80::/10, next to 127.0.0.1 and ::1) on it, starts an HTTP
server on port 80 of each that logs every request, bind-mounts a hosts file over
/etc/hosts so that names resolve to them, initialises an archive with the default
policy (private networks *not* allowed) and captures each case's URL with the real
``archiver capture`` (page fetcher, Chromium, yt-dlp). For each case it prints one JSON
line: what the command said (exit code, status, reason, message, fetcher outcomes) and
which servers saw which requests while it ran.

Nothing here can reach a real network: the namespace has none.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PUBLIC = "93.184.216.34"
# name -> address of each server; every one but "public" must never see a request.
SERVERS: dict[str, str] = {
    "public": PUBLIC,
    "loopback": "127.0.0.1",
    "loopback6": "::1",
    "private10": "10.0.0.1",
    "private192": "192.168.1.1",
    "private172": "172.16.0.1",
    "cgnat": "100.64.0.1",
    "metadata": "169.254.169.254",
    "ula": "fd00::1",
    "linklocal6": "fe80::1",
}
HOSTS = """\
127.0.0.1 localhost
::1 localhost ip6-localhost
93.184.216.34 public.ssrf.test
10.0.0.1 private.ssrf.test
192.168.1.1 lan.ssrf.test
172.16.0.1 docker.ssrf.test
100.64.0.1 cgnat.ssrf.test
169.254.169.254 metadata.ssrf.test
127.0.0.1 loopback.ssrf.test
fd00::1 ula.ssrf.test
::ffff:10.0.0.1 mapped.ssrf.test
93.184.216.34 mixed.ssrf.test
10.0.0.1 mixed.ssrf.test
"""

# Where the public server redirects (``/to-<name>``).
REDIRECTS: dict[str, str] = {
    "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "private-name": "http://private.ssrf.test/admin",
    "loopback": "http://127.0.0.1/",
    "mapped": "http://[::ffff:10.0.0.1]/",
    "decimal": "http://2852039166/latest/meta-data/",
    "ula": "http://[fd00::1]/",
    "protocol-relative": "//10.0.0.1/relative",
    "two-hops": "/to-metadata",
}

SUBRESOURCES = """<!doctype html>
<html><head><title>subresources</title>
<style>@import url(http://127.0.0.1/imported.css);</style>
<link rel="stylesheet" href="http://192.168.1.1/style.css">
<link rel="icon" href="http://172.16.0.1/favicon.ico">
<link rel="preload" as="image" href="http://100.64.0.1/preload.png">
<link rel="prefetch" href="http://[fd00::1]/prefetch">
<script src="http://private.ssrf.test/app.js"></script>
<style>body { background: url(http://169.254.169.254/latest/meta-data/bg.png) }</style>
</head><body>
<p>A public page whose every subresource is on a private address.</p>
<img src="http://10.0.0.1/a.png">
<img srcset="http://[::ffff:10.0.0.1]/b.png 2x" src="http://metadata.ssrf.test/c.png">
<picture><source srcset="http://lan.ssrf.test/d.webp"><img src="http://cgnat.ssrf.test/e.png"></picture>
<iframe src="http://ula.ssrf.test/frame.html"></iframe>
<object data="http://docker.ssrf.test/object"></object>
<embed src="http://167772161/embed">
<audio src="http://[::1]/sound.mp3"></audio>
<video poster="http://10.0.0.1/poster.jpg"><source src="http://mapped.ssrf.test/v.mp4">
<track src="http://10.0.0.1/subs.vtt"></video>
<a href="http://10.0.0.1/link">a link</a>
</body></html>
"""

MEDIA = """<!doctype html>
<html><head><title>media</title>
<meta property="og:video" content="http://169.254.169.254/og.mp4">
<meta property="og:image" content="http://private.ssrf.test/og.png">
</head><body><p>Videos on private addresses.</p>
<video src="http://10.0.0.1/clip.mp4" controls></video>
<video controls><source src="http://[fd00::1]/clip.webm" type="video/webm"></video>
<img src="http://192.168.1.1/photo.jpg">
</body></html>
"""

SCRIPTED = """<!doctype html>
<html><head><title>scripted</title></head><body><p>Requests made by script.</p>
<iframe src="/navigate.html"></iframe>
<script>
fetch("http://10.0.0.1/fetch").catch(() => {});
fetch("http://public.ssrf.test/to-metadata").catch(() => {});
const xhr = new XMLHttpRequest(); xhr.open("GET", "http://192.168.1.1/xhr"); xhr.send();
if (navigator.sendBeacon) navigator.sendBeacon("http://169.254.169.254/beacon", "x");
new Image().src = "http://172.16.0.1/pixel.gif";
try { new WebSocket("ws://10.0.0.1/ws"); } catch (e) {}
try { new EventSource("http://100.64.0.1/events"); } catch (e) {}
import("http://private.ssrf.test/module.js").catch(() => {});
document.body.insertAdjacentHTML("beforeend", '<img src="http://[fd00::1]/late.png">');
</script></body></html>
"""

NAVIGATE = """<!doctype html>
<html><body>
<form id="f" method="post" action="http://10.0.0.1/form"><input name="a" value="b"></form>
<script>
setTimeout(() => { location.href = "http://169.254.169.254/navigate"; }, 50);
document.getElementById("f").submit();
</script></body></html>
"""

META_REFRESH = """<!doctype html>
<html><head><meta http-equiv="refresh" content="0;url=http://10.0.0.1/refresh">
<title>refresh</title></head><body><p>Refreshing to a private address.</p></body></html>
"""

PAGE = """<!doctype html>
<html><head><title>public</title></head><body><p>An ordinary public page.</p></body></html>
"""

PAGES = {"/page.html": PAGE, "/subresources.html": SUBRESOURCES, "/media.html": MEDIA,
         "/scripted.html": SCRIPTED, "/navigate.html": NAVIGATE,
         "/meta-refresh.html": META_REFRESH}


class Hits:
    """Every request every server saw, under the label of the case then running."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.label = "setup"
        self.seen: list[dict[str, str]] = []

    def add(self, server: str, method: str, path: str, host: str) -> None:
        with self._lock:
            self.seen.append({"case": self.label, "server": server, "method": method,
                              "path": path, "host": host})

    def of(self, label: str) -> list[dict[str, str]]:
        with self._lock:
            return [h for h in self.seen if h["case"] == label]


HITS = Hits()


def _handler(server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            HITS.add(server_name, self.command, self.path, self.headers.get("Host", ""))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if server_name == "public" and path.startswith("/to-"):
                target = REDIRECTS.get(path.removeprefix("/to-"))
                if target is not None:
                    self._send(302, b"", "text/plain", location=target)
                    return
            if server_name == "public" and path in PAGES:
                self._send(200, PAGES[path].encode(), "text/html; charset=utf-8")
                return
            body = f"{server_name} answered {path}\n".encode()
            self._send(200 if server_name != "public" else 404, body, "text/plain")

        def _send(self, status: int, body: bytes, media_type: str, *,
                  location: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body)))
            if location is not None:
                self.send_header("Location", location)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # No reverse look-up of our own address (ThreadingHTTPServer's getfqdn).
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "ssrf", 80


def _start_servers() -> list[_Server]:
    servers = []
    lo_index = socket.if_nametoindex("lo")
    for name, address in SERVERS.items():
        ip = ipaddress.ip_address(address)
        server_address: tuple[Any, ...]
        if ip.version == 6:
            scope = lo_index if ip.is_link_local else 0
            family, server_address = socket.AF_INET6, (address, 80, 0, scope)
        else:
            family, server_address = socket.AF_INET, (address, 80)
        server_class = type(f"Server_{name}", (_Server,), {"address_family": family})
        server = server_class(server_address, _handler(name))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def _network(work: Path) -> None:
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    ip("link", "set", "lo", "up")
    for address in SERVERS.values():
        parsed = ipaddress.ip_address(address)
        if parsed.is_loopback:
            continue
        if parsed.version == 4:
            ip("addr", "add", f"{address}/32", "dev", "lo")
        else:
            ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")
    hosts = work / "hosts"
    hosts.write_text(HOSTS)
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True,
                   capture_output=True, text=True)


def _control() -> dict[str, str]:
    """Each server's answer to a plain request sent around the archiver (the proof that
    every refused address really answers), and the same through a name and a mapped
    address, which must reach the 10.0.0.1 server."""
    HITS.label = "control"
    lo_index = socket.if_nametoindex("lo")
    targets: dict[str, tuple[Any, ...]] = {}
    for name, address in SERVERS.items():
        ip = ipaddress.ip_address(address)
        if ip.version == 6:
            targets[name] = (address, 80, 0, lo_index if ip.is_link_local else 0)
        else:
            targets[name] = (address, 80)
    targets["private.ssrf.test"] = ("private.ssrf.test", 80)
    targets["::ffff:10.0.0.1"] = ("::ffff:10.0.0.1", 80, 0, 0)
    answers = {}
    for name, target in targets.items():
        family = socket.AF_INET6 if len(target) == 4 or ":" in target[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(target)
                sock.sendall(b"GET /control HTTP/1.1\r\nHost: control\r\n"
                             b"Connection: close\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            answers[name] = reply.decode("latin-1").partition("\r\n\r\n")[2]
        except OSError as exc:
            answers[name] = f"no answer: {exc}"
    return answers


def _environment(work: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ARCHIVER_"):
            del os.environ[name]
    os.environ.update({
        "ARCHIVER_HOME": str(work / "archive"),
        "ARCHIVER_SIGNING__PASSPHRASE": "ssrf suite passphrase",
        "ARCHIVER_OPERATOR": "ssrf-suite@test.example",
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "60",
        "ARCHIVER_BROWSER__NETWORK_IDLE_SECONDS": "2",
        "ARCHIVER_BROWSER__REQUEST_TIMEOUT_SECONDS": "5",
        "ARCHIVER_BROWSER__MAX_SCROLLS": "2",
        "ARCHIVER_BROWSER__TIMEOUT_SECONDS": "30",
    })


def _archiver(*argv: str) -> tuple[int, str, str]:
    from archiver.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    HITS.label = case["name"]
    code, out, err = _archiver("capture", case["url"], "--json", "--case", "ssrf")
    result: dict[str, Any] = {"name": case["name"], "url": case["url"], "exit": code,
                              "stderr": err.strip()}
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    if lines:
        (capture,) = lines
        result.update({key: capture.get(key) for key in (
            "status", "reason", "message", "final_url", "http_status", "outcomes")})
        result["artifacts"] = [a["name"] for a in capture.get("artifacts", [])]
    return result


def main() -> int:
    cases_file, work = Path(sys.argv[1]), Path(sys.argv[2])
    results = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to stderr, never among results
    cases = json.loads(cases_file.read_text())
    _network(work)
    _start_servers()
    _environment(work)
    from archiver.recorder.addresses import non_global_reason

    reason = non_global_reason(ipaddress.ip_address(PUBLIC))
    if reason is not None:
        raise SystemExit(f"the suite's public address {PUBLIC} is {reason}")
    control = {"name": "(control)", "answers": _control()}
    print(json.dumps(control, sort_keys=True), file=results, flush=True)
    code, _out, err = _archiver("init")
    if code != 0:
        raise SystemExit(f"archiver init failed: {err}")
    for case in cases:
        result = _run_case(case)
        result["hits"] = HITS.of(case["name"])
        print(json.dumps(result, sort_keys=True), file=results, flush=True)
    # Anything that arrives after its case ended (a late browser request) is kept too.
    HITS.label = "after"
    late = {"name": "(after every case)", "hits": HITS.of("after")}
    print(json.dumps(late, sort_keys=True), file=results, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

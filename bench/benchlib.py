"""What the benchmarks share: a local HTTP site, phases in fresh interpreters, peak RSS.

Imported by the scripts in this folder as ``benchlib`` (a script's own folder is first
on ``sys.path`` when it runs).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading HTTP server on 127.0.0.1, port 0, for the block; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_phase(script: str, name: str, **params: Any) -> dict[str, Any]:
    """Run ``script --phase NAME --params JSON`` in a fresh interpreter (so one phase's
    imports and memory cannot colour another's figures); return the JSON it printed
    last."""
    done = subprocess.run(
        [sys.executable, script, "--phase", name, "--params", json.dumps(params)],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {name} of {script} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Unlike ``ru_maxrss`` it is reset by
    exec, so a phase does not inherit the peak of the process that started it."""
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kib / 1024


def ensure_loopback_name(name: str) -> None:
    """Make sure host ``name`` resolves to 127.0.0.1, for tools that refuse loopback
    URLs written as such (``localhost``, ``127.0.0.1``) but follow a name. If it does
    not resolve, add ``127.0.0.1 name`` to /etc/hosts when running as root (saying so on
    stderr; the line stays), else exit with what to do. Use a name under ``.test``
    (RFC 6761), which never resolves on the internet."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except socket.gaierror:
        found = set()
    if found == {"127.0.0.1"}:
        return
    if found:
        raise SystemExit(f"{name} resolves to {sorted(found)}, not 127.0.0.1: fix /etc/hosts")
    line = f"127.0.0.1 {name}"
    if os.geteuid() != 0:
        raise SystemExit(f"{name} does not resolve; as root, add this line to /etc/hosts "
                         f"and run again:\n  {line}")
    with open("/etc/hosts", "a") as hosts:
        hosts.write(f"\n{line}  # added by bench/ (evidence-archiver benchmarks)\n")
    print(f"added '{line}' to /etc/hosts (it stays; remove it by hand if unwanted)",
          file=sys.stderr)
    if {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)} != {"127.0.0.1"}:
        raise SystemExit(f"{name} still does not resolve to 127.0.0.1 after editing /etc/hosts")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server started as another process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(base: str, server: subprocess.Popen[str]) -> None:
    """Wait until ``archiver serve`` at ``base`` answers /healthz (60 s at most); exit
    with its output if it died first."""
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = server.stdout.read() if server.stdout else ""
            raise SystemExit(f"archiver serve exited {server.returncode}:\n{out[-3000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("archiver serve did not answer /healthz within 60 s")

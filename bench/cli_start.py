"""How long a person waits for the ``archiver`` command, against a bare ``python -c pass``.

    .venv/bin/python bench/cli_start.py            # an archive of 1,000 captures, 21 runs
    .venv/bin/python bench/cli_start.py --quick    # 100 captures, 7 runs

Every figure is the median wall time of whole processes (start-up, imports, the command,
exit), each measured the same way in the same run: ``python -c pass`` with the project's
interpreter is the baseline. Targets: ``archiver --version`` at most 5x the baseline,
``archiver list`` of 1,000 captures at most 10x. The archive is real: captures of small
local pages made by the pipeline (browser and media off, to make them quickly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from benchlib import ROOT, serve

ARCHIVER = str(Path(sys.executable).with_name("archiver"))


class _Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"<!doctype html><title>{self.path}</title><p>post {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _fill(env: dict[str, str], captures: int) -> str:
    """``captures`` real captures into the archive; returns one capture's id."""
    subprocess.run([ARCHIVER, "init"], env=env, check=True, capture_output=True)
    with serve(_Pages) as base:
        done = subprocess.run(
            [ARCHIVER, "capture", "--json", *[f"{base}/post/{i}" for i in range(captures)]],
            env=env, check=True, capture_output=True, text=True)
    first: str = json.loads(done.stdout.splitlines()[0])["id"]
    return first


def _median_seconds(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 captures, 7 runs")
    args = parser.parse_args()
    captures, runs = (100, 7) if args.quick else (1000, 21)
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir=ROOT) as home:
        # Bytecode is cached as on any installation (some shells set
        # PYTHONDONTWRITEBYTECODE, which would recompile the project on every start).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ARCHIVER_HOME": home,
               "ARCHIVER_SIGNING__PASSPHRASE": "bench",
               "ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS": "true",
               "ARCHIVER_BROWSER__ENABLED": "false", "ARCHIVER_MEDIA__ENABLED": "false",
               "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
               "ARCHIVER_DAEMON__PER_HOST_CONCURRENCY": "8"}
        began = time.perf_counter()
        capture_id = _fill(env, captures)
        filled = time.perf_counter() - began
        base = _median_seconds([sys.executable, "-c", "pass"], env, runs)
        # What any command that opens the archive must import, whatever we do: the
        # database layer and the settings library chosen for the project.
        floor = _median_seconds([sys.executable, "-c", "import sqlalchemy, pydantic_settings"],
                                env, runs)
        commands = {
            "--version": ["--version"], "--help": ["--help"], "list": ["list"],
            "list --json": ["list", "--json"], "show": ["show", capture_id],
            "status": ["status"], "key show": ["key", "show"], "jobs": ["jobs"],
            "gone": ["gone"],
        }
        results = {name: _median_seconds([ARCHIVER, *argv], env, runs)
                   for name, argv in commands.items()}
    print(f"CLI start, archive of {captures} captures (made in {filled:.1f} s), "
          f"median of {runs} runs")
    print(f"  python -c pass        {base * 1000:7.1f} ms   (baseline)")
    print(f"  import sqlalchemy, pydantic_settings {floor * 1000:7.1f} ms   {floor / base:5.1f}x "
          "(the floor of any command that opens the archive)")
    for name, seconds in results.items():
        target = {"--version": " (target <= 5x)", "list": " (target <= 10x)"}.get(name, "")
        print(f"  archiver {name:12s} {seconds * 1000:7.1f} ms   {seconds / base:5.1f}x{target}")
    print(json.dumps({"captures": captures, "runs": runs, "baseline_s": base, "floor_s": floor,
                      "commands_s": results,
                      "ratios": {k: v / base for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

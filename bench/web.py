"""Benchmark: the web pages in Chromium, over a case of 10,000 captures.

    .venv/bin/python bench/web.py            # 10,000 captures, 40 page loads, 20 submits
    .venv/bin/python bench/web.py --quick    # 10,000 captures, 10 page loads, 5 submits

The archive is built as ``bench/api.py`` builds it (its ``build`` phase, in a fresh
interpreter: SQLite, 10,000 completed captures in one case and 1,000 in another), then
``archiver serve`` runs as a real subprocess (plain HTTP on loopback) and Debian's
Chromium, driven by Playwright, signs in as the case's investigator through the login
page.

Measured, in the same run:

* case page: ``/cases/<case>`` loaded N times (a returning person: the app's CSS and
  script in the browser's cache, as after the first visit); per load the browser's own
  ``first-contentful-paint`` (from the navigation's start), when the HTML was received
  (``responseEnd``) and parsed (``domInteractive``: the server-rendered rows are in the
  document then); the first, cold load is reported apart;
* the API's JSON list of the same page (``GET /api/captures?case=…&limit=<rows the
  page shows>``, httpx with a token), N times: the floor the page is built on;
* submit → queued: on ``/submit``, from the click on the button to the moment the new
  job's row says "queued" (no daemon runs, so it stays queued), M times.

Printed: p50/p95 of each, against the targets of issue 12 (first paint < 300 ms,
submit → queued < 500 ms). The figures are what they are: nothing is retried or
dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from benchlib import ROOT, free_port, run_phase, wait_up

CASE = "Bench case"
PASSWORD = "a long bench passphrase 1"  # bench/api.py's person "bench"
PASSPHRASE = "bench-passphrase"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOOPBACK = ("127.0.0.1", "localhost")


def _environment(workdir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ARCHIVER_")}
    env.update({"ARCHIVER_HOME": str(Path(workdir) / "archive"),
                "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
                "ARCHIVER_OPERATOR": "os:bench@localhost"})
    return env


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float]) -> dict[str, float]:
    """p50/p95 in milliseconds of ``values`` (given in milliseconds)."""
    return {"p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(_percentile(values, 0.95), 1)}


def _guard(route: Any) -> None:
    """Nothing leaves loopback (Chromium's own calls home included)."""
    from urllib.parse import urlparse

    if urlparse(route.request.url).hostname in LOOPBACK:
        route.continue_()
    else:
        route.abort("blockedbyclient")


def _sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Login name").fill("bench")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


_TIMINGS = """() => {
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  return {fcp: paint ? paint.startTime : null, interactive: nav.domInteractive,
          response_end: nav.responseEnd, load: nav.loadEventEnd};
}"""


def case_page(page: Any, base: str, loads: int) -> dict[str, Any]:
    """The case page loaded ``loads`` times (after one cold load, reported apart)."""
    url = f"{base}/cases/{quote(CASE)}"
    samples = []
    for _ in range(loads + 1):
        page.goto(url, wait_until="load")
        page.get_by_role("row").nth(1).wait_for()  # a row of captures (row 0: headings)
        timing = page.evaluate(_TIMINGS)
        if timing["fcp"] is None:  # painted after "load": wait for the entry
            page.wait_for_function(
                "() => performance.getEntriesByName('first-contentful-paint').length")
            timing = page.evaluate(_TIMINGS)
        samples.append(timing)
    rows = page.locator("tbody tr").count()
    cold, warm = samples[0], samples[1:]
    return {"rows": rows, "cold": cold,
            "fcp": _ms([s["fcp"] for s in warm]),
            "html_received": _ms([s["response_end"] for s in warm]),
            "rows_parsed": _ms([s["interactive"] for s in warm])}


def api_list(base: str, token: str, rows: int, trials: int) -> dict[str, float]:
    """The API's JSON list of the same page, ``trials`` times."""
    import httpx

    times = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as client:
        client.get("/api/captures", params={"case": CASE, "limit": rows}).raise_for_status()
        for _ in range(trials):
            started = time.perf_counter()
            client.get("/api/captures", params={"case": CASE, "limit": rows}
                       ).raise_for_status()
            times.append(1000 * (time.perf_counter() - started))
    return _ms(times)


def submit_to_queued(page: Any, base: str, trials: int) -> dict[str, float]:
    """From the click on the submit button to the new job's row showing "queued"."""
    times = []
    for number in range(trials):
        page.goto(f"{base}/submit", wait_until="load")
        url = f"https://example.org/bench/{number}/{time.time_ns()}"
        page.get_by_label(re.compile("^URLs")).fill(url)
        page.get_by_label("Case", exact=True).select_option(label=CASE)
        button = page.get_by_role("button", name="Preserve")
        row = page.get_by_role("row").filter(has_text=url).get_by_text("queued", exact=True)
        started = time.perf_counter()
        button.click()
        row.wait_for(timeout=30_000)
        times.append(1000 * (time.perf_counter() - started))
    return _ms(times)


def run(quick: bool) -> None:
    from playwright.sync_api import sync_playwright

    captures = 10_000
    loads, submits = (10, 5) if quick else (40, 20)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as workdir:
        print(f"building an archive of {captures:,} captures …", flush=True)
        built = run_phase(str(ROOT / "bench" / "api.py"), "build", workdir=workdir,
                          captures=captures, big_bytes=1024 * 1024)
        print(f"  built in {built['build_seconds']} s", flush=True)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "archiver.cli", "serve", "--port", str(port),
             "--replay-port", str(free_port()), "--insecure-http"],
            env=_environment(workdir), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                context.route("**/*", _guard)
                page = context.new_page()
                _sign_in(page, base)
                paint = case_page(page, base, loads)
                submit = submit_to_queued(page, base, submits)
                browser.close()
            api = api_list(base, built["token"], paint["rows"], loads)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps({"case_page": paint, "api_list": api, "submit_to_queued": submit},
                     indent=1))
    cold = paint["cold"]
    print(f"case page ({captures:,} captures, {paint['rows']} rows shown), {loads} loads: "
          f"first contentful paint p50 {paint['fcp']['p50_ms']} ms, "
          f"p95 {paint['fcp']['p95_ms']} ms (target < 300); rows parsed p95 "
          f"{paint['rows_parsed']['p95_ms']} ms; HTML received p95 "
          f"{paint['html_received']['p95_ms']} ms; first (cold) load: paint "
          f"{cold['fcp']:.1f} ms")
    print(f"the API's JSON of the same {paint['rows']} rows: p50 {api['p50_ms']} ms, "
          f"p95 {api['p95_ms']} ms")
    print(f"submit -> queued visible, {submits} submits: p50 {submit['p50_ms']} ms, "
          f"p95 {submit['p95_ms']} ms (target < 500)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()

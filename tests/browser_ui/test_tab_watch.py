"""The browser fixture itself: what :class:`browser_fixtures.Tab` reports, against a tiny
server on 127.0.0.1 that sends the app's kind of CSP (no inline script)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser_fixtures import Chromium

PAGES = {
    "/clean.html": b"<!DOCTYPE html><html lang='en'><head><title>Clean</title></head>"
                   b"<body><main><h1>Clean</h1><p>Nothing wrong here.</p></main></body></html>",
    "/console.html": b"<!DOCTYPE html><html lang='en'><head><title>Console</title>"
                     b"<script src='/err.js'></script></head><body><main><h1>x</h1>"
                     b"</main></body></html>",
    "/err.js": b"console.error('something broke');",
    "/missing.html": b"<!DOCTYPE html><html lang='en'><head><title>Missing</title>"
                     b"<link rel='stylesheet' href='/nowhere.css'></head><body><main>"
                     b"<h1>x</h1></main></body></html>",
    "/cdn.html": b"<!DOCTYPE html><html lang='en'><head><title>CDN</title>"
                 b"<link rel='stylesheet' href='http://cdn.invalid/x.css'></head><body>"
                 b"<main><h1>x</h1></main></body></html>",
    "/inline.html": b"<!DOCTYPE html><html lang='en'><head><title>Inline</title></head>"
                    b"<body><main><h1>x</h1><script>document.title='ran'</script></main>"
                    b"</body></html>",
    "/inaccessible.html": b"<!DOCTYPE html><html lang='en'><head><title>Bad</title></head>"
                          b"<body><main><h1>x</h1><img src='/p.png'>"
                          b"<button></button></main></body></html>",
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGES.get(self.path)
        self.send_response(200 if body is not None else 404)
        kind = "text/javascript" if self.path.endswith(".js") else "text/html"
        self.send_header("Content-Type", kind)
        if self.path != "/cdn.html":  # a CSP would refuse the CDN before the route sees it
            self.send_header("Content-Security-Policy", "default-src 'self'")
        self.end_headers()
        self.wfile.write(body or b"not here")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def problems_of(chromium: Chromium, tmp_path: Path, url: str) -> str:
    tab = chromium.tab(tmp_path)
    tab.goto(url, status=None)
    with pytest.raises(AssertionError) as caught:
        tab.assert_clean()
    return str(caught.value)


def test_a_clean_page_passes_every_check(chromium: Chromium, site: str,
                                         tmp_path: Path) -> None:
    """No problems, axe clean, and the step's screenshot is written."""
    tab = chromium.tab(tmp_path / "steps")
    tab.goto(site + "/clean.html")
    shot = tab.step("clean")
    assert shot == tmp_path / "steps" / "01-clean.png"
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_console_errors_are_reported(chromium: Chromium, site: str, tmp_path: Path) -> None:
    assert "console error: something broke" in problems_of(chromium, tmp_path,
                                                           site + "/console.html")


def test_a_4xx_subresource_is_reported(chromium: Chromium, site: str, tmp_path: Path) -> None:
    assert f"HTTP 404: GET {site}/nowhere.css" in problems_of(chromium, tmp_path,
                                                             site + "/missing.html")


def test_an_expected_status_is_not_a_problem(chromium: Chromium, site: str,
                                             tmp_path: Path) -> None:
    tab = chromium.tab(tmp_path)
    tab.expect_status(404, r"/gone\.html")
    tab.goto(site + "/gone.html", status=404)
    tab.assert_clean()


def test_requests_off_127_0_0_1_are_blocked_and_reported(chromium: Chromium, site: str,
                                                         tmp_path: Path) -> None:
    assert "blocked request: http://cdn.invalid/x.css" in problems_of(
        chromium, tmp_path, site + "/cdn.html")


def test_the_csp_stays_on_in_the_watched_tab(chromium: Chromium, site: str,
                                             tmp_path: Path) -> None:
    """An inline script is refused by the page's CSP, and that refusal is reported."""
    tab = chromium.tab(tmp_path)
    tab.goto(site + "/inline.html")
    assert tab.page.title() == "Inline"
    with pytest.raises(AssertionError, match="Content Security Policy"):
        tab.assert_clean()


def test_axe_fails_on_serious_or_critical_violations(chromium: Chromium, site: str,
                                                     tmp_path: Path) -> None:
    """An image without alt text and a button without a name are critical: both named."""
    tab = chromium.tab(tmp_path)
    tab.goto(site + "/inaccessible.html")
    with pytest.raises(AssertionError) as caught:
        tab.axe()
    assert "- image-alt (critical)" in str(caught.value)
    assert "- button-name (critical)" in str(caught.value)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "browser.py"

CONFTEST = """
import importlib.util
import sys

spec = importlib.util.spec_from_file_location("browser_fixtures", {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules["browser_fixtures"] = module
spec.loader.exec_module(module)
chromium_session = module.chromium_session
chromium = module.chromium
pytest_runtest_makereport = module.pytest_runtest_makereport
"""

TESTS = """
def test_fails(chromium, tmp_path):
    tab = chromium.tab(tmp_path / "steps")
    tab.goto({url!r})
    tab.step("first", axe=False)
    assert False, "on purpose"


def test_passes(chromium, tmp_path):
    tab = chromium.tab(tmp_path / "steps")
    tab.goto({url!r})
    tab.step("only", axe=False)
"""


def test_a_failed_test_keeps_its_screenshots(site: str, tmp_path: Path) -> None:
    """A real pytest run of two browser tests: the failed one's step screenshots, and
    one taken at the failure, are copied out of its tmp dir; the passed one's are not."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(CONFTEST.format(path=str(FIXTURE)))
    (project / "test_two.py").write_text(TESTS.format(url=site + "/clean.html"))
    kept = tmp_path / "kept"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(project), str(project)],
        cwd=project, env={**os.environ, "TEST_ARTIFACTS_DIR": str(kept)},
        capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout, done.stdout
    assert f"screenshots of the failed test kept in {kept / 'test_fails'}" in done.stdout
    shots = sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*.png"))
    assert shots == ["test_fails/steps/01-first.png", "test_fails/steps/02-at-failure.png"]

"""The issue's walk in a real browser: a person does the whole job in Chromium.

A fresh archive; ``archiver serve`` (the app and its replay origin) and ``archiver
daemon`` run as real processes; Debian's Chromium, driven by Playwright, is the person.
Bob (investigator on Case 1, with a TOTP second factor) signs in with his code, submits
two URLs of the local fixture site, watches both jobs complete while the daemon works,
opens the capture of the page with a video, sees its screenshot and the page's text
inside the replay frame (ReplayWeb.page, on the replay origin), plays the video and
downloads an artifact whose SHA-256 is the one in the signed manifest. Lena (legal on
Case 1: investigators may not export) exports the case and downloads the ZIP, which
``archiver verify-bundle`` accepts. Carol (of Case 2) then
types each of those URLs herself and gets the 404 page for every one. Alice (admin)
opens the admin pages.

Every page visited is checked (:mod:`browser_fixtures`): no console error, no failed
request, no request off loopback, axe-core without serious or critical violations.

``ARCHIVER_UPDATE_SCREENSHOTS=1`` also writes the README's screenshots of the main pages
to ``docs/screenshots/`` (a normal run leaves the tree alone).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import pyotp
import pytest
from archive_cli import OPERATOR, archive_environment
from browser_fixtures import Chromium, Tab
from daemon_process import ROOT, Daemon, wait_until

SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_SCREENSHOTS = os.environ.get("ARCHIVER_UPDATE_SCREENSHOTS") == "1"
PASSWORDS = {"alice": "alice-keeps-the-keys-42", "bob": "bob-submits-evidence-17",
             "lena": "lena-hands-it-to-court-5", "carol": "carol-of-another-case-23"}
CASE, OTHER_CASE = "Case 1", "Case 2"

pytestmark = pytest.mark.slow


def archiver_command() -> list[str]:
    """The ``archiver`` program of this environment."""
    script = Path(sys.executable).parent / "archiver"
    return [str(script)] if script.exists() else [sys.executable, "-m", "archiver.cli"]


def run_archiver(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*archiver_command(), *argv], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=180, check=False)
    if check:
        assert done.returncode == 0, f"archiver {' '.join(argv)}: {done.stderr}{done.stdout}"
    return done


class Serve:
    """``archiver serve --insecure-http --port 0 --json`` as a real process: the app and,
    on another port and host name, its replay origin."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [*archiver_command(), "serve", "--insecure-http", "--port", "0", "--json"],
            cwd=ROOT, env=dict(os.environ), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        assert first, f"archiver serve said nothing: {log.read_text(errors='replace')}"
        self.started: dict[str, Any] = json.loads(first)
        self.url = str(self.started["url"]).rstrip("/")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        if self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Person:
    login: str
    totp: pyotp.TOTP | None = None

    @property
    def password(self) -> str:
        return PASSWORDS[self.login]


@dataclass
class Web:
    """The running archive: its server, daemon and people."""

    serve: Serve
    daemon: Daemon
    alice: Person
    bob: Person
    lena: Person
    carol: Person
    work: Path

    def url(self, path: str) -> str:
        return self.serve.url + path


def _enrol(people: Any, login: str) -> pyotp.TOTP:
    """A TOTP second factor for ``login``, confirmed with the code of the *previous*
    30 s step (accepted: one step of drift), so that the sign-in's code of this step is
    still unused (each code is good once)."""
    user = people.get_user(login)
    (secret,) = parse_qs(urlparse(people.begin_totp(user.id)).query)["secret"]
    totp = pyotp.TOTP(secret)
    people.confirm_totp(user.id, totp.at(time.time() - 30))
    return totp


@pytest.fixture
def web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    """A fresh archive on SQLite (``archiver init``), alice (admin), bob (investigator on
    Case 1), lena (legal on Case 1: lawyers export) and carol (investigator on Case 2),
    alice and bob with a second factor;
    ``archiver serve`` and ``archiver daemon`` running over it."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, "sqlite://", {
        "ARCHIVER_DAEMON__WORKERS": "2",
        "ARCHIVER_DAEMON__IDLE_POLL_SECONDS": "0.1",
        "ARCHIVER_DAEMON__SYNC_SECONDS": "0.3",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
        "ARCHIVER_DAEMON__LOG_FORMAT": "json",
    })
    run_archiver("init")
    from archiver.archive import Archive
    from archiver.people.access import ArchiveRole, CaseRole
    from archiver.people.accounts import People
    from archiver.settings import load_settings

    with Archive.open(load_settings()) as archive:
        people = People(archive, actor=OPERATOR)
        people.add_user("alice", password=PASSWORDS["alice"], display_name="Alice Admin",
                        archive_role=ArchiveRole.ADMIN)
        people.add_user("bob", password=PASSWORDS["bob"], display_name="Bob Investigator")
        people.add_user("lena", password=PASSWORDS["lena"], display_name="Lena Lawyer")
        people.add_user("carol", password=PASSWORDS["carol"], display_name="Carol Other")
        for case in (CASE, OTHER_CASE):
            people.add_case(case)
        people.grant(CASE, "bob", CaseRole.INVESTIGATOR)
        people.grant(CASE, "lena", CaseRole.LEGAL)
        people.grant(OTHER_CASE, "carol", CaseRole.INVESTIGATOR)
        alice = Person("alice", _enrol(people, "alice"))
        bob = Person("bob", _enrol(people, "bob"))
    work = tmp_path / "work"
    work.mkdir()
    serve = Serve(tmp_path / "serve.log")
    daemon = Daemon(home, tmp_path / "daemon.log")
    try:
        yield Web(serve, daemon, alice, bob, Person("lena"), Person("carol"), work)
    finally:
        serve.stop()
        if daemon.process.poll() is None:
            daemon.terminate()
        print("serve log (tail):", serve.log.read_text(errors="replace")[-3000:])
        print("daemon log (tail):", daemon.log_text()[-3000:])


def document(tab: Tab, name: str) -> None:
    """With ARCHIVER_UPDATE_SCREENSHOTS=1, the page as it is now (the window, not the
    whole length) becomes docs/screenshots/<name>.png."""
    if UPDATE_SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        tab.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def sign_in(tab: Tab, web: Web, person: Person, *, shoot: str | None = None) -> None:
    """Signs ``person`` in through the pages with the keyboard only (login, then the
    one-time code): the focus starts in the first field, Tab moves it to the next with
    a visible focus ring, Enter sends the form."""
    page = tab.page
    tab.goto(web.url("/login"))
    page.keyboard.type(person.login)
    page.keyboard.press("Tab")
    focused = page.evaluate("""() => { const e = document.activeElement;
        const s = getComputedStyle(e);
        return [e.id, s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0]; }""")
    assert focused == ["password", True], focused
    page.keyboard.type(person.password)
    assert page.get_by_label("Login name").input_value() == person.login
    if shoot:
        document(tab, shoot)
    tab.step(f"{person.login}-login")
    page.keyboard.press("Enter")
    if person.totp is not None:
        page.wait_for_url(re.compile(r".*/mfa.*"))
        page.get_by_label("One-time code").wait_for()
        page.keyboard.type(person.totp.now())
        tab.step(f"{person.login}-mfa")
        page.keyboard.press("Enter")
    page.wait_for_url(lambda url: urlparse(url).path not in ("/login", "/mfa"))
    page.wait_for_load_state("networkidle")


def origin_of(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}"


def replayed_text(page: Any, origin: str, text: str) -> bool:
    """Whether a frame of the replay ``origin`` (ReplayWeb.page nests the archived page
    in frames of its own) shows ``text``."""
    for frame in page.frames:
        if origin_of(frame.url) != origin:
            continue
        try:
            if frame.get_by_text(text).count():
                return True
        except Exception:  # a frame navigating away: look again
            continue
    return False


def see_replayed(tab: Tab, origin: str, text: str) -> None:
    """Waits for ``text`` in the replay frame; ReplayWeb.page's service worker may not
    control the very first load of its origin (TOOLS.md), so the page is reloaded once."""
    for attempt in range(2):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if replayed_text(tab.page, origin, text):
                return
            time.sleep(0.2)
        if attempt == 0:
            print("replay: not shown after 30 s; reloading once")
            tab.page.reload(wait_until="networkidle")
    frames = "\n  ".join(f"{f.name!r} {f.url}" for f in tab.page.frames)
    problems = "\n  ".join(map(str, tab.problems))
    pytest.fail(f"{text!r} not replayed; frames:\n  {frames}\nproblems:\n  {problems}")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_whole_job_in_a_browser(web: Web, chromium: Chromium, fixture_site: Any,
                                    tmp_path: Path) -> None:
    """Sign in with TOTP, submit two URLs, both completed by the daemon, the capture
    with its screenshot, replay and video, an artifact matching the manifest, an export
    that verify-bundle accepts; another case's person gets 404 for each URL; every page
    clean and accessible."""
    tab = chromium.tab(tmp_path / "bob")
    page = tab.page
    # The replay origin's first visit: until ReplayWeb.page's service worker controls
    # the frame, its calls to its own API (/replay/w/api/...), which the worker answers,
    # reach the replay server (404), and the frame reloads itself once the worker is
    # active, dropping what it was loading under /replay/. Only those may go so.
    tab.expect_status(404, r"/replay/w/api/.*")
    tab.expect_aborted(r"/replay/.*")

    # -- bob signs in with his password and his one-time code -------------------------
    sign_in(tab, web, web.bob, shoot="sign-in")
    assert urlparse(page.url).path == "/cases"  # where a sign-in lands: my cases
    page.get_by_role("link", name=CASE, exact=True).wait_for()
    document(tab, "cases")
    tab.step("signed-in")

    # -- submits two URLs of the fixture site ------------------------------------------
    with_video, plain = fixture_site.url("/page.html"), fixture_site.url("/css-page.html")
    tab.goto(web.url("/submit"))
    page.get_by_label(re.compile("^URLs")).fill(f"{with_video}\n{plain}\n")
    page.get_by_label("Case", exact=True).select_option(label=CASE)
    page.get_by_label(re.compile("^Note")).fill("Two posts seen on 27 November")
    page.get_by_role("button", name="Preserve").click()
    jobs = page.get_by_role("region", name="Your submissions")
    jobs.get_by_role("row").filter(has_text=with_video).wait_for()
    # the daemon captures both: the page shows each job reach "completed" by itself
    try:
        for url in (with_video, plain):
            row = jobs.get_by_role("row").filter(has_text=url)
            row.get_by_text("completed", exact=True).wait_for(timeout=150_000)
    finally:
        print("daemon log (tail):", web.daemon.log_text()[-4000:])
    document(tab, "submit")
    tab.step("submitted-and-completed")

    # -- the case lists both; open the capture of the page with the video ---------------
    tab.goto(web.url(f"/cases/{quote(CASE)}"))
    for url in (with_video, plain):
        page.get_by_role("link", name=url, exact=True).first.wait_for()
    document(tab, "case")
    tab.step("case")
    page.get_by_role("link", name=with_video, exact=True).first.click()
    page.wait_for_url(re.compile(r".*/captures/[0-9a-f-]+$"))
    page.wait_for_load_state("networkidle")
    capture_url = page.url
    capture_id = urlparse(capture_url).path.rsplit("/", 1)[1]

    # its screenshot, shown by the app
    shot = page.get_by_role("img", name=re.compile("screenshot", re.I)).first
    shot.wait_for()
    assert page.evaluate("(img) => img.complete && img.naturalWidth > 0",
                         shot.element_handle())
    # the page's own text, replayed inside the replay frame (another origin)
    frame = page.get_by_title("Replay of the archived page")
    replay_origin = web.serve.started["replay_origin"].rstrip("/")
    assert origin_of(frame.get_attribute("src") or "") == replay_origin
    assert replay_origin != origin_of(web.serve.url)
    see_replayed(tab, replay_origin, "A post that will be taken down")
    # the video plays (the app streams it with Range)
    video = page.locator("video").first
    video.scroll_into_view_if_needed()
    page.evaluate("(v) => { v.muted = true; return v.play(); }", video.element_handle())
    wait_until(lambda: page.evaluate("(v) => v.currentTime > 0.3 || v.ended",
                                     video.element_handle()),
               timeout=20, what="the video to play")
    page.get_by_role("heading", name="Replay").evaluate(
        "(h) => h.scrollIntoView({block: 'start'})")
    document(tab, "capture")
    tab.step("capture")

    # -- downloads an artifact and the manifest; their SHA-256 agree ------------------
    def download(name: str) -> Path:
        link = page.get_by_role("link", name=name, exact=True)
        with page.expect_download() as caught:
            link.click()
        saved = web.work / str(caught.value.suggested_filename)
        caught.value.save_as(saved)
        return saved

    manifest = json.loads(download("manifest.json").read_text())
    entries = {entry["name"]: entry for entry in manifest["artifacts"]}
    warc_name = next(name for name, entry in entries.items() if entry["role"] == "warc")
    warc = download(warc_name)
    warc_path = urlparse(page.get_by_role("link", name=warc_name, exact=True)
                         .get_attribute("href") or "").path
    assert sha256_of(warc) == entries[warc_name]["sha256"]
    assert warc.stat().st_size == entries[warc_name]["size"]
    tab.step("downloaded", axe=False)

    # -- lena (legal) exports the case, downloads the bundle; verify-bundle accepts it -
    tab = chromium.tab(tmp_path / "lena")
    page = tab.page
    sign_in(tab, web, web.lena)
    tab.goto(web.url(f"/cases/{quote(CASE)}"))
    page.get_by_role("link", name="Exports", exact=True).click()
    page.wait_for_url(re.compile(r".*/exports$"))
    for url in (with_video, plain):
        page.locator("label").filter(has_text=url).get_by_role("checkbox").check()
    page.get_by_role("button", name="Start the export").click()
    bundle_link = page.get_by_role("link", name=re.compile(r"\.zip$"))
    bundle_link.wait_for(timeout=120_000)
    page.get_by_text("bundle.exported").first.wait_for()
    document(tab, "export")
    tab.step("export")
    with page.expect_download() as caught:
        bundle_link.click()
    bundle = web.work / "bundle.zip"
    caught.value.save_as(bundle)
    export_path = urlparse(caught.value.url).path
    verified = run_archiver("verify-bundle", str(bundle), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    tab.step("bundle-verified", axe=False)

    # -- carol, of another case, types those URLs: 404, the page says nothing ---------
    visited = [urlparse(capture_url).path, f"/cases/{quote(CASE)}",
               f"/cases/{quote(CASE)}/exports", warc_path, export_path]
    other = chromium.tab(tmp_path / "carol")
    sign_in(other, web, web.carol)
    other.expect_status(404, r"/.*")
    for path in visited:
        other.goto(web.url(path), status=404)
        shown = other.page.locator("body").inner_text()
        assert capture_id not in shown
        assert CASE not in shown
        other.step("carol-404", axe=not path.startswith("/api/"))  # the API's 404 is JSON

    # -- alice, the admin: the admin pages ---------------------------------------------
    admin = chromium.tab(tmp_path / "alice")
    sign_in(admin, web, web.alice)
    admin.goto(web.url("/admin"))
    admin.page.get_by_role("link", name="bob", exact=True).wait_for()
    document(admin, "admin")
    admin.step("admin")

"""The pages in the real Chromium (over the ``api`` fixture's server): the sign-in form
by its labels, local times added by app.js, the submit page following its jobs live
until they end, verify now, and a watch paused with its button (fetch with the CSRF
header). Each step: no console error, no failed request, axe-core clean."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from api_fixtures import Api, run_jobs
from browser_fixtures import Chromium, Tab
from daemon_process import wait_until

CASE = "Case 7"


def signed_in(api: Api, chromium: Chromium, steps: Path) -> Tab:
    bob = api.user("bob", cases={CASE: "investigator"})
    tab = chromium.tab(steps)
    tab.goto(f"{api.url}/cases", status=200)  # (the redirect's target, the sign-in page)
    assert "/login?next=%2Fcases" in tab.page.url
    tab.step("sign-in")
    tab.page.get_by_label("Login name").fill("bob")
    tab.page.get_by_label("Password").fill(bob.password)
    tab.page.get_by_role("button", name="Sign in").click()
    tab.page.wait_for_url(f"{api.url}/cases")
    return tab


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_submit_follows_the_jobs_live_then_verify(api: Api, chromium: Chromium,
                                                  tmp_path: Path, fixture_site: Any) -> None:
    tab = signed_in(api, chromium, tmp_path / "steps")
    page = tab.page
    local = page.locator("time + .local").first
    assert "your time" in (local.text_content() or "")
    tab.step("cases")
    page.get_by_role("link", name="Submit").first.click()
    page.get_by_label("URLs, one a line").fill(
        f"{fixture_site.url('/gzip.txt')}\n{fixture_site.url('/page.html')}")
    page.get_by_label("Case", exact=True).select_option(CASE)
    page.get_by_role("button", name="Preserve").click()
    page.locator('tr[data-state="queued"]').nth(1).wait_for()
    tab.step("submitted")
    run_jobs(api)
    page.get_by_text("Every job has ended.").wait_for(timeout=10_000)
    assert page.locator('tr[data-state="done"]').count() == 2
    tab.step("jobs-done")
    page.locator('tr[data-state="done"] a').first.click()
    page.wait_for_url(re.compile(r".*/captures/[0-9a-f-]{36}$"))
    page.get_by_role("button", name="Verify now").click()
    page.get_by_text("Every check passed.").wait_for()
    tab.step("capture-verified")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_watch_added_and_paused_with_its_buttons(api: Api, chromium: Chromium,
                                                 tmp_path: Path, fixture_site: Any) -> None:
    tab = signed_in(api, chromium, tmp_path / "steps")
    page = tab.page
    tab.goto(f"{api.url}/watches?case={CASE.replace(' ', '%20')}")
    page.get_by_text("Add a watch or import a watchlist").click()
    page.get_by_label("URL of the feed, channel, account or page").fill(
        fixture_site.url("/feeds/a.xml"))
    page.get_by_label("Kind", exact=True).select_option("feed")
    page.get_by_role("button", name="Add watch").click()
    page.get_by_text("Watching").wait_for()
    tab.step("watch-added")
    page.get_by_role("link", name="See the list").click()
    page.get_by_role("button", name=re.compile("^Pause the watch")).click()
    page.locator('tr[data-status="paused"]').wait_for()
    tab.step("watch-paused")
    wait_until(lambda: page.locator('tr[data-status="paused"]').count() == 1, timeout=5,
               what="the paused row")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_a_phone_by_keyboard(api: Api, chromium: Chromium, tmp_path: Path) -> None:
    """A phone's width: no page is wider than the screen; the keyboard fills the sign-in
    fields in order and signs in with Enter (a wrong password is said on the page); on
    a page, the first Tab reaches the skip link, which moves the focus to the content."""
    bob = api.user("bob", cases={CASE: "investigator"})
    tab = chromium.tab(tmp_path / "steps", viewport={"width": 390, "height": 844})
    page = tab.page
    tab.goto(f"{api.url}/login")
    assert page.evaluate("document.activeElement.id") == "login"  # (autofocus)
    page.keyboard.type("bob")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type("not-his-password-1")
    tab.expect_status(401, "/login")
    page.keyboard.press("Enter")
    page.locator("#login-error").wait_for()
    tab.step("phone-refused")
    page.get_by_label("Login name").fill("bob")
    page.get_by_label("Password").fill(bob.password)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{api.url}/cases")  # next was / (the form's default): the cases
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for path in ("/cases", "/submit", "/me", "/watches", f"/cases/{CASE.replace(' ', '%20')}"):
        tab.goto(api.url + path)
        wide = page.evaluate("document.scrollingElement.scrollWidth")
        assert wide <= 390, (path, wide)
        tab.step("phone" + path.replace("/", "-").replace("%20", "_"))

"""The browser view of a capture: headless Chromium renders the page, every request it
makes is recorded into the capture's WARC through the recorder, and the rendered views
(full-page screenshot, PDF, serialised DOM, title and visible text) are sealed as
artifacts and stored in the WARC as ``resource`` records.

Modules: :mod:`~archiver.capture.browser.fetcher` (the
:class:`~archiver.capture.fetcher.Fetcher`, its thread and outcome),
:mod:`~archiver.capture.browser.render` (load, settle, scroll, artifacts),
:mod:`~archiver.capture.browser.router` (each request through the recorder),
:mod:`~archiver.capture.browser.chromium` (flags and the threat model they answer),
:mod:`~archiver.capture.browser.scripts` (the read-only JavaScript evaluated in the page).
"""

from archiver.capture.browser.fetcher import BrowserFetcher
from archiver.capture.browser.options import BrowserOptions

__all__ = ["BrowserFetcher", "BrowserOptions"]

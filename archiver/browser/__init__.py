"""The browser view of a capture: headless Chromium renders the page, every request it
makes is recorded into the capture's WARC through the recorder, and the rendered views
(full-page screenshot, PDF, serialised DOM, title and visible text) are sealed as
artifacts and stored in the WARC as ``resource`` records.

Modules: :mod:`~archiver.browser.fetcher` (the :class:`~archiver.fetchers.Fetcher`, its
thread and outcome), :mod:`~archiver.browser.render` (load, settle, scroll, artifacts),
:mod:`~archiver.browser.router` (each request through the recorder),
:mod:`~archiver.browser.chromium` (flags and the threat model they answer),
:mod:`~archiver.browser.scripts` (the read-only JavaScript evaluated in the page).
"""

from archiver.browser.fetcher import BrowserFetcher
from archiver.browser.options import BrowserOptions

__all__ = ["BrowserFetcher", "BrowserOptions"]

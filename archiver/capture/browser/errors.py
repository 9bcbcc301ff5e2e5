"""Why a browser view could not be made. These never leave the browser fetcher: each
becomes its outcome (``reason`` is the outcome's stable code).

::

    BrowserError                  anything that stopped the browser view   (browser-error)
    ├── BrowserUnavailable        no Chromium, or it would not start       (browser-unavailable)
    ├── NavigationFailed          the page did not load in the browser     (navigation)
    ├── NotAPage                  a file (a download, a video), not a page (not-a-page)
    ├── BrowserTimeout            browser.timeout_seconds ran out          (timeout)
    └── BrowserOverMemory         killed past browser.kill_memory_mib     (browser-memory)
"""

from __future__ import annotations

from archiver.errors import ArchiverError


class BrowserError(ArchiverError):
    reason = "browser-error"


class BrowserUnavailable(BrowserError):
    reason = "browser-unavailable"


class NavigationFailed(BrowserError):
    reason = "navigation"


class NotAPage(BrowserError):
    reason = "not-a-page"


class BrowserTimeout(BrowserError):
    reason = "timeout"


class BrowserOverMemory(BrowserError):
    reason = "browser-memory"

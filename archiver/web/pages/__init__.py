"""The web pages: server-rendered HTML over the same route functions as the API.

One module per area (:mod:`.auth`, :mod:`.captures`, …); :data:`ROUTERS` lists them for
:func:`archiver.web.app.create_app`, and :func:`install` makes the errors of page paths
HTML. Every page route is registered through :func:`archiver.web.gate.route` with the
action of what it shows, like the API's.
"""

from __future__ import annotations

from archiver.web.pages import admin, auth, captures, exports, static, watches
from archiver.web.pages.render import install

ROUTERS = (static.router, auth.router, captures.router, watches.router, exports.router,
           admin.router)

__all__ = ["ROUTERS", "install"]

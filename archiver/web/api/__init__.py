"""The API's routes, one module per part of the archive; :data:`ROUTERS` lists them all
for :func:`archiver.web.app.create_app`. Every route is added through
:func:`archiver.web.gate.route`."""

from __future__ import annotations

from archiver.web.api import (
    admin,
    artifacts,
    auth,
    captures,
    exports,
    health,
    jobs,
    ledger,
    watches,
)

ROUTERS = (health.router, auth.router, captures.router, artifacts.router, jobs.router,
           watches.router, exports.router, ledger.router, admin.router)

"""No API route makes a case called ``unfiled`` in another letter case (``unfiled``
itself names the pseudo-case of captures filed under no case): submissions, watches,
watchlist imports and the admin's cases refuse it with a 400 saying why, before any
case is looked up. Over the real app on a real port, SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from api_fixtures import Api

from archiver import models

RESERVED = ("{!r} cannot be the name of a case: 'unfiled' (in any letter case) names the "
            "captures filed under no case; leave the case out to file them there, or "
            "choose another name")


def test_no_route_creates_a_case_called_unfiled(api: Api) -> None:
    bob = api.user("bob", cases={"Case 7": "investigator"})
    ada = api.user("ada", "admin", cases={}, mfa=True)
    http, admin = bob.client(), ada.client()
    size = api.archive.ledger.size()
    for name in ("Unfiled", "UNFILED", "unfiled "):
        expected = {"error": {"code": "bad-input", "message": RESERVED.format(name)}}
        for answer in (
            http.post("/api/captures", json={"urls": ["https://example.org/a"],
                                             "case": name}),
            http.post("/api/watches", json={"url": "https://example.org/feed",
                                            "kind": "feed", "case": name}),
            http.post("/api/watches/import", params={"case": name},
                      content="url,kind\nhttps://example.org/feed,feed\n",
                      headers={"Content-Type": "text/csv"}),
        ):
            assert (answer.status_code, answer.json()) == (400, expected), answer.request.url
        entry = http.post("/api/watches/import", params={"case": "Case 7"},
                          content=f"url,kind,case\nhttps://example.org/feed,feed,{name}\n",
                          headers={"Content-Type": "text/csv"})
        assert entry.status_code == 200, entry.text
        assert entry.json() == {"added": [], "skipped": [], "refused": [
            {"url": "https://example.org/feed", "reason": RESERVED.format(name)}]}
    for name in ("unfiled", "Unfiled"):
        case = admin.post("/api/cases", json={"name": name})
        assert (case.status_code, case.json()) == (
            400, {"error": {"code": "bad-input", "message": RESERVED.format(name)}})
    assert api.archive.ledger.size() == size
    with api.archive.engine.connect() as conn:
        names = conn.execute(sa.select(models.cases.c.name)).scalars().all()
        assert names == ["Case 7"]
        for table in (models.jobs, models.watches):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)
                                ).scalar_one() == 0
    # "unfiled" itself still means no case
    unfiled = http.post("/api/watches", json={"url": "https://example.org/feed",
                                              "kind": "feed", "case": "unfiled"})
    assert (unfiled.status_code, unfiled.json()["case"]) == (201, None)

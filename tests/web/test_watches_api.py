"""Watches through the API: add, show, list, pause, resume, remove and import, each
change on the ledger naming the person and the session or token they came through;
other cases' people get the same 404 as for nothing; unfiled watches are their
creator's. Over the real app on a real port (tests/fixtures/api.py), SQLite and
PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
from api_fixtures import Api

from chain_of_custody.ledger import LedgerEntry

NOT_FOUND = {"error": {"code": "not-found", "message": "not found"}}


def watch_entries(api: Api) -> list[LedgerEntry]:
    return [e for e in api.archive.ledger.entries() if e.action.startswith("watch.")]


def context_of(http: httpx.Client) -> dict[str, str]:
    me = http.get("/api/me").json()
    context = {"client": "127.0.0.1"}
    if me["session"] is not None:
        context["session"] = me["session"]
    if me["token"] is not None:
        context["token"] = me["token"]["id"]
    return context


def add(http: httpx.Client, url: str, case: str | None = "Case 7", **more: Any
        ) -> dict[str, Any]:
    answer = http.post("/api/watches", json={"url": url, "case": case, "kind": "feed",
                                             "every": "1h", **more})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_watch_from_add_to_remove_is_on_the_ledger(api: Api) -> None:
    """Add, pause, resume, remove: each a watch.* entry with the person as actor and
    their session and address as context; show and list follow the changes."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    http = bob.client()
    context = context_of(http)
    watch = add(http, "https://example.org/feed.xml")
    assert (watch["case"], watch["kind"], watch["every"], watch["status"], watch["created_by"]) \
        == ("Case 7", "feed", "1h", "active", "user:bob")
    wid = watch["id"]
    assert http.post(f"/api/watches/{wid}/pause").json()["status"] == "paused"
    assert http.get(f"/api/watches/{wid}").json()["status"] == "paused"
    assert http.post(f"/api/watches/{wid}/resume").json()["status"] == "active"
    assert http.delete(f"/api/watches/{wid}").json()["status"] == "removed"
    entries = watch_entries(api)
    assert [e.action for e in entries] == ["watch.added", "watch.paused", "watch.resumed",
                                           "watch.removed"]
    for entry in entries:
        assert (entry.actor, entry.subject) == ("user:bob", f"watch:{wid}")
        assert entry.payload["context"] == context
    assert entries[0].payload["case"] == "Case 7"
    assert http.get("/api/watches").json()["items"] == []
    removed = http.get("/api/watches", params={"status": "removed"}).json()["items"]
    assert [w["id"] for w in removed] == [wid]
    again = http.post(f"/api/watches/{wid}/resume")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == f"watch {wid} is removed"


def test_other_cases_get_404_like_nothing(api: Api) -> None:
    """A member of another case gets the same 404 body on a watch of Case 7 as on a watch
    that does not exist, for every route, and does not see it listed; ?case= naming a
    case they are not in is 404 as for an unknown case; a viewer may look, not change
    (403)."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    carol = api.user("carol", cases={"Case 8": "investigator"})
    vic = api.user("vic", cases={"Case 7": "viewer"})
    wid = add(bob.client(), "https://example.org/feed.xml")["id"]
    other = carol.client()
    for path in (f"/api/watches/{wid}", "/api/watches/999999"):
        for method, suffix in (("GET", ""), ("POST", "/pause"), ("POST", "/resume"),
                               ("DELETE", "")):
            answer = other.request(method, path + suffix)
            assert (answer.status_code, answer.json()) == (404, NOT_FOUND), (method, path)
    assert other.get("/api/watches").json()["items"] == []
    for case in ("Case 7", "Nope"):
        answer = other.get("/api/watches", params={"case": case})
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND)
    into = other.post("/api/watches", json={"url": "https://example.org/x", "case": "Case 7",
                                            "kind": "feed"})
    assert (into.status_code, into.json()) == (404, NOT_FOUND)
    viewer = vic.client()
    assert viewer.get(f"/api/watches/{wid}").status_code == 200
    assert [w["id"] for w in viewer.get("/api/watches", params={"case": "Case 7"}
                                        ).json()["items"]] == [wid]
    refused = viewer.post(f"/api/watches/{wid}/pause")
    assert refused.status_code == 403
    assert len(watch_entries(api)) == 1


def test_two_cases_watch_the_same_url_each_unaware_of_the_other(api: Api) -> None:
    """Two people of two cases add the same URL: both succeed (nothing tells either that
    the other watches it), each sees only their own case's watch; the same URL again in
    the same case is refused naming the watch there. Unfiled, the same per person."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    carol = api.user("carol", cases={"Case 8": "investigator"})
    url = "https://example.org/feed.xml"
    mine = add(bob.client(), url, case="Case 7")
    theirs = add(carol.client(), url, case="Case 8")
    assert mine["id"] != theirs["id"]
    assert (mine["case"], theirs["case"]) == ("Case 7", "Case 8")
    assert [w["id"] for w in bob.client().get("/api/watches").json()["items"]] == [mine["id"]]
    assert [w["id"] for w in carol.client().get("/api/watches").json()["items"]] == [
        theirs["id"]]
    again = carol.client().post("/api/watches", json={"url": url, "case": "Case 8",
                                                      "kind": "feed"})
    assert again.status_code == 409
    assert again.json()["error"] == {
        "code": "refused", "message": f"{url} is already watched (watch {theirs['id']})"}
    bob_unfiled = add(bob.client(), url, case=None)
    carol_unfiled = add(carol.client(), url, case=None)
    assert bob_unfiled["id"] != carol_unfiled["id"]
    twice = bob.client().post("/api/watches", json={"url": url, "case": None, "kind": "feed"})
    assert twice.status_code == 409
    assert twice.json()["error"]["message"] == (
        f"{url} is already watched (watch {bob_unfiled['id']})")
    added = [e for e in watch_entries(api) if e.action == "watch.added"]
    assert [(e.actor, e.payload["case"]) for e in added] == [
        ("user:bob", "Case 7"), ("user:carol", "Case 8"), ("user:bob", None),
        ("user:carol", None)]


def test_an_unfiled_watch_is_its_creators(api: Api) -> None:
    """A watch with no case: its creator sees and manages it; another person does not
    see it (404); a member of the unfiled pseudo-case sees it."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    carol = api.user("carol", cases={"Case 8": "investigator"})
    una = api.user("una", cases={"unfiled": "viewer"})
    http = bob.client()
    watch = add(http, "https://example.org/mine.xml", case=None)
    assert watch["case"] is None
    assert http.post(f"/api/watches/{watch['id']}/pause").status_code == 200
    assert [w["id"] for w in http.get("/api/watches", params={"case": "unfiled"}
                                      ).json()["items"]] == [watch["id"]]
    assert carol.client().get(f"/api/watches/{watch['id']}").status_code == 404
    assert carol.client().get("/api/watches").json()["items"] == []
    assert una.client().get(f"/api/watches/{watch['id']}").status_code == 200


def test_bad_watches_are_refused_with_the_reason(api: Api) -> None:
    """An interval below watch.min_every or not a duration is 400, a URL with a
    password is 400, a URL watched already 409, an unknown kind 422; nothing is added."""
    bob = api.user("bob", cases={"Case 7": "investigator"})
    http = bob.client()
    fast = http.post("/api/watches", json={"url": "https://example.org/f", "case": "Case 7",
                                           "kind": "feed", "every": "10s"})
    assert fast.status_code == 400
    assert fast.json()["error"]["message"] == (
        "every 10s for https://example.org/f is more often than watch.min_every (1m) allows")
    soon = http.post("/api/watches", json={"url": "https://example.org/f", "case": "Case 7",
                                           "kind": "feed", "every": "soon"})
    assert soon.status_code == 400
    assert soon.json()["error"]["message"] == ("every: not a duration: 'soon' (write e.g. 90s, "
                                               "15m, 1h30m, 7d)")
    secret = http.post("/api/watches", json={"url": "https://u:pw@example.org/f",
                                             "case": "Case 7", "kind": "feed"})
    assert secret.status_code == 400
    assert secret.json()["error"]["code"] == "bad-input"
    kind = http.post("/api/watches", json={"url": "https://example.org/f", "kind": "rss"})
    assert kind.status_code == 422
    add(http, "https://example.org/f")
    twice = http.post("/api/watches", json={"url": "https://example.org/f", "case": "Case 7",
                                            "kind": "feed"})
    assert twice.status_code == 409
    assert twice.json()["error"]["message"].startswith(
        "https://example.org/f is already watched")
    assert len(watch_entries(api)) == 1


CSV = """url,kind,every,case,pattern
https://example.org/a.xml,feed,1h,,
https://example.org/b.xml,feed,2h,Case 8,
https://example.org/c.xml,carrier-pigeon,1h,,
https://example.org/d.xml,feed,1h,unfiled,
https://example.org/e.xml,feed,1h,Nope,
https://example.org/a.xml,feed,1h,,
"""


def test_import_checks_every_entry(api: Api) -> None:
    """A CSV watchlist into Case 7 through a submit token: the entries the person may
    add are added (watch.added naming them and their token), an entry of a case they
    are not in or that does not exist is refused in the same words, an invalid one is
    refused with why, a URL already watched is skipped."""
    bob = api.user("bob", cases={"Case 7": "investigator", "Case 9": "investigator"})
    api.case("Case 8")
    http = api.anonymous(bearer=bob.token("submit"))
    context = context_of(http)
    answer = http.post("/api/watches/import", params={"case": "Case 7"}, content=CSV,
                       headers={"Content-Type": "text/csv"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert [(w["url"], w["case"]) for w in report["added"]] == [
        ("https://example.org/a.xml", "Case 7"), ("https://example.org/d.xml", None)]
    assert report["skipped"] == [{"url": "https://example.org/a.xml",
                                  "reason": "https://example.org/a.xml is already watched "
                                            f"(watch {report['added'][0]['id']})"}]
    assert report["refused"] == [
        {"url": "https://example.org/b.xml",
         "reason": "no case 'Case 8' that you may add watches to"},
        {"url": "https://example.org/e.xml",
         "reason": "no case 'Nope' that you may add watches to"},
        {"url": "https://example.org/c.xml",
         "reason": "unknown watch kind 'carrier-pigeon' (one of auto, feed, channel, "
                   "activitypub, bluesky, telegram, page)"},
    ]
    added = watch_entries(api)
    assert [e.payload["url"] for e in added] == ["https://example.org/a.xml",
                                                 "https://example.org/d.xml"]
    for entry in added:
        assert entry.actor == "user:bob"
        assert entry.payload["context"] == context

    toml = '[[watch]]\nurl = "https://example.org/t.xml"\nkind = "feed"\n'
    second = http.post("/api/watches/import", params={"case": "Case 9"}, content=toml,
                       headers={"Content-Type": "application/toml"})
    assert [w["case"] for w in second.json()["added"]] == ["Case 9"]


def test_import_refuses_what_it_cannot_read(api: Api) -> None:
    """No format: 415; a malformed file: 400 naming the line; a case that is not the
    person's: 404 like an unknown one; a viewer: 403; nothing is added."""
    bob = api.user("bob", cases={"Case 7": "investigator", "Case 5": "viewer"})
    api.case("Case 8")
    http = bob.client()
    plain = http.post("/api/watches/import", params={"case": "Case 7"}, content=CSV,
                      headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415
    bad = http.post("/api/watches/import", params={"case": "Case 7", "format": "csv"},
                    content="url,every\nhttps://example.org/x,often\n")
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == ("the watchlist: line 2: not a duration: 'often' "
                                              "(write e.g. 90s, 15m, 1h30m, 7d)")
    for case in ("Case 8", "Nope"):
        answer = http.post("/api/watches/import", params={"case": case}, content=CSV,
                           headers={"Content-Type": "text/csv"})
        assert (answer.status_code, answer.json()) == (404, NOT_FOUND)
    viewer = http.post("/api/watches/import", params={"case": "Case 5"}, content=CSV,
                       headers={"Content-Type": "text/csv"})
    assert viewer.status_code == 403
    assert watch_entries(api) == []

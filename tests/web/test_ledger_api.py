"""The ledger through the API: the signed checkpoint and key history for anyone signed
in (checked here with the checkpoint code, independently of the route); entries,
filters and pages, proofs and verification for auditors, who get 403 on the admin
routes. Over the real app on a real port (tests/fixtures/api.py), SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import sqlalchemy as sa
from api_fixtures import Api
from ledger_forgery import drop_triggers

from chain_of_custody import merkle
from chain_of_custody.checkpoint import verify_note
from chain_of_custody.keys import PublicKey
from chain_of_custody.ledger import entries_table


def test_checkpoint_and_keys_for_anyone_signed_in(api: Api) -> None:
    """A viewer reads the latest checkpoint (its note verifies with the PEM key the API
    publishes) and the key history; anonymous gets 401."""
    viewer = api.user("vic", cases={"Case 7": "viewer"}).client()
    api.archive.checkpoint()
    latest = api.archive.ledger.latest_checkpoint()
    assert latest is not None
    answer = viewer.get("/api/ledger/checkpoint")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["note"] == latest.note
    assert (body["tree_size"], body["root_hash"]) == (latest.tree_size, latest.root_hash.hex())
    assert base64.b64decode(body["root_hash_base64"]) == latest.root_hash
    keys = viewer.get("/api/keys").json()
    assert keys["origin"] == api.archive.origin
    (key,) = keys["items"]
    assert key["key_id"] == body["key_id"] == api.archive.signing_key.key_id
    assert key["ledger_seq"] == 0
    public = PublicKey.from_pem(key["public_pem"].encode("ascii"))
    head = verify_note(body["note"], keys["origin"], public)
    assert head.size == body["tree_size"]
    assert body["verifier_key"] == key["checkpoint_verifier_key"]
    for path in ("/api/ledger/checkpoint", "/api/keys"):
        assert api.anonymous().get(path).status_code == 401


def test_auditor_reads_entries_and_proofs_but_not_admin_routes(api: Api) -> None:
    """An auditor lists entries (filtered by actor, action family, subject; page by
    page, each entry once), reads one, and gets a proof that verifies against the
    signed checkpoint; the admin routes answer 403; an investigator may not read the
    ledger (403)."""
    olga = api.user("olga", "auditor", cases={})
    bob = api.user("bob", cases={"Case 7": "investigator"})
    bob.client()
    http = olga.client()

    everything = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        page = http.get("/api/ledger/entries", params=params)
        assert page.status_code == 200, page.text
        everything += page.json()["items"]
        cursor = page.json()["next"]
        if cursor is None:
            break
    assert [e["seq"] for e in everything] == list(range(api.archive.ledger.size()))

    bobs = http.get("/api/ledger/entries", params={"actor": "bob"}).json()["items"]
    assert bobs
    assert {e["actor"] for e in bobs} == {"user:bob"}
    roles = http.get("/api/ledger/entries", params={"action": "role.*"}).json()["items"]
    assert {e["action"] for e in roles} == {"role.granted"}
    about = http.get("/api/ledger/entries", params={"subject": "case:Case 7"}).json()["items"]
    assert [e["action"] for e in about] == ["case.created", "role.granted"]
    after = http.get("/api/ledger/entries", params={"after_seq": 2, "limit": 1}).json()
    assert [e["seq"] for e in after["items"]] == [3]

    seq = bobs[0]["seq"]
    one = http.get(f"/api/ledger/entries/{seq}").json()
    assert one == bobs[0]
    missing = http.get("/api/ledger/entries/999999")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no ledger entry 999999"

    api.archive.checkpoint()
    proof = http.get(f"/api/ledger/proof/{seq}").json()
    latest = api.archive.ledger.latest_checkpoint()
    assert latest is not None
    assert proof["checkpoint"] == latest.note
    merkle.verify_inclusion(
        merkle.leaf_hash(proof["leaf"].encode("utf-8")), seq, proof["tree_size"],
        [bytes.fromhex(h) for h in proof["inclusion_proof"]], bytes.fromhex(proof["root_hash"]))
    assert bytes.fromhex(proof["leaf_hash"]) == bytes.fromhex(one["leaf_hash"])
    assert http.get("/api/ledger/proof/999999").status_code == 404

    for method, path in (("GET", "/api/users"), ("GET", "/api/tokens"),
                         ("POST", "/api/cases"), ("GET", "/api/cases/Case 7/members")):
        refused = http.request(method, path, json={"name": "x"} if method == "POST" else None)
        assert refused.status_code == 403, (method, path)
    investigator = bob.client()
    for path in ("/api/ledger/entries", f"/api/ledger/entries/{seq}", f"/api/ledger/proof/{seq}"):
        assert investigator.get(path).status_code == 403


def test_verify_reports_ok_and_problems_and_is_recorded(api: Api) -> None:
    """POST /api/ledger/verify: ok with the counts (ledger.verified names the auditor and
    their session); after an entry is altered behind the archive's back, not ok, naming
    it; a viewer may not verify (403)."""
    olga = api.user("olga", "auditor", cases={})
    http = olga.client()
    me = http.get("/api/me").json()
    answer = http.post("/api/ledger/verify")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["ok"] is True
    assert report["entries"] == report["ledger_seq"]
    entry = api.archive.ledger.entry(report["ledger_seq"])
    assert (entry.actor, entry.action) == ("user:olga", "ledger.verified")
    assert entry.payload["ok"] is True
    assert entry.payload["context"] == {"session": me["session"], "client": "127.0.0.1"}

    api.archive.checkpoint()
    drop_triggers(api.archive.engine)
    with api.archive.engine.begin() as conn:
        conn.execute(sa.update(entries_table).where(entries_table.c.seq == 1)
                     .values(actor="user:mallory"))
    broken = http.post("/api/ledger/verify").json()
    assert broken["ok"] is False
    assert broken["seq"] == 1
    assert broken["problem"] == ("entry 1 (user.created user:olga) was altered: its content "
                                 "does not match its leaf hash")
    viewer = api.user("vic", cases={"Case 7": "viewer"}).client()
    assert viewer.post("/api/ledger/verify").status_code == 403

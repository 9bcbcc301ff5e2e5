"""The custody ledger: its signed checkpoints and keys (for anyone signed in), its
entries and proofs (auditors), its verification.

``GET  /api/ledger/checkpoint``      the latest signed checkpoint: the note, parsed
``GET  /api/keys``                   the signing key history (PEM), from the ledger
``GET  /api/ledger/entries``         entries by seq (``?actor=&action=&subject=&after_seq=``)
``GET  /api/ledger/entries/{seq}``   one entry
``GET  /api/ledger/proof/{seq}``     its inclusion proof against the latest checkpoint
``POST /api/ledger/verify``          recompute the whole ledger (``ledger.verified``)

Reading entries is not itself recorded (the ledger is the record, not evidence content,
and recording each read would grow it with every page an auditor turns); a verification
is, with its outcome. The ledger's readers (``ledger.read``: auditors) see every entry's
payload, which names URLs and cases: that is the auditor's role as the issue defines it.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from archiver.archive import Archive
from archiver.people.access import Action
from archiver.web.errors import ApiError, not_found
from archiver.web.gate import GateDep, route
from archiver.web.pagination import Cursor, Limit
from chain_of_custody.checkpoint import parse_checkpoint, verifier_key
from chain_of_custody.errors import CustodyError, LedgerIntegrityError
from chain_of_custody.ledger import KEY_ACTIONS, entries_table

router = APIRouter(tags=["ledger"])

ENTRIES_LIST = "ledger-entries"
KEYS_LIST = "keys"
MAX_FILTER = 300

_verifying = threading.Lock()
"""One verification at a time per server: each reads the whole ledger."""


# -- shapes -------------------------------------------------------------------------------


class TimestampOut(BaseModel):
    tsa: str
    gen_time: str
    serial: str


class CheckpointOut(BaseModel):
    """The latest signed checkpoint: the signed note as it is, and what it says."""

    id: int
    origin: str
    tree_size: int
    root_hash: str = Field(description="hex")
    root_hash_base64: str
    key_id: str
    created: str
    note: str = Field(description="the signed note (C2SP tlog-checkpoint), verbatim")
    verifier_key: str | None = Field(description="the note verifier key of its signer")
    timestamps: list[TimestampOut] = Field(description="RFC 3161 tokens held for it")


class KeyOut(BaseModel):
    key_id: str
    algorithm: str
    public_pem: str
    created: str | None
    retired: str | None
    ledger_seq: int | None = Field(description="the key.created / key.rotated entry")
    checkpoint_verifier_key: str


class KeyPage(BaseModel):
    origin: str
    items: list[KeyOut]
    next: str | None


class EntryOut(BaseModel):
    seq: int
    time: str
    actor: str
    action: str
    subject: str
    payload: dict[str, Any] | None = Field(description="null: not a JSON object (the "
                                                       "ledger's verification names it)")
    signed_by: str | None
    signature: str | None = Field(description="base64 Ed25519 signature of the entry")
    leaf_hash: str = Field(description="hex, as stored")


class EntryPage(BaseModel):
    items: list[EntryOut]
    next: str | None


class ProofOut(BaseModel):
    seq: int
    leaf: str = Field(description="the entry's leaf: RFC 8785 canonical JSON")
    leaf_hash: str
    signed_by: str | None
    signature: str | None
    tree_size: int
    root_hash: str
    inclusion_proof: list[str] = Field(description="hex hashes, RFC 9162 order")
    checkpoint: str | None = Field(description="the signed checkpoint the proof is "
                                               "against; null: not yet in one (the proof "
                                               "is against the current root)")


class VerifyOut(BaseModel):
    ok: bool
    entries: int | None = None
    checkpoints: int | None = None
    root_hash: str | None = None
    unsigned_entries: int | None = None
    legacy_entries: int | None = None
    timestamp_tokens: int | None = None
    seq: int | None = Field(default=None, description="the first bad entry, when named")
    problem: str | None = None
    ledger_seq: int = Field(description="the ledger.verified entry of this verification")


# -- helpers ------------------------------------------------------------------------------


def _archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def _entry_out(row: Any) -> EntryOut:
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = None
    return EntryOut(
        seq=row.seq, time=row.time, actor=row.actor, action=row.action, subject=row.subject,
        payload=payload if isinstance(payload, dict) else None, signed_by=row.signed_by,
        signature=None if row.signature is None
        else base64.b64encode(bytes(row.signature)).decode("ascii"),
        leaf_hash=bytes(row.leaf_hash).hex(),
    )


def actor_condition(actor: str) -> Any:
    """``alice`` means the person ``user:alice``; a name with a colon
    (``os:root@host``, ``service:archiver``) is matched as it is."""
    return entries_table.c.actor == (actor if ":" in actor else f"user:{actor}")


def entries_page(request: Request, *, actor: str | None = None, action: str | None = None,
                 subject: str | None = None, after_seq: int | None = None,
                 cursor: str | None = None, limit: int = 50) -> EntryPage:
    """One page of ledger entries by seq, filtered (``action`` ending in ``.*``: every
    action of that family, e.g. ``watch.*``)."""
    cursors = request.app.state.cursors
    after = cursors.decode(ENTRIES_LIST, cursor)
    e = entries_table.c
    query = sa.select(entries_table)
    if actor is not None:
        query = query.where(actor_condition(actor))
    if action is not None:
        if action.endswith(".*"):
            query = query.where(e.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(e.action == action)
    if subject is not None:
        query = query.where(e.subject == subject)
    start = -1 if after_seq is None else after_seq
    if after is not None:
        start = max(start, int(after[0]))
    query = query.where(e.seq > start)
    with _archive(request).reader.connect() as conn:
        rows = conn.execute(query.order_by(e.seq).limit(limit + 1)).all()
    page = cursors.page(ENTRIES_LIST, rows, limit, lambda r: [r.seq], _entry_out)
    return EntryPage(items=page.items, next=page.next)


Filter = Annotated[str | None, Query(max_length=MAX_FILTER)]


# -- routes -------------------------------------------------------------------------------


@route(router, "GET", "/api/ledger/checkpoint", action=Action.LEDGER_PUBLIC,
       response_model=CheckpointOut)
def latest_checkpoint(request: Request, gate: GateDep) -> CheckpointOut:
    """The newest signed checkpoint (tree size and root of the ledger, signed by the
    archive's key): a client keeps it to check later proofs and checkpoints against.
    404 when the ledger has none yet."""
    archive = _archive(request)
    checkpoint = archive.ledger.latest_checkpoint()
    if checkpoint is None:
        raise not_found("the ledger has no signed checkpoint yet")
    head = parse_checkpoint(checkpoint.note.split("\n\n", 1)[0] + "\n")
    key = archive.public_keys().get(checkpoint.key_id)
    tokens = archive.timestamps(checkpoint)
    return CheckpointOut(
        id=checkpoint.id, origin=head.origin, tree_size=head.size,
        root_hash=head.root_hash.hex(),
        root_hash_base64=base64.b64encode(head.root_hash).decode("ascii"),
        key_id=checkpoint.key_id, created=checkpoint.created, note=checkpoint.note,
        verifier_key=None if key is None else verifier_key(archive.origin, key),
        timestamps=[TimestampOut(tsa=t.tsa_url, gen_time=t.gen_time, serial=t.serial)
                    for t in tokens],
    )


@route(router, "GET", "/api/keys", action=Action.LEDGER_PUBLIC, response_model=KeyPage)
def keys(request: Request, gate: GateDep, cursor: Cursor = None,
         limit: Limit = 50) -> KeyPage:
    """Every key the archive ever signed with, oldest first, as PEM: the key history of
    the ledger (``key.created``, ``key.rotated``), which verification trusts, with the
    dates the key table adds."""
    archive = _archive(request)
    cursors = request.app.state.cursors
    after = cursors.decode(KEYS_LIST, cursor)
    table = {row["key_id"]: row for row in archive.key_history()}
    registered = {str(e.payload.get("key_id")): e
                  for e in archive.ledger.entries(actions=KEY_ACTIONS)}
    rows = []
    for position, (key_id, key) in enumerate(archive.public_keys().items()):
        if after is not None and position <= int(after[0]):
            continue
        entry = registered.get(key_id)
        rows.append((position, KeyOut(
            key_id=key_id, algorithm=key.algorithm, public_pem=key.pem().decode("ascii"),
            created=entry.time if entry else table.get(key_id, {}).get("created"),
            retired=table.get(key_id, {}).get("retired"),
            ledger_seq=entry.seq if entry else None,
            checkpoint_verifier_key=verifier_key(archive.origin, key))))
    page = cursors.page(KEYS_LIST, rows[:limit + 1], limit, lambda r: [r[0]],
                        lambda r: r[1])
    return KeyPage(origin=archive.origin, items=page.items, next=page.next)


@route(router, "GET", "/api/ledger/entries", action=Action.LEDGER_READ,
       response_model=EntryPage)
def list_entries(
    request: Request, gate: GateDep, actor: Filter = None, action: Filter = None,
    subject: Filter = None,
    after_seq: Annotated[int | None, Query(ge=-1, description="entries after this seq")] = None,
    cursor: Cursor = None, limit: Limit = 50,
) -> EntryPage:
    """Ledger entries in seq order. ``actor``: a login (``alice`` = ``user:alice``) or a
    full actor; ``action``: exact, or a family (``watch.*``); ``subject``: exact
    (``capture:<id>``, ``case:<name>``, ``user:<login>``)."""
    return entries_page(request, actor=actor, action=action, subject=subject,
                        after_seq=after_seq, cursor=cursor, limit=limit)


@route(router, "GET", "/api/ledger/entries/{seq}", action=Action.LEDGER_READ,
       response_model=EntryOut)
def show_entry(request: Request, gate: GateDep, seq: int) -> EntryOut:
    """Ledger entry ``seq``."""
    with _archive(request).reader.connect() as conn:
        row = conn.execute(sa.select(entries_table)
                           .where(entries_table.c.seq == seq)).first()
    if row is None:
        raise not_found(f"no ledger entry {seq}")
    return _entry_out(row)


@route(router, "GET", "/api/ledger/proof/{seq}", action=Action.LEDGER_READ,
       response_model=ProofOut)
def proof(request: Request, gate: GateDep, seq: int) -> ProofOut:
    """The inclusion proof of entry ``seq`` in the newest signed checkpoint (or in the
    current tree when no checkpoint covers it yet), checked before it is given."""
    try:
        found = _archive(request).proof(seq)
    except CustodyError as exc:
        raise ApiError(409, "refused", f"the ledger does not prove entry {seq}: {exc}"
                       ) from None
    entry = found.entry
    return ProofOut(
        seq=entry.seq, leaf=entry.leaf_bytes().decode("utf-8"),
        leaf_hash=entry.leaf_hash().hex(), signed_by=entry.signed_by,
        signature=None if entry.signature is None
        else base64.b64encode(entry.signature).decode("ascii"),
        tree_size=found.tree_size, root_hash=found.root_hash.hex(),
        inclusion_proof=[h.hex() for h in found.hashes],
        checkpoint=found.checkpoint.note if found.checkpoint else None,
    )


@route(router, "POST", "/api/ledger/verify", action=Action.LEDGER_VERIFY,
       response_model=VerifyOut,
       responses={429: {"description": "a verification is running already"}})
def verify(request: Request, gate: GateDep) -> VerifyOut:
    """Recompute every hash of the ledger, check every checkpoint and entry signature
    and every RFC 3161 token (streaming: memory stays flat; time grows with the
    ledger). ``ok: false`` names the first problem. Recorded as ``ledger.verified``.
    429 while another verification runs on this server."""
    archive = _archive(request)
    if not _verifying.acquire(blocking=False):
        raise ApiError(429, "rate-limited", "a verification of the ledger is running "
                                            "already; ask again when it has finished",
                       {"Retry-After": "30"})
    try:
        archive.ledger.signing_key()  # the verification must be recorded: fail first
        try:
            report = archive.verify_ledger()
            tokens = archive.verify_timestamps()
        except LedgerIntegrityError as exc:
            result: dict[str, Any] = {"ok": False, "seq": exc.seq, "problem": str(exc)}
        else:
            result = {"ok": True, "entries": report.entries,
                      "checkpoints": report.checkpoints,
                      "root_hash": report.root_hash.hex(),
                      "unsigned_entries": report.unsigned_entries,
                      "legacy_entries": report.legacy_entries, "timestamp_tokens": tokens}
    finally:
        _verifying.release()
    payload = dict(result)
    context = gate.context()
    if context:
        payload["context"] = context
    entry = archive.ledger.append(actor=gate.actor, action="ledger.verified",
                                  subject=f"ledger:{archive.origin}", payload=payload)
    return VerifyOut(**result, ledger_seq=entry.seq)

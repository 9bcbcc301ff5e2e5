"""The custody ledger: an append-only list of events, an RFC 9162 Merkle tree over them,
and signed checkpoints of that tree.

Tables (created by the application's migrations; their SQLAlchemy description is here)::

    ledger_entries      seq, time, actor, action, subject, payload (RFC 8785 JSON), leaf_hash,
                        signed_by, signature (Ed25519, see "Entry authentication")
    ledger_nodes        (level, idx) → hash of each perfect subtree, level >= 1
    ledger_checkpoints  signed tree heads (C2SP signed notes)

An entry's *leaf* is the RFC 8785 canonical JSON of ``{seq, time, actor, action, subject,
payload}`` (and ``signed_by`` when the entry is signed), so the position of an entry is
part of what is hashed: moving, inserting or removing an entry changes the leaves after
it. Level 0 of the tree is the ``leaf_hash`` column; interior nodes are written once, when
their last leaf is appended, so roots and proofs of any tree size need O(log n) rows (see
:mod:`chain_of_custody.merkle`).

Entry authentication: a checkpoint signs whatever rows the database holds, so a row
that anyone with write access to the database inserted after the newest checkpoint would
be signed in by the next one. Every entry is therefore signed when it is appended, by the
archive's key (Ed25519 over :func:`entry_signed_text`: a domain line, the archive's
origin, the seq and the leaf hash), and its leaf names that key (``signed_by``), so a
signature cannot be stripped from an entry a checkpoint covers without changing the tree.
Which key may sign an entry follows the key history on the ledger itself
(:class:`KeyChain`): the first ``key.created`` entry is signed by the key it registers;
every later key entry (``key.rotated``) is signed by the key current before it and hands
authority to the key it names. A forged rotation therefore fails like any forged entry.
:meth:`Ledger.create_checkpoint` re-checks every entry since the previous checkpoint
(leaf, signature, key, and that the stored tree over them is theirs) before it signs, and
refuses, naming the entry, when one is not authentic. Entries written before entry
authentication existed carry no signature; they are accepted only where a signed
checkpoint covers them (``archiver init`` checkpoints such a tail once, when it upgrades
the database).

Threat model notes:

* Appends are serialised: on PostgreSQL by a transaction-scoped advisory lock taken
  before the head is read; on SQLite by the database write lock, which the engine must
  take when the transaction begins (``BEGIN IMMEDIATE``; the application's engine does).
  The primary key on ``seq`` is the last line of defence: two writers can never both
  get the same position, one of them fails instead.
* The database refuses UPDATE, DELETE and TRUNCATE on the three tables (triggers, see
  :func:`append_only_trigger_ddl`); the application never issues them.
* Someone with direct database access can drop the triggers. :meth:`Ledger.verify`
  therefore trusts nothing stored: it recomputes every leaf from its row, checks every
  entry's signature against the key history, rebuilds the tree, compares every stored
  node and every signed checkpoint, and names the first entry that does not fit.
* The database never holds the private key: a writer without it can append rows, but no
  row it writes verifies, and no checkpoint will sign it in.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import rfc8785
import sqlalchemy as sa

from chain_of_custody import merkle
from chain_of_custody.checkpoint import sign_checkpoint, verify_note
from chain_of_custody.errors import (
    CustodyError,
    LedgerError,
    LedgerIntegrityError,
    ProofError,
    VerificationError,
)
from chain_of_custody.keys import PublicKey, SigningKey
from chain_of_custody.times import rfc3339

metadata = sa.MetaData()

entries_table = sa.Table(
    "ledger_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("time", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    # Entry authentication (migration 0005); NULL in entries from before it.
    sa.Column("signed_by", sa.Text, nullable=True),
    sa.Column("signature", sa.LargeBinary(64), nullable=True),
)

nodes_table = sa.Table(
    "ledger_nodes",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

checkpoints_table = sa.Table(
    "ledger_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created", sa.Text, nullable=False),
)

LEDGER_TABLES = ("ledger_entries", "ledger_nodes", "ledger_checkpoints")
# pg_advisory_xact_lock key: the first 8 bytes of SHA-256("evidence-archiver/ledger-append").
_PG_APPEND_LOCK = 0x3A5C_7D11_90E2_4B6F
_STREAM_ROWS = 2000
T = TypeVar("T")


KEY_ACTIONS = ("key.created", "key.rotated")
"""The entries that register a signing key: the key history trusted by verification."""

ENTRY_SIGNATURE_CONTEXT = "evidence-archiver/ledger-entry/v1"
"""The first line of every entry signature's message: it cannot be mistaken for a
checkpoint (whose first line is the origin) or a manifest (JSON)."""

KeySource = SigningKey | Callable[[], SigningKey]
"""A signing key, or a function that loads it on first use (decrypting it costs time and
needs the passphrase, which read-only commands never ask for)."""


def entry_signed_text(origin: str, seq: int, leaf_hash: bytes) -> bytes:
    """The bytes an entry's Ed25519 signature covers::

        evidence-archiver/ledger-entry/v1
        <origin>
        <seq, decimal>
        <leaf hash, lower-case hex>

    each line ending in a newline. The leaf names the signing key, so the key is bound
    too; ``openssl pkeyutl -verify -pubin -rawin`` checks such a signature.
    """
    if not origin or "\n" in origin:
        raise ValueError("an entry signature needs the archive's one-line origin")
    return f"{ENTRY_SIGNATURE_CONTEXT}\n{origin}\n{seq}\n{leaf_hash.hex()}\n".encode()


def append_only_trigger_ddl(
    dialect: str, tables: Sequence[str] = LEDGER_TABLES
) -> list[str]:
    """Statements that make ``tables`` (default: the ledger's) refuse UPDATE, DELETE (and
    TRUNCATE). Other insert-only tables of this package (timestamp tokens) use it too.

    Raises ``ValueError`` for a database other than SQLite and PostgreSQL.
    """
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER {table}_refuse_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only, {op} refused'); END"
            for table in tables
            for op in ("UPDATE", "DELETE")
        ]
    if dialect == "postgresql":
        statements = [
            "CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $fn$ BEGIN "
            "RAISE EXCEPTION '% is append-only, % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; "
            "END $fn$"
        ]
        for table in tables:
            statements.append(
                f"CREATE TRIGGER {table}_refuse_change BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
            )
            statements.append(
                f"CREATE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
            )
        return statements
    raise ValueError(f"no append-only triggers for database {dialect!r}")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One event on the ledger. ``payload`` is JSON data (treat it as read-only).

    ``signed_by`` is the key id of the key that authenticated the entry when it was
    appended (part of the leaf); ``signature`` is that key's Ed25519 signature over
    :func:`entry_signed_text` (not part of the leaf: it signs the leaf). Both are None
    in entries written before entry authentication.
    """

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    payload: Mapping[str, Any]
    signed_by: str | None = None
    signature: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        data = {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "payload": dict(self.payload),
        }
        if self.signed_by is not None:
            data["signed_by"] = self.signed_by
        return data

    def leaf_bytes(self) -> bytes:
        """The leaf: RFC 8785 canonical JSON of the whole entry."""
        return rfc8785.dumps(self.as_json())

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf_bytes())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head as stored."""

    id: int
    tree_size: int
    root_hash: bytes
    origin: str
    key_id: str
    note: str
    created: str


@dataclass(frozen=True, slots=True)
class LedgerReport:
    """What :meth:`Ledger.verify` checked."""

    entries: int
    checkpoints: int
    root_hash: bytes
    latest_checkpoint_size: int | None
    legacy_entries: int = 0
    """Entries from before entry authentication (no signature; a checkpoint covers each)."""

    @property
    def unsigned_entries(self) -> int:
        """Entries after the newest checkpoint: no checkpoint covers them yet (each is
        authenticated by its own signature)."""
        return self.entries - (self.latest_checkpoint_size or 0)


def _entry_from_row(row: Any) -> LedgerEntry:
    payload = json.loads(row.payload)
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    signature = None if row.signature is None else bytes(row.signature)
    return LedgerEntry(row.seq, row.time, row.actor, row.action, row.subject, payload,
                       row.signed_by, signature)


def _checked_leaf(row: Any) -> tuple[LedgerEntry, bytes]:
    """The entry of a stored row and its leaf hash, recomputed from its content; raises
    :class:`LedgerIntegrityError` when the row does not match its own ``leaf_hash``."""
    seq = row.seq
    try:
        entry = _entry_from_row(row)
        canonical = rfc8785.dumps(dict(entry.payload)).decode("utf-8")
    except (ValueError, TypeError, rfc8785.CanonicalizationError) as exc:
        raise LedgerIntegrityError(
            f"entry {seq} was altered: its payload is not a canonical JSON object",
            seq=seq,
        ) from exc
    if canonical != row.payload:
        raise LedgerIntegrityError(
            f"entry {seq} was altered: its payload is not in canonical form", seq=seq
        )
    leaf = entry.leaf_hash()
    if leaf != bytes(row.leaf_hash):
        raise LedgerIntegrityError(
            f"entry {seq} ({row.action} {row.subject}) was altered: its content does not "
            "match its leaf hash",
            seq=seq,
        )
    return entry, leaf


def _checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(
        row.id, row.tree_size, bytes(row.root_hash), row.origin, row.key_id, row.note,
        row.created,
    )


def _described(entry: LedgerEntry) -> str:
    return f"entry {entry.seq} ({entry.action} {entry.subject})"


def registered_key(entry: LedgerEntry) -> PublicKey:
    """The key a ``key.created`` / ``key.rotated`` entry registers.

    Raises :class:`LedgerIntegrityError` when the payload holds no valid Ed25519 public
    key or names another key id than the key it holds.
    """
    pem = entry.payload.get("public_key_pem")
    try:
        key = PublicKey.from_pem(str(pem).encode("ascii"))
    except (CustodyError, UnicodeEncodeError) as exc:
        raise LedgerIntegrityError(
            f"{_described(entry)} holds no valid public key", seq=entry.seq
        ) from exc
    if key.key_id != entry.payload.get("key_id"):
        raise LedgerIntegrityError(
            f"{_described(entry)} names key {entry.payload.get('key_id')} but holds key "
            f"{key.key_id}",
            seq=entry.seq,
        )
    return key


class KeyChain:
    """Which key authenticates each entry, fed the entries in ``seq`` order.

    * Before any key entry, a key of ``anchors`` (the keys the verifier trusts).
    * The first key entry may be signed by the key it registers: no earlier key can
      vouch for it; trust in it comes from the checkpoints it signs and the key the
      archive publishes.
    * Every later key entry must be signed by the key current before it; the key it
      registers authenticates the entries after it. So only a holder of the current key
      can hand authority to another one, and a forged ``key.rotated`` row (which no
      holder signed) gives its key nothing.
    * An entry from before entry authentication (no ``signed_by``, no signature) is
      accepted only where a signed checkpoint covers it (``covered``); its place in the
      tree is then what the checkpoint signed. The one checkpoint that signs in the tail
      written before entry authentication (``predating``) accepts such an entry
      uncovered, but only while no signed entry came before it: an unsigned row after a
      signed one was inserted later, by someone without the key.
    """

    def __init__(self, origin: str | None, anchors: Mapping[str, PublicKey]) -> None:
        self.origin = origin
        self.anchors = dict(anchors)
        self.current: PublicKey | None = None
        self.current_since: int | None = None  # the seq of the key entry that made it so
        self.keys: dict[str, PublicKey] = {}  # every key the chain gave authority, in order
        self.legacy = 0  # entries accepted without a signature
        self.first_signed: int | None = None  # the seq of the first signed entry seen

    def check(self, entry: LedgerEntry, leaf_hash: bytes, *, covered: bool,
              predating: bool = False) -> None:
        """Accept ``entry`` (whose recomputed leaf hash is ``leaf_hash``) or raise
        :class:`LedgerIntegrityError` naming it; then follow a key entry's hand-over.
        ``predating`` accepts an unsigned entry no checkpoint covers if no signed entry
        came before it. Raises :class:`LedgerError` when no origin was given to check a
        signature with.
        """
        if entry.signed_by is None:
            if entry.signature is not None:
                raise LedgerIntegrityError(
                    f"{_described(entry)} carries a signature but its leaf names no key: "
                    "the row was altered",
                    seq=entry.seq,
                )
            if not covered and not (predating and self.first_signed is None):
                raise LedgerIntegrityError(
                    f"{_described(entry)} carries no signature and no signed checkpoint "
                    "covers it: no holder of the archive's key wrote it (a row inserted "
                    "into the database)",
                    seq=entry.seq,
                )
            self.legacy += 1
        else:
            self._check_signature(entry, leaf_hash)
            if self.first_signed is None:
                self.first_signed = entry.seq
        if entry.action in KEY_ACTIONS:
            key = registered_key(entry)
            self.current, self.current_since = key, entry.seq
            self.keys[key.key_id] = key

    def _check_signature(self, entry: LedgerEntry, leaf_hash: bytes) -> None:
        signer = entry.signed_by
        assert signer is not None
        if entry.signature is None:
            raise LedgerIntegrityError(
                f"{_described(entry)} names key {signer[:16]}… as its signer but carries no "
                "signature: it was removed",
                seq=entry.seq,
            )
        if self.origin is None:
            raise LedgerError("cannot check ledger entry signatures without the archive's "
                              "origin")
        key = self._authorised(entry)
        if key is None or key.key_id != signer:
            expected = "that key is not in the archive's key history"
            if key is not None:
                expected = f"the archive's key then was {key.key_id[:16]}…"
                if self.current_since is not None:
                    expected += f" (registered by entry {self.current_since})"
            raise LedgerIntegrityError(
                f"{_described(entry)} is signed by key {signer[:16]}…, but {expected}: no "
                "holder of the archive's key wrote it",
                seq=entry.seq,
            )
        try:
            key.verify(entry.signature, entry_signed_text(self.origin, entry.seq, leaf_hash))
        except VerificationError as exc:
            raise LedgerIntegrityError(
                f"{_described(entry)} has a signature that does not verify with key "
                f"{signer[:16]}…: the entry was forged or altered",
                seq=entry.seq,
            ) from exc

    def _authorised(self, entry: LedgerEntry) -> PublicKey | None:
        if self.current is not None:
            return self.current
        assert entry.signed_by is not None
        anchor = self.anchors.get(entry.signed_by)
        if anchor is not None:
            return anchor
        if entry.action in KEY_ACTIONS:
            return registered_key(entry)  # the first key entry, signed by its own key
        return None


def _entry_range(level: int, index: int) -> tuple[int, int]:
    return index << level, ((index + 1) << level) - 1


def _tree_order(level: int, index: int) -> tuple[int, int]:
    """Nodes in the order appends complete them: by last entry covered, then level."""
    return (index + 1) << level, level


class Ledger:
    """The ledger in a database reached through ``engine``.

    Every method that takes ``connection`` runs inside the caller's transaction when one
    is given (so an event and the rows it describes commit together), else in its own.
    Database failures are raised as :class:`LedgerError`.

    ``origin`` is the archive's origin (bound into every entry signature); ``signer`` the
    archive's key, or a function that loads it on first use. A ledger without a signer
    reads and verifies but refuses to append: no entry is written unauthenticated.
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], datetime] = _utc_now,
        origin: str | None = None,
        signer: KeySource | None = None,
    ) -> None:
        if signer is not None and not origin:
            raise ValueError("a ledger that signs its entries needs the archive's origin")
        self.engine = engine
        self.clock = clock
        self.origin = origin
        self._signer = signer

    # -- writing ------------------------------------------------------------------------

    def append(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        payload: Mapping[str, Any],
        connection: sa.Connection | None = None,
    ) -> LedgerEntry:
        """Append one event; returns it with its ``seq``.

        The entry is signed by the ledger's signer (see :class:`Ledger`), which must be
        the key the key history on the ledger makes current.

        Raises ``ValueError`` if the payload is not JSON data RFC 8785 can represent,
        :class:`LedgerError` if the ledger has no signer, its key is not the archive's
        current key, or the database refuses the write; whatever loading the key raises
        (a missing passphrase) passes through.
        """
        for name, value in (("actor", actor), ("action", action), ("subject", subject)):
            if not value:
                raise ValueError(f"a ledger entry needs a non-empty {name}")
        try:
            payload_text = rfc8785.dumps(dict(payload)).decode("utf-8")
        except (TypeError, rfc8785.CanonicalizationError) as exc:
            raise ValueError(f"ledger payload is not canonical JSON data: {exc}") from exc
        key = self.signing_key()  # before any lock: loading may decrypt the key file
        return self._in_transaction(
            connection,
            lambda conn: self._append(conn, key, actor, action, subject, payload_text),
            "cannot append to the ledger",
        )

    def signing_key(self) -> SigningKey:
        """The key this ledger signs entries with, loaded now if it was not yet.

        Raises :class:`LedgerError` when the ledger has none; whatever loading raises
        passes through. A caller about to do something that must be recorded (hand out
        an artifact) calls it first, so the record cannot fail after the fact.
        """
        if self._signer is None:
            raise LedgerError(
                "this ledger has no signing key, so it cannot append: every entry is "
                "signed by the archive's key"
            )
        return self._signer if isinstance(self._signer, SigningKey) else self._signer()

    def _append(
        self, conn: sa.Connection, key: SigningKey, actor: str, action: str, subject: str,
        payload_text: str,
    ) -> LedgerEntry:
        assert self.origin is not None  # a ledger with a signer has one
        self._lock(conn)
        self._check_current(conn, key)
        seq = self._size(conn)
        entry = LedgerEntry(seq, rfc3339(self.clock()), actor, action, subject,
                            json.loads(payload_text), key.key_id)
        leaf = entry.leaf_hash()
        signature = key.sign(entry_signed_text(self.origin, seq, leaf))
        conn.execute(
            sa.insert(entries_table).values(
                seq=seq, time=entry.time, actor=actor, action=action, subject=subject,
                payload=payload_text, leaf_hash=leaf, signed_by=key.key_id,
                signature=signature,
            )
        )
        # The perfect subtrees this leaf completes: one per trailing 1-bit of seq.
        levels = (~seq & (seq + 1)).bit_length() - 1
        if levels:
            lefts = self._read_nodes(
                conn, {(level - 1, (seq >> level) << 1) for level in range(1, levels + 1)}
            )
            current = leaf
            rows = []
            for level in range(1, levels + 1):
                current = merkle.node_hash(lefts[level - 1, (seq >> level) << 1], current)
                rows.append({"level": level, "idx": seq >> level, "hash": current})
            conn.execute(sa.insert(nodes_table), rows)
        return LedgerEntry(entry.seq, entry.time, actor, action, subject, entry.payload,
                           key.key_id, signature)

    @staticmethod
    def _check_current(conn: sa.Connection, key: SigningKey) -> None:
        """Refuse to sign with another key than the one the newest key entry registers:
        its entries would never verify, and the ledger could not be checkpointed again.
        (One indexed read per append; the history itself is authenticated by
        :meth:`create_checkpoint` and :meth:`verify`.)"""
        e = entries_table.c
        payload = conn.execute(
            sa.select(e.payload).where(e.action.in_(KEY_ACTIONS))
            .order_by(e.seq.desc()).limit(1)
        ).scalar_one_or_none()
        if payload is None:
            return
        try:
            current = json.loads(payload).get("key_id")
        except (ValueError, AttributeError):
            current = None
        if current != key.key_id:
            raise LedgerError(
                f"the signing key {key.key_id[:16]}… is not the archive's current key "
                f"({str(current)[:16]}…, registered by the newest key entry); point "
                "signing.key_file at the current key, or run 'archiver ledger verify'"
            )

    def create_checkpoint(
        self,
        key: SigningKey,
        origin: str,
        *,
        connection: sa.Connection | None = None,
        legacy: bool = False,
    ) -> Checkpoint:
        """Sign the current head as a C2SP checkpoint and store it.

        First it checks what it is about to sign: the newest stored checkpoint must carry
        a valid signature by a key of the key history and match the stored tree, every
        entry after it must be authentic (leaf, signature, key; see :class:`KeyChain`),
        and the stored tree over those entries must be theirs. ``key`` must be the key the
        key history makes current. ``legacy`` accepts entries without a signature: only
        for the one checkpoint that signs in the tail written before entry
        authentication, when the database is upgraded, and only those that no signed
        entry precedes (see :meth:`predating_tail`).

        Raises :class:`LedgerIntegrityError` naming the first entry (or the checkpoint)
        that does not pass, :class:`LedgerError` if the database refuses.
        """

        def run(conn: sa.Connection) -> Checkpoint:
            self._lock(conn)
            size = self._size(conn)
            try:
                root = self._checked_root(conn, key, origin, size, legacy=legacy)
            except LedgerIntegrityError as exc:
                raise LedgerIntegrityError(f"no checkpoint signed: {exc}", seq=exc.seq) from exc
            note = sign_checkpoint(origin, size, root, key)
            created = rfc3339(self.clock())
            result = conn.execute(
                sa.insert(checkpoints_table).values(
                    tree_size=size, root_hash=root, origin=origin, key_id=key.key_id,
                    note=note, created=created,
                )
            )
            primary_key = result.inserted_primary_key
            assert primary_key is not None
            return Checkpoint(int(primary_key[0]), size, root, origin, key.key_id, note,
                              created)

        return self._in_transaction(connection, run, "cannot store a ledger checkpoint")

    # -- reading ------------------------------------------------------------------------

    def size(self) -> int:
        """How many entries the ledger holds."""
        return self._in_transaction(None, self._size, "cannot read the ledger")

    def entry(self, seq: int) -> LedgerEntry:
        """Entry ``seq``. Raises :class:`LedgerError` if there is none."""

        def run(conn: sa.Connection) -> LedgerEntry:
            row = conn.execute(
                sa.select(entries_table).where(entries_table.c.seq == seq)
            ).one_or_none()
            if row is None:
                raise LedgerError(f"no ledger entry {seq}")
            try:
                return _entry_from_row(row)
            except ValueError as exc:
                raise LedgerIntegrityError(
                    f"entry {seq} has a payload that is not a JSON object", seq=seq
                ) from exc

        return self._in_transaction(None, run, "cannot read the ledger")

    def entries(
        self,
        *,
        subject: str | None = None,
        actions: Collection[str] | None = None,
        start: int = 0,
        stop: int | None = None,
        actors: Collection[str] | None = None,
    ) -> Iterator[LedgerEntry]:
        """Entries in ``seq`` order, optionally of one ``subject``, some ``actions`` or
        some ``actors`` (each matched exactly).

        Read in pages of a few thousand, each on a short-lived connection, so a caller
        that stops early holds no connection and memory stays bounded.
        """
        e = entries_table.c
        query = sa.select(entries_table)
        if stop is not None:
            query = query.where(e.seq < stop)
        if subject is not None:
            query = query.where(e.subject == subject)
        if actions is not None:
            query = query.where(e.action.in_(list(actions)))
        if actors is not None:
            query = query.where(e.actor.in_(list(actors)))
        after = start - 1
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    query.where(e.seq > after).order_by(e.seq).limit(_STREAM_ROWS)
                ).all()
            for row in rows:
                yield _entry_from_row(row)
            if len(rows) < _STREAM_ROWS:
                return
            after = rows[-1].seq

    def root_hash(self, size: int) -> bytes:
        """The root of the tree of the first ``size`` entries."""

        def run(conn: sa.Connection) -> bytes:
            self._check_size(conn, size)
            return self._root(conn, size)

        return self._in_transaction(None, run, "cannot read the ledger")

    def inclusion_proof(self, seq: int, tree_size: int) -> list[bytes]:
        """Inclusion proof of entry ``seq`` in the tree of ``tree_size`` entries."""
        if not 0 <= seq < tree_size:
            raise ProofError(f"entry {seq} is not in a tree of size {tree_size}")
        return self._prove(tree_size, lambda r: merkle.inclusion_proof(seq, tree_size, r))

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Proof that the tree of ``size2`` entries extends the tree of ``size1``."""
        if not 0 < size1 <= size2:
            raise ProofError(f"no consistency proof from size {size1} to size {size2}")
        return self._prove(size2, lambda r: merkle.consistency_proof(size1, size2, r))

    def predating_tail(self) -> int:
        """How many entries after the newest checkpoint carry no signature, when every one
        of them predates the first signed entry: the tail written before entry
        authentication that the upgrade's checkpoint signs in (``legacy``). 0 when there
        is none, or when an unsigned entry follows a signed one (a forged row, which no
        checkpoint signs in)."""

        def run(conn: sa.Connection) -> int:
            e = entries_table.c
            covered = self._newest_checkpoint_size(conn)
            unsigned = conn.execute(
                sa.select(sa.func.count(), sa.func.max(e.seq))
                .where(e.seq >= covered, e.signed_by.is_(None))
            ).one()
            count, last = int(unsigned[0]), unsigned[1]
            if count == 0:
                return 0
            first_signed = conn.execute(
                sa.select(sa.func.min(e.seq)).where(e.signed_by.is_not(None))
            ).scalar()
            return count if first_signed is None or last < first_signed else 0

        return self._in_transaction(None, run, "cannot read the ledger")

    def latest_checkpoint(self) -> Checkpoint | None:
        def run(conn: sa.Connection) -> Checkpoint | None:
            c = checkpoints_table.c
            row = conn.execute(
                sa.select(checkpoints_table).order_by(c.tree_size.desc(), c.id.desc()).limit(1)
            ).one_or_none()
            return None if row is None else _checkpoint_from_row(row)

        return self._in_transaction(None, run, "cannot read the ledger")

    def checkpoint_covering(self, seq: int) -> Checkpoint | None:
        """The oldest checkpoint whose tree includes entry ``seq``, if any."""

        def run(conn: sa.Connection) -> Checkpoint | None:
            c = checkpoints_table.c
            row = conn.execute(
                sa.select(checkpoints_table).where(c.tree_size > seq)
                .order_by(c.tree_size, c.id).limit(1)
            ).one_or_none()
            return None if row is None else _checkpoint_from_row(row)

        return self._in_transaction(None, run, "cannot read the ledger")

    # -- verification -------------------------------------------------------------------

    def key_history(self) -> list[PublicKey]:
        """The keys the key history on the ledger gave authority, oldest first.

        Each key entry must be authenticated as :class:`KeyChain` says (a key entry from
        before entry authentication must lie under the newest checkpoint); a forged
        ``key.rotated`` row is refused, never trusted. This reads the key entries only:
        :meth:`verify` checks them in the whole tree.

        Raises :class:`LedgerIntegrityError` naming the first key entry that is not
        authentic, :class:`LedgerError` when the database cannot be read.
        """

        def run(conn: sa.Connection) -> list[PublicKey]:
            covered = self._newest_checkpoint_size(conn)
            chain = KeyChain(self.origin, {})
            e = entries_table.c
            rows = conn.execute(
                sa.select(entries_table).where(e.action.in_(KEY_ACTIONS)).order_by(e.seq)
            ).all()
            for row in rows:
                entry, leaf = _checked_leaf(row)
                chain.check(entry, leaf, covered=entry.seq < covered)
            return list(chain.keys.values())

        return self._in_transaction(None, run, "cannot read the ledger")

    def verify(self, keys: Iterable[PublicKey]) -> LedgerReport:
        """Recompute the whole ledger from its rows and check it against itself.

        Streams entries, stored nodes and checkpoints together, in O(log n) memory.
        Every entry's signature is checked against the key history (:class:`KeyChain`,
        with ``keys`` as the keys trusted before the first key entry); a checkpoint must
        be signed by one of ``keys`` or a key the history gave authority.
        Raises :class:`LedgerIntegrityError` naming the first entry that was altered,
        removed, inserted or forged (or the checkpoint at fault), :class:`LedgerError`
        when the database cannot be read.
        """
        by_id = {key.key_id: key for key in keys}
        try:
            with self.engine.connect() as conn:
                return _Verification(conn, by_id, self.origin).run()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _newest_checkpoint_size(conn: sa.Connection) -> int:
        newest = conn.execute(sa.select(sa.func.max(checkpoints_table.c.tree_size))).scalar()
        return 0 if newest is None else int(newest)

    def _checked_root(
        self, conn: sa.Connection, key: SigningKey, origin: str, size: int, *, legacy: bool
    ) -> bytes:
        """The root of the first ``size`` entries, once everything since the newest
        checkpoint signed by ``key`` checked out (see :meth:`create_checkpoint`).

        The starting point is a checkpoint by ``key`` itself, the one key the signer
        trusts without the database's word. Without one (a new archive, a new key) the
        whole ledger is verified instead.
        """
        if origin != self.origin and self.origin is not None:
            raise LedgerError(f"checkpoint origin {origin!r} is not the ledger's "
                              f"{self.origin!r}")
        anchors = {key.key_id: key.public}
        c = checkpoints_table.c
        previous = conn.execute(
            sa.select(checkpoints_table).where(c.key_id == key.key_id)
            .order_by(c.tree_size.desc(), c.id.desc()).limit(1)
        ).one_or_none()
        if previous is None:
            verification = _Verification(conn, anchors, origin, legacy=legacy)
            report = verification.run()
            chain = verification.chain
            root = report.root_hash
        else:
            chain, root = self._extend(conn, previous, key, origin, size, legacy=legacy)
        if chain.current is not None and chain.current.key_id != key.key_id:
            raise LedgerError(
                f"the signing key {key.key_id[:16]}… is not the archive's current key "
                f"{chain.current.key_id[:16]}…; it signs no checkpoint"
            )
        return root

    def _extend(
        self, conn: sa.Connection, previous: Any, key: SigningKey, origin: str, size: int,
        *, legacy: bool,
    ) -> tuple[KeyChain, bytes]:
        name = f"checkpoint #{previous.id} (tree size {previous.tree_size})"
        try:
            head = verify_note(previous.note, origin, key.public)
        except VerificationError as exc:
            raise LedgerIntegrityError(
                f"{name}: {exc}; run 'archiver ledger verify'"
            ) from exc
        start = head.size
        if start > size:
            raise LedgerIntegrityError(
                f"entries from {size} on are missing: signed {name} covers {start} entries; "
                "run 'archiver ledger verify'",
                seq=size,
            )
        # The stored right edge of the signed tree must give its signed root: then the new
        # tree extends exactly what was signed, whatever else the database now says.
        builder = self._with_nodes(conn, functools.partial(merkle.TreeBuilder.resume, start))
        if builder.root() != head.root_hash:
            raise LedgerIntegrityError(
                f"the stored tree no longer gives the root signed in {name}: entries before "
                f"{start} were altered; run 'archiver ledger verify'"
            )
        # The key history up to the signed tree: each key entry proven in it.
        chain = KeyChain(origin, {key.key_id: key.public})
        e = entries_table.c
        for row in conn.execute(
            sa.select(entries_table).where(e.action.in_(KEY_ACTIONS), e.seq < start)
            .order_by(e.seq)
        ).all():
            entry, leaf = _checked_leaf(row)
            proof = self._with_nodes(conn, functools.partial(
                merkle.inclusion_proof, entry.seq, start))
            try:
                merkle.verify_inclusion(leaf, entry.seq, start, proof, head.root_hash)
            except ProofError as exc:
                raise LedgerIntegrityError(
                    f"{_described(entry)} is not the entry signed in {name}: it was "
                    "altered; run 'archiver ledger verify'",
                    seq=entry.seq,
                ) from exc
            chain.check(entry, leaf, covered=True)
        if legacy:
            chain.first_signed = conn.execute(
                sa.select(sa.func.min(e.seq)).where(e.seq < start, e.signed_by.is_not(None))
            ).scalar()
        # Every entry since then: authentic, in order, and folded into the tree.
        result = conn.execute(
            sa.select(entries_table).where(e.seq >= start, e.seq < size).order_by(e.seq),
            execution_options={"yield_per": _STREAM_ROWS},
        )
        try:
            for row in result:
                if row.seq != builder.size:
                    raise LedgerIntegrityError(
                        f"entry {builder.size} is missing (a row was deleted)",
                        seq=builder.size,
                    )
                entry, leaf = _checked_leaf(row)
                chain.check(entry, leaf, covered=False, predating=legacy)
                builder.add(leaf)
        finally:
            result.close()
        if builder.size != size:
            raise LedgerIntegrityError(f"entry {builder.size} is missing (a row was deleted)",
                                       seq=builder.size)
        root = builder.root()
        if size > start and self._root(conn, size) != root:
            raise LedgerIntegrityError(
                f"the stored tree over entries {start}-{size - 1} is not the tree of those "
                "entries; run 'archiver ledger verify'",
                seq=start,
            )
        return chain, root

    def _in_transaction(
        self,
        connection: sa.Connection | None,
        work: Callable[[sa.Connection], T],
        failure: str,
    ) -> T:
        try:
            if connection is not None:
                return work(connection)
            with self.engine.begin() as conn:
                return work(conn)
        except sa.exc.SQLAlchemyError as exc:
            detail = getattr(exc, "orig", None) or exc
            raise LedgerError(f"{failure}: {detail}") from exc

    @staticmethod
    def _lock(conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_APPEND_LOCK)))

    @staticmethod
    def _size(conn: sa.Connection) -> int:
        head = conn.execute(sa.select(sa.func.max(entries_table.c.seq))).scalar_one()
        return 0 if head is None else int(head) + 1

    def _check_size(self, conn: sa.Connection, size: int) -> None:
        current = self._size(conn)
        if not 0 <= size <= current:
            raise ProofError(f"tree size {size} is beyond the ledger's {current} entries")

    @staticmethod
    def _read_nodes(conn: sa.Connection, wanted: set[tuple[int, int]]) -> dict[
        tuple[int, int], bytes
    ]:
        found: dict[tuple[int, int], bytes] = {}
        leaves = [index for level, index in wanted if level == 0]
        if leaves:
            e = entries_table.c
            for seq, value in conn.execute(
                sa.select(e.seq, e.leaf_hash).where(e.seq.in_(leaves))
            ):
                found[0, seq] = bytes(value)
        inner = [(level, index) for level, index in wanted if level > 0]
        if inner:
            n = nodes_table.c
            for level, index, value in conn.execute(
                sa.select(n.level, n.idx, n.hash).where(sa.tuple_(n.level, n.idx).in_(inner))
            ):
                found[level, index] = bytes(value)
        missing = wanted - found.keys()
        if missing:
            level, index = min(missing)
            first, last = _entry_range(level, index)
            raise LedgerIntegrityError(
                f"the stored tree lacks the node over entries {first}-{last}; "
                "run 'archiver ledger verify'",
                seq=first,
            )
        return found

    def _with_nodes(self, conn: sa.Connection, compute: Callable[[merkle.NodeReader], T]) -> T:
        nodes = self._read_nodes(conn, merkle.nodes_needed(compute))
        return compute(lambda level, index: nodes[level, index])

    def _root(self, conn: sa.Connection, size: int) -> bytes:
        return self._with_nodes(conn, lambda r: merkle.root_hash(size, r))

    def _prove(
        self, size: int, compute: Callable[[merkle.NodeReader], list[bytes]]
    ) -> list[bytes]:
        def run(conn: sa.Connection) -> list[bytes]:
            self._check_size(conn, size)
            return self._with_nodes(conn, compute)

        return self._in_transaction(None, run, "cannot read the ledger")


class _Verification:
    """One pass over entries, stored nodes and checkpoints, each in tree order."""

    def __init__(
        self, conn: sa.Connection, keys: Mapping[str, PublicKey], origin: str | None, *,
        legacy: bool = False,
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.chain = KeyChain(origin, keys)
        self.legacy = legacy  # accept the unsigned tail before entry signing (upgrade)
        self.tree = merkle.TreeBuilder()
        self.checkpoints = 0
        self.last_good_size = 0  # the size of the newest checkpoint that matched
        self.latest_size: int | None = None

    def _stream(self, query: sa.Select[Any]) -> Iterator[Any]:
        result = self.conn.execute(query, execution_options={"yield_per": _STREAM_ROWS})
        self._open.append(result)
        return iter(result)

    def run(self) -> LedgerReport:
        self._open: list[sa.CursorResult[Any]] = []
        try:
            return self._run()
        finally:
            # Server-side cursors (PostgreSQL) must be closed even when a check failed.
            for result in self._open:
                result.close()

    def _run(self) -> LedgerReport:
        size = Ledger._size(self.conn)
        covered = Ledger._newest_checkpoint_size(self.conn)
        e, n, c = entries_table.c, nodes_table.c, checkpoints_table.c
        end_position = (n.idx + 1).op("<<")(n.level)
        entries = self._stream(sa.select(entries_table).where(e.seq < size).order_by(e.seq))
        nodes = self._stream(
            sa.select(n.level, n.idx, n.hash)
            .where(end_position <= size)
            .order_by(end_position, n.level)
        )
        checkpoints = self._stream(
            sa.select(checkpoints_table).order_by(c.tree_size, c.id)
        )
        pending_node = next(nodes, None)
        pending_checkpoint = next(checkpoints, None)
        pending_checkpoint = self._checkpoints_at(0, pending_checkpoint, checkpoints)
        for expected, row in enumerate(entries):
            if row.seq != expected:
                raise LedgerIntegrityError(
                    f"entry {expected} is missing: the ledger jumps from entry {expected - 1} "
                    f"to entry {row.seq} (a row was deleted)",
                    seq=expected,
                )
            entry, leaf = _checked_leaf(row)
            self.chain.check(entry, leaf, covered=expected < covered, predating=self.legacy)
            completed = self.tree.add(leaf)
            pending_checkpoint = self._checkpoints_at(expected + 1, pending_checkpoint,
                                                      checkpoints)
            for level, index, value in completed[1:]:
                pending_node = self._compare_node(level, index, value, pending_node, nodes)
        if pending_node is not None:
            first, last = _entry_range(pending_node.level, pending_node.idx)
            raise LedgerIntegrityError(
                f"the stored tree has a node over entries {first}-{last} that no entries "
                "produce (entries were removed)",
                seq=first,
            )
        if pending_checkpoint is not None:
            raise LedgerIntegrityError(
                f"entries from {size} on are missing: signed checkpoint "
                f"#{pending_checkpoint.id} covers {pending_checkpoint.tree_size} entries, "
                f"the ledger holds {size}",
                seq=size,
            )
        return LedgerReport(size, self.checkpoints, self.tree.root(), self.latest_size,
                            self.chain.legacy)

    def _compare_node(
        self, level: int, index: int, value: bytes, stored: Any, nodes: Iterator[Any]
    ) -> Any:
        first, last = _entry_range(level, index)
        if stored is None or (stored.level, stored.idx) != (level, index):
            if stored is not None and _tree_order(stored.level, stored.idx) < _tree_order(
                level, index
            ):
                s_first, s_last = _entry_range(stored.level, stored.idx)
                raise LedgerIntegrityError(
                    f"the stored tree has a node over entries {s_first}-{s_last} that the "
                    "entries do not produce",
                    seq=s_first,
                )
            raise LedgerIntegrityError(
                f"the stored tree lacks the node over entries {first}-{last}", seq=first
            )
        if bytes(stored.hash) != value:
            raise LedgerIntegrityError(
                f"entries {first}-{last} do not match the tree stored when they were "
                f"appended: entry {first} or one after it up to {last} was altered, "
                "inserted or removed",
                seq=first,
            )
        return next(nodes, None)

    def _checkpoints_at(self, size: int, pending: Any, checkpoints: Iterator[Any]) -> Any:
        while pending is not None and pending.tree_size == size:
            self._check_checkpoint(pending, size)
            pending = next(checkpoints, None)
        return pending

    def _check_checkpoint(self, row: Any, size: int) -> None:
        key = self.keys.get(row.key_id) or self.chain.keys.get(row.key_id)
        if key is None:
            raise LedgerIntegrityError(
                f"checkpoint #{row.id} (size {size}) is signed by key {row.key_id[:16]}…, "
                "which is not in the archive's key history"
            )
        try:
            head = verify_note(row.note, row.origin, key)
        except VerificationError as exc:
            raise LedgerIntegrityError(f"checkpoint #{row.id} (size {size}): {exc}") from exc
        if head.size != row.tree_size or head.root_hash != bytes(row.root_hash):
            raise LedgerIntegrityError(
                f"checkpoint #{row.id}: its stored size or root differ from its signed note"
            )
        if head.root_hash != self.tree.root():
            first = self.last_good_size
            which = (
                f"entry {first}" if size - first == 1
                else f"an entry between {first} and {size - 1}"
            )
            raise LedgerIntegrityError(
                f"{which} was altered, inserted or removed: the entries no longer give "
                f"the root signed in checkpoint #{row.id} (tree size {size})",
                seq=first,
            )
        self.checkpoints += 1
        self.last_good_size = size
        self.latest_size = size


__all__ = [
    "ENTRY_SIGNATURE_CONTEXT",
    "KEY_ACTIONS",
    "Checkpoint",
    "KeyChain",
    "KeySource",
    "Ledger",
    "LedgerEntry",
    "LedgerReport",
    "append_only_trigger_ddl",
    "checkpoints_table",
    "entries_table",
    "entry_signed_text",
    "metadata",
    "nodes_table",
    "registered_key",
]

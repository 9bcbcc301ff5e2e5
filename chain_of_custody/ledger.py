"""The custody ledger: an append-only list of events, an RFC 9162 Merkle tree over them,
and signed checkpoints of that tree.

Tables (created by the application's migrations; their SQLAlchemy description is here)::

    ledger_entries      seq, time, actor, action, subject, payload (RFC 8785 JSON), leaf_hash
    ledger_nodes        (level, idx) → hash of each perfect subtree, level >= 1
    ledger_checkpoints  signed tree heads (C2SP signed notes)

An entry's *leaf* is the RFC 8785 canonical JSON of ``{seq, time, actor, action, subject,
payload}``, so the position of an entry is part of what is hashed: moving, inserting or
removing an entry changes the leaves after it. Level 0 of the tree is the ``leaf_hash``
column; interior nodes are written once, when their last leaf is appended, so roots and
proofs of any tree size need O(log n) rows (see :mod:`chain_of_custody.merkle`).

Threat model notes:

* Appends are serialised: on PostgreSQL by a transaction-scoped advisory lock taken
  before the head is read; on SQLite by the database write lock, which the engine must
  take when the transaction begins (``BEGIN IMMEDIATE``; the application's engine does).
  The primary key on ``seq`` is the last line of defence: two writers can never both
  get the same position, one of them fails instead.
* The database refuses UPDATE, DELETE and TRUNCATE on the three tables (triggers, see
  :func:`append_only_trigger_ddl`); the application never issues them.
* Someone with direct database access can drop the triggers. :meth:`Ledger.verify`
  therefore trusts nothing stored: it recomputes every leaf from its row, rebuilds the
  tree, compares every stored node and every signed checkpoint, and names the first
  entry that does not fit. Entries appended after the newest checkpoint are covered by
  no signature; the report says how many there are.
"""

from __future__ import annotations

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
    """One event on the ledger. ``payload`` is JSON data (treat it as read-only)."""

    seq: int
    time: str
    actor: str
    action: str
    subject: str
    payload: Mapping[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "payload": dict(self.payload),
        }

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

    @property
    def unsigned_entries(self) -> int:
        """Entries after the newest checkpoint: no signature covers them yet."""
        return self.entries - (self.latest_checkpoint_size or 0)


def _entry_from_row(row: Any) -> LedgerEntry:
    payload = json.loads(row.payload)
    if not isinstance(payload, dict):
        raise ValueError("payload is not a JSON object")
    return LedgerEntry(row.seq, row.time, row.actor, row.action, row.subject, payload)


def _checkpoint_from_row(row: Any) -> Checkpoint:
    return Checkpoint(
        row.id, row.tree_size, bytes(row.root_hash), row.origin, row.key_id, row.note,
        row.created,
    )


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
    """

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.engine = engine
        self.clock = clock

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

        Raises ``ValueError`` if the payload is not JSON data RFC 8785 can represent,
        :class:`LedgerError` if the database refuses the write.
        """
        for name, value in (("actor", actor), ("action", action), ("subject", subject)):
            if not value:
                raise ValueError(f"a ledger entry needs a non-empty {name}")
        try:
            payload_text = rfc8785.dumps(dict(payload)).decode("utf-8")
        except (TypeError, rfc8785.CanonicalizationError) as exc:
            raise ValueError(f"ledger payload is not canonical JSON data: {exc}") from exc
        return self._in_transaction(
            connection,
            lambda conn: self._append(conn, actor, action, subject, payload_text),
            "cannot append to the ledger",
        )

    def _append(
        self, conn: sa.Connection, actor: str, action: str, subject: str, payload_text: str
    ) -> LedgerEntry:
        self._lock(conn)
        seq = self._size(conn)
        entry = LedgerEntry(seq, rfc3339(self.clock()), actor, action, subject,
                            json.loads(payload_text))
        leaf = entry.leaf_hash()
        conn.execute(
            sa.insert(entries_table).values(
                seq=seq, time=entry.time, actor=actor, action=action, subject=subject,
                payload=payload_text, leaf_hash=leaf,
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
        return entry

    def create_checkpoint(
        self, key: SigningKey, origin: str, *, connection: sa.Connection | None = None
    ) -> Checkpoint:
        """Sign the current head as a C2SP checkpoint and store it."""

        def run(conn: sa.Connection) -> Checkpoint:
            self._lock(conn)
            size = self._size(conn)
            root = self._root(conn, size)
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
    ) -> Iterator[LedgerEntry]:
        """Entries in ``seq`` order, optionally of one ``subject`` or some ``actions``.

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

    def verify(self, keys: Iterable[PublicKey]) -> LedgerReport:
        """Recompute the whole ledger from its rows and check it against itself.

        Streams entries, stored nodes and checkpoints together, in O(log n) memory.
        Raises :class:`LedgerIntegrityError` naming the first entry that was altered,
        removed or inserted (or the checkpoint at fault), :class:`LedgerError` when the
        database cannot be read.
        """
        by_id = {key.key_id: key for key in keys}
        try:
            with self.engine.connect() as conn:
                return _Verification(conn, by_id).run()
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"cannot read the ledger: {exc}") from exc

    # -- internals ----------------------------------------------------------------------

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

    def __init__(self, conn: sa.Connection, keys: Mapping[str, PublicKey]) -> None:
        self.conn = conn
        self.keys = keys
        self.tree = merkle.TreeBuilder()
        self.checkpoints = 0
        self.last_good_size = 0  # the size of the newest checkpoint that matched
        self.latest_size: int | None = None

    def _stream(self, query: sa.Select[Any]) -> Iterator[Any]:
        result = self.conn.execution_options(yield_per=_STREAM_ROWS).execute(query)
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
            completed = self.tree.add(self._leaf(row))
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
        return LedgerReport(size, self.checkpoints, self.tree.root(), self.latest_size)

    def _leaf(self, row: Any) -> bytes:
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
        return leaf

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
        key = self.keys.get(row.key_id)
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
    "Checkpoint",
    "Ledger",
    "LedgerEntry",
    "LedgerReport",
    "append_only_trigger_ddl",
    "checkpoints_table",
    "entries_table",
    "metadata",
    "nodes_table",
]

"""The archive's own tables (captures, artifacts, cases, key history, metadata).

The ledger's tables live in ``chain_of_custody.ledger``; both sets are created by the
Alembic migrations in ``archiver/migrations``. Times are stored as RFC 3339 text so that
what we show is byte-for-byte what went into manifests and ledger entries.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

archive_meta = sa.Table(
    "archive_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("public_pem", sa.Text, nullable=False),
    sa.Column("created", sa.Text, nullable=False),
    sa.Column("retired", sa.Text, nullable=True),
)

cases = sa.Table(
    "cases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("created", sa.Text, nullable=False),
)

captures = sa.Table(
    "captures",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=True, index=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("requested_via", sa.String(16), nullable=False),
    sa.Column("requested_at", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("started", sa.Text, nullable=True),
    sa.Column("ended", sa.Text, nullable=True),
    sa.Column("final_url", sa.Text, nullable=True),
    sa.Column("http_status", sa.Integer, nullable=True),
    sa.Column("manifest_sha256", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("ledger_seq", sa.BigInteger, nullable=True),
    sa.Column("outcomes", sa.Text, nullable=True),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("capture_id", sa.String(36), sa.ForeignKey("captures.id"), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("media_type", sa.String(100), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("sha512", sa.String(128), nullable=False),
)

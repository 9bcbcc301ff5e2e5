"""Exports asked for through the HTTP API: one row per bundle a person asked for.

``exports``: the case and (optionally) the captures asked for, who asked and through
what (``context``: token or session id, client address, as JSON), the state
(``queued``, ``running``, ``done``, ``failed``), the bundle's digest and size once it is
in the blob store, the ``bundle.exported`` ledger entry, or why it failed. ``worker``
and ``lease_until`` say which server process holds a queued or running export, and
until when: a server renews its leases while it lives, so an export whose lease ran out
was left by a server that died, and is marked failed. Bookkeeping: the ledger holds the
evidence (``export.requested``, ``bundle.exported``, ``export.failed``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
        sa.Column("capture_ids", sa.Text, nullable=True),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=True),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started", sa.Text, nullable=True),
        sa.Column("finished", sa.Text, nullable=True),
        sa.Column("worker", sa.String(160), nullable=True),
        sa.Column("lease_until", sa.Text, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("file_name", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("ledger_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_exports_case_created", "exports", ["case_id", "created", "id"])
    op.create_index("ix_exports_state", "exports", ["state"])


def downgrade() -> None:
    op.drop_table("exports")

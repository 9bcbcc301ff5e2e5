"""Fixity audits: each audit run, and when each capture was last audited.

``fixity_audits``: one row per run of ``archiver audit`` (kind ``manual``) or of the
daemon's scheduled audit (``scheduled``), with its counts as JSON (the same counts are on
the ledger as ``fixity.checked``).
``fixity_captures``: when each capture was last audited and whether it was found whole,
so a sampled audit takes the captures audited longest ago first. Both are bookkeeping:
the ledger holds the evidence of every audit, failure and repair.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fixity_audits",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started", sa.Text, nullable=False),
        sa.Column("finished", sa.Text, nullable=True),
        sa.Column("ok", sa.Boolean, nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("ledger_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_fixity_audits_kind_started", "fixity_audits", ["kind", "started"])
    op.create_table(
        "fixity_captures",
        sa.Column("capture_id", sa.String(36), sa.ForeignKey("captures.id"), primary_key=True),
        sa.Column("audited_at", sa.Text, nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("audit_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_fixity_captures_audited_at", "fixity_captures", ["audited_at"])


def downgrade() -> None:
    op.drop_table("fixity_captures")
    op.drop_table("fixity_audits")

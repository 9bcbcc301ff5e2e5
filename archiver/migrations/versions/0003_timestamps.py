"""Trusted timestamps: RFC 3161 tokens of ledger checkpoints (insert-only).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from chain_of_custody.ledger import append_only_trigger_ddl
from chain_of_custody.timestamp import TOKENS_TABLE

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        TOKENS_TABLE,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # No foreign key to ledger_checkpoints: checkpoints are never deleted (triggers), and
        # on PostgreSQL a reference would answer TRUNCATE with a foreign-key error before the
        # append-only trigger could refuse it by name.
        sa.Column("checkpoint_id", sa.Integer, nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("tsa_url", sa.Text, nullable=False),
        sa.Column("data_sha256", sa.String(64), nullable=False),
        sa.Column("gen_time", sa.Text, nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("ca_pem", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
    )
    op.create_index(f"ix_{TOKENS_TABLE}_checkpoint_id", TOKENS_TABLE, ["checkpoint_id"])
    for statement in append_only_trigger_ddl(op.get_bind().dialect.name, (TOKENS_TABLE,)):
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("timestamp tokens, like the ledger, are never dropped")

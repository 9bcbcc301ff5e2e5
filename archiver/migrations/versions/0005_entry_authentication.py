"""Ledger entry authentication: each entry names the key that signed it and carries the
signature (issue 10, item 10).

Entries written before this revision keep both columns NULL: they are accepted where a
signed checkpoint covers them, and ``archiver init`` checkpoints the tail that no
checkpoint covered yet when it upgrades (see ``chain_of_custody.ledger``). Adding
nullable columns rewrites no row, so the append-only triggers are not involved.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("ledger_entries", sa.Column("signed_by", sa.Text, nullable=True))
    op.add_column("ledger_entries", sa.Column("signature", sa.LargeBinary(64), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the custody ledger is never narrowed by a migration")

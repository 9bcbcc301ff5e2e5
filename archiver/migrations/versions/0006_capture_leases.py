"""Capture leases: which process runs which capture in flight.

``capture_leases``: one row per capture between its ``capture.requested`` and its outcome,
naming the process that runs it (host, boot id, PID namespace, pid, the process's start
time in clock ticks after boot), its scratch directory, when the lease was taken and until
when it holds (renewed by the process). A capture whose process is gone or whose lease
ran out is closed with ``capture.interrupted`` by the next command (see
``archiver.capture.leases``). Bookkeeping only: the ledger holds the evidence.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "capture_leases",
        sa.Column("capture_id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("boot_id", sa.String(64), nullable=True),
        sa.Column("pid_namespace", sa.String(64), nullable=True),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("pid_started", sa.BigInteger, nullable=True),
        sa.Column("scratch", sa.Text, nullable=False),
        sa.Column("taken", sa.Text, nullable=False),
        sa.Column("lease_until", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("capture_leases")

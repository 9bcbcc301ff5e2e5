"""Jobs, watches and schedules (the daemon).

Watches and the posts each has seen; capture jobs, their attempts and per-host start
times; the revisit schedule of captured posts; the daemon's processes; and APScheduler's
own job store table (its layout, so the scheduler finds it made).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("url_sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_url", sa.Text, nullable=False),
        sa.Column("pattern", sa.Text, nullable=True),
        sa.Column("case_name", sa.String(200), nullable=True),
        sa.Column("every_seconds", sa.Float, nullable=False),
        sa.Column("anchor", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("changed", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("synced_version", sa.Integer, nullable=True),
        sa.Column("state", sa.Text, nullable=True),
        sa.Column("polls", sa.Integer, nullable=False),
        sa.Column("polls_ok", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_poll_at", sa.Text, nullable=True),
        sa.Column("last_ok_at", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_new_posts", sa.Integer, nullable=True),
        sa.Column("posts_seen", sa.Integer, nullable=False),
    )
    op.create_index(
        "ux_watches_live_url", "watches", ["url_sha256"], unique=True,
        sqlite_where=sa.text("status != 'removed'"),
        postgresql_where=sa.text("status != 'removed'"),
    )
    op.create_table(
        "watch_posts",
        sa.Column("watch_id", sa.Integer, sa.ForeignKey("watches.id"), primary_key=True),
        sa.Column("key_sha256", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("first_seen", sa.Text, nullable=False),
        sa.Column("job_id", big_id, nullable=True),
    )
    op.create_table(
        "jobs",
        sa.Column("id", big_id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("url_sha256", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("not_before", sa.Text, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("case_name", sa.String(200), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("watch_id", sa.Integer, sa.ForeignKey("watches.id"), nullable=True),
        sa.Column("revisit_of", sa.String(36), nullable=True),
        sa.Column("capture_id", sa.String(36), nullable=False, unique=True),
        sa.Column("worker", sa.String(160), nullable=True),
        sa.Column("lease_until", sa.Text, nullable=True),
        sa.Column("started", sa.Text, nullable=True),
        sa.Column("finished", sa.Text, nullable=True),
        sa.Column("result", sa.String(16), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_jobs_url_sha256", "jobs", ["url_sha256"])
    op.create_index("ix_jobs_claim", "jobs", ["state", "priority", "not_before", "id"])
    op.create_index("ix_jobs_state_host", "jobs", ["state", "host"])
    op.create_table(
        "job_attempts",
        sa.Column("job_id", big_id, sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("capture_id", sa.String(36), nullable=False, unique=True),
        sa.Column("worker", sa.String(160), nullable=False),
        sa.Column("started", sa.Text, nullable=False),
        sa.Column("finished", sa.Text, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_table(
        "job_hosts",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("next_start_at", sa.Text, nullable=False),
    )
    op.create_table(
        "revisits",
        sa.Column("capture_id", sa.String(36), sa.ForeignKey("captures.id"), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("watch_id", sa.Integer, sa.ForeignKey("watches.id"), nullable=True),
        sa.Column("case_name", sa.String(200), nullable=True),
        sa.Column("captured_at", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("due_at", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("visits", sa.Integer, nullable=False),
        sa.Column("last_capture_id", sa.String(36), nullable=True),
        sa.Column("last_visit_at", sa.Text, nullable=True),
        sa.Column("gone_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_revisits_due", "revisits", ["state", "due_at"])
    op.create_table(
        "daemon_processes",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.String(160), nullable=True),
        sa.Column("started", sa.Text, nullable=False),
        sa.Column("heartbeat_at", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", big_id, nullable=True),
        sa.Column("scheduler", sa.Boolean, nullable=False),
    )
    # APScheduler 3's SQLAlchemyJobStore layout (it creates the table only if missing).
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])


def downgrade() -> None:
    raise NotImplementedError("archive schema migrations are never reversed")

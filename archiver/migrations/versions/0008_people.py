"""People and access: accounts, per-case roles, API tokens, web sessions, login failures.

``users``: one row per person; ``archive_role`` is ``admin``, ``auditor`` or NULL; the
password is an argon2id hash; the TOTP secret is encrypted under the archive's web
secret (``secrets/web.key``), never stored in clear.
``case_members``: a person's role (``investigator``, ``legal``, ``viewer``) on one case;
``case_id`` 0 is the "unfiled" pseudo-case (captures with no case).
``api_tokens``: the SHA-256 of each token's 32 random bytes (the token itself is shown
once), its scope, optional case limits (JSON list of case ids), expiry and revocation.
``web_sessions``: server-side sessions, keyed by the SHA-256 of the cookie value.
``login_failures``: recent failed logins, per login name and per client address, for
rate limits and lockout (bookkeeping: the ledger holds ``auth.failed``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("login", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("archive_role", sa.String(16), nullable=True),
        sa.Column("totp_secret", sa.Text, nullable=True),
        sa.Column("totp_enrolled", sa.Text, nullable=True),
        sa.Column("totp_last_step", sa.BigInteger, nullable=True),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("password_changed", sa.Text, nullable=False),
        sa.Column("locked_until", sa.Text, nullable=True),
    )
    op.create_table(
        "case_members",
        sa.Column("case_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted", sa.Text, nullable=False),
        sa.Column("granted_by", sa.Text, nullable=False),
    )
    op.create_index("ix_case_members_user", "case_members", ["user_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("case_ids", sa.Text, nullable=True),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("expires", sa.Text, nullable=True),
        sa.Column("revoked", sa.Text, nullable=True),
        sa.Column("last_used", sa.Text, nullable=True),
    )
    op.create_index("ix_api_tokens_user", "api_tokens", ["user_id"])
    op.create_table(
        "web_sessions",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("last_seen", sa.Text, nullable=False),
        sa.Column("mfa_passed", sa.Boolean, nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
    )
    op.create_index("ix_web_sessions_user", "web_sessions", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("at", sa.Text, nullable=False),
    )
    op.create_index("ix_login_failures_login_at", "login_failures", ["login", "at"])
    op.create_index("ix_login_failures_client_at", "login_failures", ["client", "at"])
    # Lists of one case's captures, newest first, page by page (the API's cursor).
    op.create_index("ix_captures_case_requested", "captures", ["case_id", "requested_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_captures_case_requested", "captures")
    op.drop_table("login_failures")
    op.drop_table("web_sessions")
    op.drop_table("api_tokens")
    op.drop_table("case_members")
    op.drop_table("users")

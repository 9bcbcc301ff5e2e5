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

# -- the daemon (migration 0002): watches, jobs, revisits, processes ----------------------
#
# Written by ``archiver.watch.watches``, ``archiver.watch.jobs``, ``archiver.watch.revisit`` and
# ``archiver.watch.daemon``. Times are RFC 3339 text in the one fixed-width UTC form of
# ``archiver.clock.rfc3339``, so comparing them as text compares them as times.
# URLs are unbounded text; where one must be unique or looked up, its SHA-256 is the key.

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: rowid alias

watches = sa.Table(
    "watches",
    metadata,
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
# A URL is watched once per case (migration 0010): that a watch of another case follows
# it is none of this case's business. Unfiled: once per person (``user:<login>``), and
# once for the operator and the service together, as ``archiver.watch.jobs`` groups
# unfiled jobs. NULL never equals NULL in a unique index, hence three partial indexes;
# ``substr`` rather than LIKE, which ignores case on SQLite only.
_LIVE_WATCH = "status != 'removed'"
_BY_PERSON = "substr(created_by, 1, 5) = 'user:'"
_CASE_WATCH = sa.text(f"{_LIVE_WATCH} AND case_name IS NOT NULL")
_PERSON_WATCH = sa.text(f"{_LIVE_WATCH} AND case_name IS NULL AND {_BY_PERSON}")
_OPERATOR_WATCH = sa.text(f"{_LIVE_WATCH} AND case_name IS NULL AND NOT ({_BY_PERSON})")
sa.Index("ux_watches_live_case_url", watches.c.case_name, watches.c.url_sha256, unique=True,
         sqlite_where=_CASE_WATCH, postgresql_where=_CASE_WATCH)
sa.Index("ux_watches_live_person_url", watches.c.created_by, watches.c.url_sha256,
         unique=True, sqlite_where=_PERSON_WATCH, postgresql_where=_PERSON_WATCH)
sa.Index("ux_watches_live_operator_url", watches.c.url_sha256, unique=True,
         sqlite_where=_OPERATOR_WATCH, postgresql_where=_OPERATOR_WATCH)

watch_posts = sa.Table(
    "watch_posts",
    metadata,
    sa.Column("watch_id", sa.Integer, sa.ForeignKey("watches.id"), primary_key=True),
    sa.Column("key_sha256", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("first_seen", sa.Text, nullable=False),
    sa.Column("job_id", _big_id, nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _big_id, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("url_sha256", sa.String(64), nullable=False, index=True),
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
sa.Index("ix_jobs_claim", jobs.c.state, jobs.c.priority, jobs.c.not_before, jobs.c.id)
sa.Index("ix_jobs_state_host", jobs.c.state, jobs.c.host)

job_attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("job_id", _big_id, sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("capture_id", sa.String(36), nullable=False, unique=True),
    sa.Column("worker", sa.String(160), nullable=False),
    sa.Column("started", sa.Text, nullable=False),
    sa.Column("finished", sa.Text, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
)

job_hosts = sa.Table(
    "job_hosts",
    metadata,
    sa.Column("host", sa.String(255), primary_key=True),
    sa.Column("next_start_at", sa.Text, nullable=False),
)

revisits = sa.Table(
    "revisits",
    metadata,
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
sa.Index("ix_revisits_due", revisits.c.state, revisits.c.due_at)

daemon_processes = sa.Table(
    "daemon_processes",
    metadata,
    sa.Column("id", sa.String(160), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("parent_id", sa.String(160), nullable=True),
    sa.Column("started", sa.Text, nullable=False),
    sa.Column("heartbeat_at", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("job_id", _big_id, nullable=True),
    sa.Column("scheduler", sa.Boolean, nullable=False),
)

APSCHEDULER_TABLE = "apscheduler_jobs"
"""APScheduler 3's SQLAlchemy job store table; created by migration 0002 in its layout."""

# -- captures in flight (migration 0006), written by ``archiver.capture.leases`` -------------

capture_leases = sa.Table(
    "capture_leases",
    metadata,
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

# -- people and access (migration 0008), written by ``archiver.people`` ---------------------

UNFILED_CASE_ID = 0
"""``case_members.case_id`` of the "unfiled" pseudo-case: captures with no case."""

users = sa.Table(
    "users",
    metadata,
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

case_members = sa.Table(
    "case_members",
    metadata,
    sa.Column("case_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("granted", sa.Text, nullable=False),
    sa.Column("granted_by", sa.Text, nullable=False),
)
sa.Index("ix_case_members_user", case_members.c.user_id)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
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
sa.Index("ix_api_tokens_user", api_tokens.c.user_id)

web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created", sa.Text, nullable=False),
    sa.Column("last_seen", sa.Text, nullable=False),
    sa.Column("mfa_passed", sa.Boolean, nullable=False),
    sa.Column("client", sa.String(64), nullable=True),
)
sa.Index("ix_web_sessions_user", web_sessions.c.user_id)

login_failures = sa.Table(
    "login_failures",
    metadata,
    sa.Column("id", _big_id, primary_key=True, autoincrement=True),
    sa.Column("login", sa.String(64), nullable=False),
    sa.Column("client", sa.String(64), nullable=False),
    sa.Column("at", sa.Text, nullable=False),
)
sa.Index("ix_login_failures_login_at", login_failures.c.login, login_failures.c.at)
sa.Index("ix_login_failures_client_at", login_failures.c.client, login_failures.c.at)

# Attempts refused by the per-client rate limit, unchecked (migration 0010): at most one
# ``auth.failed`` (reason ``rate-limited``) per client address per minute is appended,
# at ``recorded_at``; ``unrecorded`` counts the refusals since then, which the next such
# entry reports in its ``count``.
rate_limited_clients = sa.Table(
    "rate_limited_clients",
    metadata,
    sa.Column("client", sa.String(64), primary_key=True),
    sa.Column("recorded_at", sa.Text, nullable=False),
    sa.Column("unrecorded", sa.Integer, nullable=False),
)
sa.Index("ix_captures_case_requested", captures.c.case_id, captures.c.requested_at, captures.c.id)

# -- exports asked for through the API (migration 0009), written by ``archiver.export.requests``

exports = sa.Table(
    "exports",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("capture_ids", sa.Text, nullable=True),  # JSON list; NULL: the whole case
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("context", sa.Text, nullable=True),  # JSON object (token/session, client)
    sa.Column("created", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started", sa.Text, nullable=True),
    sa.Column("finished", sa.Text, nullable=True),
    sa.Column("worker", sa.String(160), nullable=True),
    sa.Column("lease_until", sa.Text, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("file_name", sa.String(200), nullable=True),
    sa.Column("error", sa.Text, nullable=True),  # a sentence of ours, never a server path
    sa.Column("ledger_seq", sa.BigInteger, nullable=True),
    sa.Column("reason", sa.String(32), nullable=True),  # why it failed (migration 0010)
)
sa.Index("ix_exports_case_created", exports.c.case_id, exports.c.created, exports.c.id)
sa.Index("ix_exports_state", exports.c.state)

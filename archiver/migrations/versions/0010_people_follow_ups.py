"""Follow-ups of people and the API: watches per case.

``watches``: a URL is watched once per case, no longer once in the whole archive (which
told a member of one case that another case watched a URL). Unfiled watches: once per
person (``user:<login>``), and once for the operator and the service together. Three
partial unique indexes replace ``ux_watches_live_url``.

``exports.reason``: why an export failed, as a stable code; ``exports.error`` becomes a
sentence written by the archive, no longer the exception's text, which could name the
server's paths (the full text goes to the server's log).

``rate_limited_clients``: an address past its rate limit gets at most one ``auth.failed``
(reason ``rate-limited``, with a count) a minute on the ledger, not one per attempt
(which let anyone spraying from many addresses fill the ledger); the table remembers when
the last was appended and how many refusals came since (bookkeeping).

``ix_ledger_entries_actor_seq``: one person's activity (``archiver ledger list --actor``,
``GET /api/users/{login}/activity``, ``GET /api/ledger/entries?actor=``) read in seq
order without scanning the whole ledger. The ledger's tables are append-only (triggers
refuse UPDATE and DELETE); an index changes none of their rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_LIVE = "status != 'removed'"
_BY_PERSON = "substr(created_by, 1, 5) = 'user:'"
_WATCH_INDEXES = (
    ("ux_watches_live_case_url", ["case_name", "url_sha256"],
     f"{_LIVE} AND case_name IS NOT NULL"),
    ("ux_watches_live_person_url", ["created_by", "url_sha256"],
     f"{_LIVE} AND case_name IS NULL AND {_BY_PERSON}"),
    ("ux_watches_live_operator_url", ["url_sha256"],
     f"{_LIVE} AND case_name IS NULL AND NOT ({_BY_PERSON})"),
)


def upgrade() -> None:
    op.drop_index("ux_watches_live_url", "watches")
    for name, columns, where in _WATCH_INDEXES:
        op.create_index(name, "watches", columns, unique=True,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))
    op.add_column("exports", sa.Column("reason", sa.String(32), nullable=True))
    op.create_index("ix_ledger_entries_actor_seq", "ledger_entries", ["actor", "seq"])
    op.create_table(
        "rate_limited_clients",
        sa.Column("client", sa.String(64), primary_key=True),
        sa.Column("recorded_at", sa.Text, nullable=False),
        sa.Column("unrecorded", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("archive schema migrations are never reversed")

"""Perceptual hashes of captured media (PDQ), for ``archiver similar``.

``media_hashes``: one row per hashed image or sampled video frame of a media artifact.
``media_hash_index``: which completed captures have been indexed (with how many hashes),
so captures without media are not read again. Both are an index rebuilt from the signed
manifests (``happened.fetchers.media.items[].pdq``): evidence never lives only here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media_hashes",
        sa.Column("capture_id", sa.String(36), sa.ForeignKey("captures.id"), primary_key=True),
        sa.Column("artifact", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("pdq", sa.String(64), nullable=False),
        sa.Column("quality", sa.Integer, nullable=False),
    )
    op.create_table(
        "media_hash_index",
        sa.Column("capture_id", sa.String(36), sa.ForeignKey("captures.id"), primary_key=True),
        sa.Column("indexed", sa.Text, nullable=False),
        sa.Column("hashes", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("media_hash_index")
    op.drop_table("media_hashes")

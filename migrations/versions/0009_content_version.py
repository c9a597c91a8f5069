"""Each block records the canonical form its content hashes were computed in.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23

Reviewed by hand. ``content_hash`` is SHA-256 over one canonical spelling of an event; a
future change of that spelling (a new field, another number form) must not make the blocks
hashed in the old one unverifiable. Every block so far was hashed in form 1, the default.
Blocks stay append-only: adding a column with a default rewrites nothing a trigger sees.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE blocks ADD COLUMN content_version smallint NOT NULL DEFAULT 1")


def downgrade() -> None:
    op.execute("ALTER TABLE blocks DROP COLUMN content_version")

"""Caches of the bundled renderer: caption rewrites and text-encoder embeddings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

Reviewed by hand. Plain tables, not part of the ledger: the application role may insert
and read them; entries are never updated, a key is written once.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.create_table(
        "caption_cache",
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("rewritten", sa.Text, nullable=False),
        sa.Column("sku_prefix", sa.Text, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "embedding_cache",
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("tensors", sa.LargeBinary, nullable=False),
        sa.Column("miss_seconds", sa.Numeric, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT ON caption_cache, embedding_cache TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("embedding_cache")
    op.drop_table("caption_cache")

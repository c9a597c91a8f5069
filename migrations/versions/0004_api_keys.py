"""API keys: a public id, a SHA-256 of the secret, a tenant (none for admin keys), scopes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22

Reviewed by hand. Secrets are 256-bit random, so a plain SHA-256 is the right hash (a slow
password hash protects guessable secrets; these are not). Keys are revoked, never deleted.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("secret_sha256", sa.LargeBinary, nullable=False),
        sa.Column("tenant_id", sa.Text),
        sa.Column("scopes", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "scopes <@ ARRAY['ingest', 'read', 'admin']::text[] AND cardinality(scopes) > 0",
            name="api_keys_scopes_known",
        ),
        sa.CheckConstraint(
            "tenant_id IS NOT NULL OR 'admin' = ANY(scopes)", name="api_keys_tenant_or_admin"
        ),
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT, UPDATE (revoked_at) ON api_keys TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("api_keys")

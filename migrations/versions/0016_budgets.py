"""Budgets: a tenant's monthly spend limits, as versions (issue 15).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-23

Reviewed by hand. A PUT of a tenant's budgets is a new row holding the whole set; the
latest row per tenant is in force. Settings, not money facts, but kept as history like the
rest (who set what, when): a budget alert names the version it was judged against.
Append-only by trigger.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.create_table(
        "budget_versions",
        sa.Column("version", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column(
            "set_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("budgets", pg.JSONB, nullable=False),
    )
    op.create_index("budget_versions_tenant", "budget_versions", ["tenant_id", "version"])
    op.execute(
        "CREATE TRIGGER budget_versions_append_only BEFORE UPDATE OR DELETE ON budget_versions "
        "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER budget_versions_no_truncate BEFORE TRUNCATE ON budget_versions "
        "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT ON budget_versions TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("budget_versions")

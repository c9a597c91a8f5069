"""Billing: plans by effective month, prepaid credit grants, finalized invoices, credit notes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Reviewed by hand. Plans, grants, invoices and credit notes are history: the same trigger
as the event log refuses UPDATE, DELETE and TRUNCATE, and the application may only read
and insert. A draft invoice is never stored; it is recomputed from the events on request.
A BRIN index on ``occurred_at`` lets a month's invoice read only that month's pages: the
log arrives in time order, and a BRIN index costs an append next to nothing.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
TABLES = ("billing_plans", "credit_grants", "invoices", "credit_notes")


def _now() -> sa.Column[sa.DateTime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "billing_plans",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("effective_from", sa.Date, primary_key=True),
        sa.Column("plan", pg.JSONB, nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False),
        _now(),
        sa.CheckConstraint("extract(day FROM effective_from) = 1", name="plans_start_a_month"),
    )
    op.create_table(
        "credit_grants",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("grant_id", sa.Text, primary_key=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("granted_on", sa.Date, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        _now(),
        sa.CheckConstraint("amount_minor > 0", name="credit_grants_positive"),
    )
    op.create_table(
        "invoices",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("period", sa.Date, primary_key=True),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("through_seq", sa.BigInteger, nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("credits_applied_minor", sa.BigInteger, nullable=False),
        sa.Column("document", pg.JSONB, nullable=False),
        sa.Column("content_sha256", sa.Text, nullable=False),
        _now(),
        sa.UniqueConstraint("tenant_id", "number", name="invoices_number_per_tenant"),
        sa.CheckConstraint("extract(day FROM period) = 1", name="invoices_period_a_month"),
    )
    op.create_table(
        "credit_notes",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("number", sa.Text, primary_key=True),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        _now(),
        sa.ForeignKeyConstraint(["tenant_id", "period"], ["invoices.tenant_id", "invoices.period"]),
        sa.CheckConstraint("amount_minor > 0", name="credit_notes_positive"),
    )
    op.create_index("credit_notes_invoice", "credit_notes", ["tenant_id", "period"])
    op.create_index(
        "cost_events_occurred_brin", "cost_events", ["occurred_at"], postgresql_using="brin"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
        )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT ON {", ".join(TABLES)} TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_index("cost_events_occurred_brin", "cost_events")
    for table in reversed(TABLES):
        op.drop_table(table)

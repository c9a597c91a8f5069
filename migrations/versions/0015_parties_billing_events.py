"""Billing profiles (the customer party, versioned) and the billing event outbox (issue 14).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23

Reviewed by hand. ``billing_profiles`` is history like ``billing_plans``: a version per
tenant and date it takes effect, its content digest beside it, never changed (a new date
supersedes it). An invoice copies the profile it was issued with into its document, so a
later version never changes a sent invoice.

``billing_events`` is the outbox of invoice finalized / credit note issued: written in the
transaction that stores the document, so an event exists exactly when its document does.
``billing_webhook_attempts`` logs each delivery attempt, as ``webhook_attempts`` does for
alerts. All three are append-only by trigger.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
TABLES = ("billing_profiles", "billing_events", "billing_webhook_attempts")


def _now(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "billing_profiles",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("effective_from", sa.Date, primary_key=True),
        sa.Column("profile", pg.JSONB, nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False),
        _now("created_at"),
    )
    op.create_table(
        "billing_events",
        sa.Column("event_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column("number", sa.Text, nullable=False, unique=True),
        _now("at"),
        sa.Column("data", pg.JSONB, nullable=False),
        sa.CheckConstraint(
            "type IN ('invoice.finalized', 'credit_note.issued')", name="billing_events_type"
        ),
    )
    op.create_index("billing_events_at", "billing_events", ["at"])
    op.create_table(
        "billing_webhook_attempts",
        sa.Column("attempt_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "event_id", sa.BigInteger, sa.ForeignKey("billing_events.event_id"), nullable=False
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        _now("at"),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("ms", sa.Float, nullable=False),
    )
    op.create_index("billing_webhook_attempts_event", "billing_webhook_attempts", ["event_id"])
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
        )
    grants = " ".join(f"GRANT SELECT, INSERT ON {t} TO {APP_ROLE};" for t in TABLES)
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                {grants}
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)

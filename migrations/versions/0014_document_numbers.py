"""One gapless number series for final invoices and credit notes (issue 14).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23

Reviewed by hand. Every tenant's October invoice used to be ``RL-2026-10-0001``: numbers
were per tenant. ``document_numbers`` holds the issuer's one series: a number is taken at
finalize (or when a credit note is issued) under one transaction lock, as the highest
committed number plus one, in the same transaction as the document it numbers, so a
rolled-back finalize leaves no gap and two concurrent ones get consecutive numbers in the
order they commit. Append-only, like the documents. Documents numbered before keep theirs.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.create_table(
        "document_numbers",
        sa.Column("series_no", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("number", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("period", sa.Date, nullable=False),
        sa.Column(
            "assigned_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("kind IN ('invoice', 'credit_note')", name="document_numbers_kind"),
        sa.CheckConstraint("series_no > 0", name="document_numbers_positive"),
    )
    op.execute(
        "CREATE TRIGGER document_numbers_append_only BEFORE UPDATE OR DELETE ON document_numbers "
        "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER document_numbers_no_truncate BEFORE TRUNCATE ON document_numbers "
        "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT ON document_numbers TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("document_numbers")

"""The Iceberg catalog of the columnar history, in its own schema (issue 16).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30

Reviewed by hand. pyiceberg's SQL catalog keeps two tables: where each Iceberg table's
current metadata file is (``iceberg_tables``; a commit is one conditional UPDATE of
``metadata_location``, which is what makes an export commit atomic) and namespace
properties. They are created here, in the ``iceberg_catalog`` schema, rather than by
pyiceberg at first use: the application role creates nothing (DDL happens only in reviewed
revisions), and a schema of their own keeps them apart from the ledger's tables (and from
``ledger/tables.py``, which mirrors the default schema only). The columns are pyiceberg's
"v1" catalog schema (with ``iceberg_type``), so pyiceberg runs with
``init_catalog_tables=false`` and never issues DDL itself. The application role may read,
add and update catalog rows (a commit updates its table's row); it may not delete them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
SCHEMA = "iceberg_catalog"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA {SCHEMA}")
    op.create_table(
        "iceberg_tables",
        sa.Column("catalog_name", sa.String(255), primary_key=True),
        sa.Column("table_namespace", sa.String(255), primary_key=True),
        sa.Column("table_name", sa.String(255), primary_key=True),
        sa.Column("metadata_location", sa.String(1000)),
        sa.Column("previous_metadata_location", sa.String(1000)),
        sa.Column("iceberg_type", sa.String(5)),
        schema=SCHEMA,
    )
    op.create_table(
        "iceberg_namespace_properties",
        sa.Column("catalog_name", sa.String(255), primary_key=True),
        sa.Column("namespace", sa.String(255), primary_key=True),
        sa.Column("property_key", sa.String(255), primary_key=True),
        sa.Column("property_value", sa.String(1000), nullable=False),
        schema=SCHEMA,
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT USAGE ON SCHEMA {SCHEMA} TO {APP_ROLE};
                GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {SCHEMA} TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    # The catalog's pointers go; the warehouse's files stay where they are.
    op.execute(f"DROP SCHEMA {SCHEMA} CASCADE")

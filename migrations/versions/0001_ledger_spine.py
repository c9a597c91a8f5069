"""The ledger spine: tenants, price books, the append-only cost_events log and its blocks.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Reviewed by hand. cost_events and blocks refuse UPDATE, DELETE and TRUNCATE by trigger,
and the application role is granted only SELECT and INSERT on them: two walls, so a bug
in the application and a stray grant would both have to happen before history changes.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STAGES = (
    "'text_encoder', 'caption_llm', 'unet', 'vae_decode', 'postprocess', 'storage', "
    "'cdn_egress', 'render'"
)
APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "price_versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "prices",
        sa.Column("version", sa.Integer, sa.ForeignKey("price_versions.version"), primary_key=True),
        sa.Column("sku", sa.Text, primary_key=True),
        sa.Column("unit", sa.Text, nullable=False),
        sa.Column("unit_price_nanos", sa.Numeric, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.CheckConstraint("unit_price_nanos >= 0", name="prices_unit_price_nonnegative"),
    )
    op.create_table(
        "blocks",
        sa.Column("block_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "cost_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("use_case", sa.Text, nullable=False),
        sa.Column("render_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("stage", sa.Text, nullable=False),
        sa.Column("sku", sa.Text, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cache", sa.Text),
        sa.Column("baseline_quantity", sa.Numeric),
        sa.Column("outcome", sa.Text),
        sa.Column("reverses", pg.UUID(as_uuid=True)),
        sa.Column("attributes", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("price_version", sa.Integer, nullable=False),
        sa.Column("unit_price_nanos", sa.Numeric, nullable=False),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
        sa.Column("baseline_cost_nanos", sa.BigInteger),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("block_id", sa.BigInteger, nullable=False),
        sa.CheckConstraint(f"stage IN ({STAGES})", name="stage_known"),
        sa.CheckConstraint("quantity >= 0", name="quantity_nonnegative"),
        sa.CheckConstraint("cache IS NULL OR cache IN ('hit', 'miss')", name="cache_known"),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('delivered', 'failed', 'cancelled')",
            name="outcome_known",
        ),
    )
    # No (tenant_id, occurred_at) index: reads by tenant go through the rollups, and every
    # index on this table is paid on every append (this one cost a third of HTTP throughput).
    op.create_index("cost_events_render", "cost_events", ["render_id"])
    op.create_index(
        "cost_events_reverses_once",
        "cost_events",
        ["reverses"],
        unique=True,
        postgresql_where=sa.text("reverses IS NOT NULL"),
    )

    op.execute(
        """
        CREATE FUNCTION renderledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only: % refused; correct it with a reversal event',
                TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in ("cost_events", "blocks"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
        )

    # Servers where we may not create roles (a managed database) keep the trigger wall only.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                IF (SELECT rolcreaterole OR rolsuper FROM pg_roles
                    WHERE rolname = current_user) THEN
                    CREATE ROLE {APP_ROLE} NOLOGIN;
                END IF;
            END IF;
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT ON cost_events, blocks TO {APP_ROLE};
                GRANT SELECT, INSERT ON tenants, price_versions, prices TO {APP_ROLE};
                GRANT USAGE ON SEQUENCE price_versions_version_seq TO {APP_ROLE};
                -- so the application can tell that its schema is out of date
                GRANT SELECT ON alembic_version TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                REVOKE ALL ON cost_events, blocks, tenants, price_versions, prices FROM {APP_ROLE};
                REVOKE ALL ON SEQUENCE price_versions_version_seq FROM {APP_ROLE};
            END IF;
        END $$
        """
    )
    op.drop_table("cost_events")
    op.drop_table("blocks")
    op.execute("DROP FUNCTION renderledger_refuse_change()")
    op.drop_table("prices")
    op.drop_table("price_versions")
    op.drop_table("tenants")

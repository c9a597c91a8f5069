"""Rollups for reports: one row per render, daily aggregates, job checkpoints; what-if books.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

Reviewed by hand. Rollups are derived data: rebuilt from the ledger at will, so they are
ordinary tables the application role may write, update and empty. Price books gain a kind:
``what_if`` books (a hosted API's per-image price, say) never rate events.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"


def upgrade() -> None:
    op.add_column(
        "price_versions",
        sa.Column("kind", sa.Text, nullable=False, server_default="cost"),
    )
    op.create_check_constraint(
        "price_versions_kind_known", "price_versions", "kind IN ('cost', 'what_if')"
    )
    op.create_table(
        "rollup_checkpoints",
        sa.Column("job", sa.Text, primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_applied", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_table(
        "render_rollup",
        sa.Column("render_id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("use_case", sa.Text, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("outcome", sa.Text),
        sa.Column("latency_ms", sa.Float),
        sa.Column("total_nanos", sa.BigInteger, nullable=False),
        sa.Column("baseline_nanos", sa.BigInteger, nullable=False),
        sa.Column("text_encoder_nanos", sa.BigInteger, nullable=False),
        sa.Column("caption_llm_nanos", sa.BigInteger, nullable=False),
        sa.Column("unet_nanos", sa.BigInteger, nullable=False),
        sa.Column("vae_decode_nanos", sa.BigInteger, nullable=False),
        sa.Column("postprocess_nanos", sa.BigInteger, nullable=False),
        sa.Column("storage_nanos", sa.BigInteger, nullable=False),
        sa.Column("cdn_egress_nanos", sa.BigInteger, nullable=False),
        sa.Column("cache_hits", sa.Integer, nullable=False),
        sa.Column("cache_lookups", sa.Integer, nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("pipeline_version", sa.Text),
        sa.Column("gpu_type", sa.Text),
        sa.Column("precision", sa.Text),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("render_rollup_tenant_day", "render_rollup", ["tenant_id", "day"])
    # The key leads with the tenant: reports read a tenant's days, and one index fewer
    # to maintain is a third off every incremental upsert.
    op.create_table(
        "daily_rollup",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("use_case", sa.Text, primary_key=True),
        sa.Column("stage", sa.Text, primary_key=True),
        sa.Column("sku", sa.Text, primary_key=True),
        # "" for events that carry no outcome, so the key needs no NULL.
        sa.Column("outcome", sa.Text, primary_key=True),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("quantity", sa.Numeric, nullable=False),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
        sa.Column("baseline_nanos", sa.BigInteger, nullable=False),
        sa.Column("cache_hits", sa.BigInteger, nullable=False),
        sa.Column("cache_lookups", sa.BigInteger, nullable=False),
    )
    # Rollup rows are updated in place on every run: room on each page lets PostgreSQL
    # keep the new version beside the old (a HOT update) without touching the indexes.
    for table in ("daily_rollup", "render_rollup"):
        op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE
                    ON rollup_checkpoints, render_rollup, daily_rollup TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("daily_rollup")
    op.drop_table("render_rollup")
    op.drop_table("rollup_checkpoints")
    op.drop_constraint("price_versions_kind_known", "price_versions")
    op.drop_column("price_versions", "kind")

"""Currency in every rollup key; cache lookups per render and stage; stage wall time; FX rates.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23

Reviewed by hand (issue 13). ``daily_rollup`` and ``render_rollup`` gain ``currency`` in
their keys, so no sum of the rollups ever adds two currencies. ``render_rollup`` keeps, per
stage, the signed count of its ``cache = hit`` and ``cache = miss`` events: a lookup is a
render's stage with live cache events, whatever the number of events it was metered in (the
caption LLM emits two), and sums merge exactly across chunks and reversals. The per-event
cache counts of ``daily_rollup`` go (they counted a caption lookup twice); it gains the sum of
the stage events' ``wall_s``. Rollups are derived: emptied here, rebuilt by the next run.

``fx_versions`` / ``fx_rates`` hold exchange rates as loaded, append-only like the log: a
reload is a new version, and a report names the version it used.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
STAGES = (
    "text_encoder",
    "caption_llm",
    "unet",
    "vae_decode",
    "postprocess",
    "storage",
    "cdn_egress",
)
CACHE_COLUMNS = tuple(f"{s}_{kind}" for s in STAGES for kind in ("hits", "misses"))
FX = ("fx_versions", "fx_rates")


def _reindex_function(key: str) -> None:
    """Migration 0007's bulk-load pair, for render_rollup's key ``key``."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION renderledger_render_rollup_reindex() RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        BEGIN
            ALTER TABLE render_rollup ADD CONSTRAINT render_rollup_pkey PRIMARY KEY ({key});
            CREATE INDEX render_rollup_tenant_day ON render_rollup (tenant_id, day);
            CREATE INDEX render_rollup_rendered_at ON render_rollup (rendered_at);
        END $$
        """
    )


def upgrade() -> None:
    op.execute("TRUNCATE render_rollup, daily_rollup")
    op.execute("DELETE FROM rollup_checkpoints")
    op.execute("ALTER TABLE daily_rollup DROP CONSTRAINT daily_rollup_pkey")
    op.add_column("daily_rollup", sa.Column("currency", sa.String(3), nullable=False))
    op.add_column("daily_rollup", sa.Column("wall_s", sa.Numeric, nullable=False))
    op.drop_column("daily_rollup", "cache_hits")
    op.drop_column("daily_rollup", "cache_lookups")
    op.create_primary_key(
        "daily_rollup_pkey",
        "daily_rollup",
        ["tenant_id", "day", "use_case", "stage", "sku", "outcome", "currency"],
    )
    op.execute("ALTER TABLE render_rollup DROP CONSTRAINT render_rollup_pkey")
    op.add_column("render_rollup", sa.Column("currency", sa.String(3), nullable=False))
    for column in CACHE_COLUMNS:
        op.add_column("render_rollup", sa.Column(column, sa.Integer, nullable=False))
    op.create_primary_key("render_rollup_pkey", "render_rollup", ["render_id", "currency"])
    _reindex_function("render_id, currency")

    op.create_table(
        "fx_versions",
        sa.Column("version", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("base", sa.String(3), nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False, unique=True),
        sa.Column("rates", sa.Integer, nullable=False),
        sa.Column(
            "loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "fx_rates",
        sa.Column("version", sa.Integer, sa.ForeignKey("fx_versions.version"), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("rate", sa.Numeric, nullable=False),
        sa.CheckConstraint("rate > 0", name="fx_rates_positive"),
    )
    for table in FX:
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
                GRANT SELECT, INSERT ON {", ".join(FX)} TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    for table in reversed(FX):
        op.drop_table(table)
    op.execute("TRUNCATE render_rollup, daily_rollup")
    op.execute("DELETE FROM rollup_checkpoints")
    op.execute("ALTER TABLE render_rollup DROP CONSTRAINT render_rollup_pkey")
    for column in CACHE_COLUMNS:
        op.drop_column("render_rollup", column)
    op.drop_column("render_rollup", "currency")
    op.create_primary_key("render_rollup_pkey", "render_rollup", ["render_id"])
    _reindex_function("render_id")
    op.execute("ALTER TABLE daily_rollup DROP CONSTRAINT daily_rollup_pkey")
    op.drop_column("daily_rollup", "wall_s")
    op.drop_column("daily_rollup", "currency")
    op.add_column("daily_rollup", sa.Column("cache_hits", sa.BigInteger, nullable=False))
    op.add_column("daily_rollup", sa.Column("cache_lookups", sa.BigInteger, nullable=False))
    op.create_primary_key(
        "daily_rollup_pkey",
        "daily_rollup",
        ["tenant_id", "day", "use_case", "stage", "sku", "outcome"],
    )

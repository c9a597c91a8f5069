"""Alerts: when each render happened, hourly unit-cost series, the alert log, webhook attempts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Reviewed by hand. ``render_rollup`` gains ``rendered_at`` (the render event's time), which
the detector reads by range. Rollups are derived data, so rather than backfill the column
in SQL this revision empties them and resets the checkpoint: the next rollup run rebuilds
them from the log. ``alert_hourly`` is derived too (recomputed for recent hours on every
run). ``alert_events`` and ``webhook_attempts`` are history: append-only by trigger.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0006"
down_revision = "0005"
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


def _now(name: str = "at") -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.execute("TRUNCATE render_rollup, daily_rollup")
    op.execute("DELETE FROM rollup_checkpoints")
    op.add_column(
        "render_rollup", sa.Column("rendered_at", sa.DateTime(timezone=True), nullable=False)
    )
    op.create_index("render_rollup_rendered_at", "render_rollup", ["rendered_at"])
    op.create_table(
        "alert_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("use_case", sa.Text, primary_key=True),
        sa.Column("delivered", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("delivered_nanos", sa.BigInteger, nullable=False),
        *(sa.Column(f"{s}_nanos", sa.BigInteger, nullable=False) for s in STAGES),
        sa.Column("waste_nanos", sa.BigInteger, nullable=False),
        sa.Column("cache_hits", sa.BigInteger, nullable=False),
        sa.Column("cache_lookups", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alert_events",
        sa.Column("event_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("alert_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("use_case", sa.Text, nullable=False),
        sa.Column("signal", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        _now(),
        sa.Column("actor", sa.Text, nullable=False, server_default="detector"),
        sa.Column("detail", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.CheckConstraint(
            "kind IN ('opened', 'acknowledged', 'resolved')", name="alert_events_kind_known"
        ),
    )
    op.create_index("alert_events_alert", "alert_events", ["alert_id"])
    op.create_index("alert_events_tenant", "alert_events", ["tenant_id", "event_id"])
    op.create_table(
        "webhook_attempts",
        sa.Column("attempt_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "event_id", sa.BigInteger, sa.ForeignKey("alert_events.event_id"), nullable=False
        ),
        sa.Column("attempt", sa.Integer, nullable=False),
        _now(),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("ms", sa.Float, nullable=False),
    )
    op.create_index("webhook_attempts_event", "webhook_attempts", ["event_id"])
    for table in ("alert_events", "webhook_attempts"):
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
                GRANT SELECT, INSERT, UPDATE, DELETE ON alert_hourly TO {APP_ROLE};
                GRANT SELECT, INSERT ON alert_events, webhook_attempts TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("alert_events")
    op.drop_table("alert_hourly")
    op.drop_index("render_rollup_rendered_at", "render_rollup")
    op.drop_column("render_rollup", "rendered_at")

"""Capacity and overheads: pool definitions, the actual-cost log, hourly usage, allocations.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23

Reviewed by hand. What a platform *pays* (GPU capacity held, training runs, storage,
minimums) is recorded in ``actual_costs``, an append-only log beside the event log: its rows
belong to a pool or an overhead account rather than to a render, and are priced by the pool
definition in force rather than by the price book. ``allocations`` is append-only too: a late
event re-allocates its hour by new delta rows, never by an update, and each row names the log
positions it was computed through. ``usage_hourly`` and ``pool_hourly`` are derived (rebuilt
at will) and so ordinary tables.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
APPEND_ONLY = ("pool_versions", "actual_costs", "allocations")
DERIVED = ("usage_hourly", "pool_hourly", "allocation_checkpoints")


def _now(name: str = "created_at") -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "pool_versions",
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("effective_from", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("definition", pg.JSONB, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_sha256", sa.Text, nullable=False),
        _now(),
    )
    op.create_table(
        "actual_costs",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", pg.UUID(as_uuid=True), nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("pool", sa.Text),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("allocate_by", sa.Text, nullable=False),
        sa.Column("shares", pg.JSONB),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gpus", sa.Numeric),
        sa.Column("cost_nanos", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        _now("recorded_at"),
        sa.CheckConstraint("ends_at > starts_at", name="actual_costs_period_positive"),
        sa.CheckConstraint("kind IN ('capacity', 'overhead')", name="actual_costs_kind_known"),
        sa.CheckConstraint(
            "allocate_by IN ('pool', 'direct', 'renders', 'gpu_seconds', 'fixed', 'keep')",
            name="actual_costs_allocate_by_known",
        ),
        sa.CheckConstraint("cost_nanos >= 0", name="actual_costs_cost_nonnegative"),
        sa.CheckConstraint(
            "(kind = 'capacity') = (pool IS NOT NULL AND gpus IS NOT NULL)",
            name="actual_costs_capacity_has_pool",
        ),
    )
    op.create_index("actual_costs_period", "actual_costs", ["starts_at", "ends_at"])
    op.create_table(
        "allocations",
        sa.Column("alloc_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.BigInteger, nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("use_case", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_nanos", sa.Numeric, nullable=False),
        sa.Column("through_seq", sa.BigInteger, nullable=False),
        sa.Column("through_actual_seq", sa.BigInteger, nullable=False),
        _now(),
        sa.CheckConstraint("kind IN ('idle', 'overhead')", name="allocations_kind_known"),
    )
    op.create_index("allocations_tenant_hour", "allocations", ["tenant_id", "hour"])
    op.create_index("allocations_hour", "allocations", ["hour"])
    op.create_table(
        "usage_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("use_case", sa.Text, primary_key=True),
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("model", sa.Text, primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("busy_seconds", sa.Numeric, nullable=False),
        sa.Column("standard_nanos", sa.Numeric, nullable=False),
        sa.Column("cost_nanos", sa.Numeric, nullable=False),
        sa.Column("renders", sa.BigInteger, nullable=False),
    )
    op.create_index("usage_hourly_tenant", "usage_hourly", ["tenant_id", "hour"])
    op.create_table(
        "pool_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("held_seconds", sa.Numeric, nullable=False),
        sa.Column("paid_nanos", sa.Numeric, nullable=False),
        sa.Column("busy_seconds", sa.Numeric, nullable=False),
        sa.Column("standard_nanos", sa.Numeric, nullable=False),
    )
    op.create_table(
        "allocation_checkpoints",
        sa.Column("job", sa.Text, primary_key=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("last_actual_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    for table in APPEND_ONLY:
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
                GRANT SELECT, INSERT ON {", ".join(APPEND_ONLY)} TO {APP_ROLE};
                GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {", ".join(DERIVED)}
                    TO {APP_ROLE};
            END IF;
        END $$
        """
    )


def downgrade() -> None:
    for table in (*DERIVED, *APPEND_ONLY):
        op.drop_table(table)

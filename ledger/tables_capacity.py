"""Capacity's tables: pools, actual costs and their allocation; on
``ledger.tables.metadata`` (``ledger.schema`` gathers every table)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from ledger.tables import metadata

# Capacity and overheads (migration 0010): what was paid, and where it was allocated.
pool_versions = Table(
    "pool_versions",
    metadata,
    Column("pool", Text, primary_key=True),
    Column("effective_from", DateTime(timezone=True), primary_key=True),
    Column("definition", JSONB, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

actual_costs = Table(
    "actual_costs",
    metadata,
    Column("seq", BigInteger, Identity(), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("pool", Text),
    Column("account", Text, nullable=False),
    Column("allocate_by", Text, nullable=False),
    Column("shares", JSONB),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("gpus", Numeric),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("source", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("content_hash", LargeBinary, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("ends_at > starts_at", name="actual_costs_period_positive"),
    CheckConstraint("kind IN ('capacity', 'overhead')", name="actual_costs_kind_known"),
    CheckConstraint(
        "allocate_by IN ('pool', 'direct', 'renders', 'gpu_seconds', 'fixed', 'keep')",
        name="actual_costs_allocate_by_known",
    ),
    CheckConstraint("cost_nanos >= 0", name="actual_costs_cost_nonnegative"),
    CheckConstraint(
        "(kind = 'capacity') = (pool IS NOT NULL AND gpus IS NOT NULL)",
        name="actual_costs_capacity_has_pool",
    ),
    Index("actual_costs_period", "starts_at", "ends_at"),
)

allocations = Table(
    "allocations",
    metadata,
    Column("alloc_id", BigInteger, Identity(), primary_key=True),
    Column("run_id", BigInteger, nullable=False),
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("source", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("use_case", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount_nanos", Numeric, nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("through_actual_seq", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('idle', 'overhead')", name="allocations_kind_known"),
    # Covering: the fully-loaded report reads a tenant's month by index only (0012).
    Index(
        "allocations_tenant_hour",
        "tenant_id",
        "hour",
        postgresql_include=["use_case", "currency", "kind", "amount_nanos"],
    ),
    Index("allocations_hour_source", "hour", "source"),
)

allocation_digests = Table(
    "allocation_digests",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("source", Text, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("digest", Numeric, nullable=False),
)

usage_hourly = Table(
    "usage_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("tenant_id", Text, primary_key=True),
    Column("use_case", Text, primary_key=True),
    Column("pool", Text, primary_key=True),
    Column("model", Text, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("busy_seconds", Numeric, nullable=False),
    Column("standard_nanos", Numeric, nullable=False),
    Column("cost_nanos", Numeric, nullable=False),
    Column("renders", BigInteger, nullable=False),
    Index(
        "usage_hourly_tenant",
        "tenant_id",
        "hour",
        postgresql_include=["use_case", "currency", "renders", "cost_nanos"],
    ),
)

pool_hourly = Table(
    "pool_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("pool", Text, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("held_seconds", Numeric, nullable=False),
    Column("paid_nanos", Numeric, nullable=False),
    Column("busy_seconds", Numeric, nullable=False),
    Column("standard_nanos", Numeric, nullable=False),
)

allocation_checkpoints = Table(
    "allocation_checkpoints",
    metadata,
    Column("job", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("last_actual_seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

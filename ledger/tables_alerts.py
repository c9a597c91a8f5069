"""The alerts' tables: hourly unit-cost series, the alert log and webhook deliveries; on
``ledger.tables.metadata`` (``ledger.schema`` gathers every table)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from ledger.tables import STAGE_COLUMNS, metadata

# Alerts: hourly unit-cost series (derived, recomputed for recent hours) and the alert log.
# A series is per currency (migration 0013): its sums never add two.
alert_hourly = Table(
    "alert_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("tenant_id", Text, primary_key=True),
    Column("use_case", Text, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("delivered", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("delivered_nanos", Numeric, nullable=False),
    *(Column(column, Numeric, nullable=False) for column in STAGE_COLUMNS.values()),
    Column("waste_nanos", Numeric, nullable=False),
    Column("cache_hits", BigInteger, nullable=False),
    Column("cache_lookups", BigInteger, nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("event_id", BigInteger, Identity(), primary_key=True),
    Column("alert_id", UUID(as_uuid=True), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("use_case", Text, nullable=False),
    Column("signal", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("currency", String(3)),  # of the alert's series; NULL before 0013 and for pools
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", Text, nullable=False, server_default="detector"),
    Column("detail", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint(
        "kind IN ('opened', 'acknowledged', 'resolved')", name="alert_events_kind_known"
    ),
    Index("alert_events_alert", "alert_id"),
    Index("alert_events_tenant", "tenant_id", "event_id"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("attempt_id", BigInteger, Identity(), primary_key=True),
    Column("event_id", BigInteger, ForeignKey("alert_events.event_id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("url", Text, nullable=False),
    Column("status", Integer),
    Column("error", Text),
    Column("ms", Float, nullable=False),
    Index("webhook_attempts_event", "event_id"),
)

"""Billing's tables: plans, credits, invoices, credit notes, profiles, their events and
budgets; on ``ledger.tables.metadata`` (``ledger.schema`` gathers every table)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

from ledger.tables import metadata

# Billing history: append-only like the log (migration 0005 adds the same triggers).
billing_plans = Table(
    "billing_plans",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("effective_from", Date, primary_key=True),
    Column("plan", JSONB, nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("extract(day FROM effective_from) = 1", name="plans_start_a_month"),
)

credit_grants = Table(
    "credit_grants",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("grant_id", Text, primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("granted_on", Date, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount_minor > 0", name="credit_grants_positive"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("period", Date, primary_key=True),
    Column("number", Text, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("through_seq", BigInteger, nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("credits_applied_minor", BigInteger, nullable=False),
    Column("document", JSONB, nullable=False),
    Column("content_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("tenant_id", "number", name="invoices_number_per_tenant"),
    CheckConstraint("extract(day FROM period) = 1", name="invoices_period_a_month"),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("number", Text, primary_key=True),
    Column("period", Date, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(["tenant_id", "period"], ["invoices.tenant_id", "invoices.period"]),
    CheckConstraint("amount_minor > 0", name="credit_notes_positive"),
    Index("credit_notes_invoice", "tenant_id", "period"),
)


# One gapless number series for final invoices and credit notes (migration 0014).
document_numbers = Table(
    "document_numbers",
    metadata,
    Column("series_no", BigInteger, primary_key=True, autoincrement=False),
    Column("number", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("period", Date, nullable=False),
    Column("assigned_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('invoice', 'credit_note')", name="document_numbers_kind"),
    CheckConstraint("series_no > 0", name="document_numbers_positive"),
)


# The customer party, versioned by the date it takes effect (migration 0015).
billing_profiles = Table(
    "billing_profiles",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("effective_from", Date, primary_key=True),
    Column("profile", JSONB, nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The outbox of invoice finalized / credit note issued, and its delivery log (migration 0015).
billing_events = Table(
    "billing_events",
    metadata,
    Column("event_id", BigInteger, Identity(), primary_key=True),
    Column("type", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("period", Date, nullable=False),
    Column("number", Text, nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("data", JSONB, nullable=False),
    CheckConstraint(
        "type IN ('invoice.finalized', 'credit_note.issued')", name="billing_events_type"
    ),
    Index("billing_events_at", "at"),
)

billing_webhook_attempts = Table(
    "billing_webhook_attempts",
    metadata,
    Column("attempt_id", BigInteger, Identity(), primary_key=True),
    Column("event_id", BigInteger, ForeignKey("billing_events.event_id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("url", Text, nullable=False),
    Column("status", Integer),
    Column("error", Text),
    Column("ms", Float, nullable=False),
    Index("billing_webhook_attempts_event", "event_id"),
)

# A tenant's monthly budgets, a version per change (migration 0016).
budget_versions = Table(
    "budget_versions",
    metadata,
    Column("version", BigInteger, Identity(), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("set_by", Text, nullable=False),
    Column("budgets", JSONB, nullable=False),
    Index("budget_versions_tenant", "tenant_id", "version"),
)

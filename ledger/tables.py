"""The schema as SQLAlchemy Core tables; the Alembic revisions are written to match it."""

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
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from ledger.events import Stage

metadata = MetaData()

# Every stage but ``render`` (the render's own event) has a cost column of its own in the
# per-render and hourly rollups; the names are made here once, and readers take them from here.
STAGE_COLUMNS: dict[str, str] = {
    stage.value: f"{stage.value}_nanos" for stage in Stage if stage is not Stage.RENDER
}
# Per render and stage, the signed counts of its cache hit and miss events (rollups.py).
STAGE_CACHE_COLUMNS: dict[str, tuple[str, str]] = {
    stage: (f"{stage}_hits", f"{stage}_misses") for stage in STAGE_COLUMNS
}

tenants = Table(
    "tenants",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

price_versions = Table(
    "price_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("effective_from", DateTime(timezone=True), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("source_sha256", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # "what_if" books price reports for comparison and never rate events.
    Column("kind", Text, nullable=False, server_default="cost"),
    CheckConstraint("kind IN ('cost', 'what_if')", name="price_versions_kind_known"),
)

prices = Table(
    "prices",
    metadata,
    Column("version", Integer, ForeignKey("price_versions.version"), primary_key=True),
    Column("sku", Text, primary_key=True),
    Column("unit", Text, nullable=False),
    Column("unit_price_nanos", Numeric, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    CheckConstraint("unit_price_nanos >= 0", name="prices_unit_price_nonnegative"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("block_id", BigInteger, primary_key=True, autoincrement=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The canonical form of its rows' content hashes (ledger.events.CONTENT_VERSION).
    Column("content_version", SmallInteger, nullable=False, server_default=text("1")),
)

cost_events = Table(
    "cost_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("use_case", Text, nullable=False),
    Column("render_id", UUID(as_uuid=True), nullable=False),
    Column("stage", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("cache", Text),
    Column("baseline_quantity", Numeric),
    Column("outcome", Text),
    Column("reverses", UUID(as_uuid=True)),
    Column("attributes", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("price_version", Integer, nullable=False),
    Column("unit_price_nanos", Numeric, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("baseline_cost_nanos", BigInteger),
    Column("currency", String(3), nullable=False),
    Column("content_hash", LargeBinary, nullable=False),
    Column("block_id", BigInteger, nullable=False),
    CheckConstraint(
        "stage IN (" + ", ".join(f"'{s.value}'" for s in Stage) + ")", name="stage_known"
    ),
    CheckConstraint("quantity >= 0", name="quantity_nonnegative"),
    CheckConstraint("cache IS NULL OR cache IN ('hit', 'miss')", name="cache_known"),
    CheckConstraint(
        "outcome IS NULL OR outcome IN ('delivered', 'failed', 'cancelled')", name="outcome_known"
    ),
    # Partitioned by RANGE (seq) (migration 0018): keys are event_keys', which gives their seq.
    Index("cost_events_render", "render_id"),
    Index(
        "cost_events_reverses",
        "tenant_id",
        "reverses",
        postgresql_where=text("reverses IS NOT NULL"),
    ),
    Index("cost_events_occurred_brin", "occurred_at", postgresql_using="brin"),
    postgresql_partition_by="RANGE (seq)",
)

# Every event's idempotency key, kept after its partition is pruned (migration 0018).
event_keys = Table(
    "event_keys",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("content_hash", LargeBinary, nullable=False),
    Column("block_id", BigInteger, nullable=False),
    Column("reverses", UUID(as_uuid=True)),
    Column("seq", BigInteger, nullable=False),
    Index(
        "event_keys_reverses_once",
        "tenant_id",
        "reverses",
        unique=True,
        postgresql_where=text("reverses IS NOT NULL"),
    ),
)

# Seq ranges dropped from PostgreSQL by `archive prune`: verify reads them from the archive.
log_pruned = Table(
    "log_pruned",
    metadata,
    Column("first_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("partition_name", Text, nullable=False),
    Column("archive_snapshot_id", BigInteger, nullable=False),
    Column("pruned_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Each render's owner, the tenant and use case of its first event, written by the append.
render_owners = Table(
    "render_owners",
    metadata,
    Column("render_id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("use_case", Text, nullable=False),
)

# Summaries of export commits whose Iceberg snapshots `archive prune` expired (issue 16).
archive_commits = Table(
    "archive_commits",
    metadata,
    Column("snapshot_id", BigInteger, primary_key=True, autoincrement=False),
    Column("committed_ms", BigInteger, nullable=False),
    Column("first_seq", BigInteger, nullable=False, unique=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("first_block", BigInteger, nullable=False),
    Column("last_block", BigInteger, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("last_hash", LargeBinary, nullable=False),
    Column("blocks_sha256", LargeBinary, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("records", BigInteger, nullable=False),
)

# The wall time of each pruned event a kept reversal cancels (the rollup's SQL reads it).
pruned_walls = Table(
    "pruned_walls",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("event_id", UUID(as_uuid=True), primary_key=True),
    Column("wall", JSONB),
)

# The seqs of each render's events in each pruned range (migration 0020): a render trace
# reads from the archive only the files that hold them.
pruned_renders = Table(
    "pruned_renders",
    metadata,
    Column("render_id", UUID(as_uuid=True), primary_key=True),
    Column("first_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("seqs", ARRAY(BigInteger), nullable=False),
)

# The pruned ranges whose renders are in pruned_renders (those pruned before 0020 are not).
pruned_renders_recorded = Table(
    "pruned_renders_recorded",
    metadata,
    Column("first_seq", BigInteger, primary_key=True, autoincrement=False),
)

# Caches the renderer keeps in PostgreSQL. Unlike the ledger they are ordinary tables: an
# entry is written once per key and read many times, and losing one costs only a miss.
caption_cache = Table(
    "caption_cache",
    metadata,
    Column("key", LargeBinary, primary_key=True),
    Column("prompt", Text, nullable=False),
    Column("rewritten", Text, nullable=False),
    Column("sku_prefix", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

embedding_cache = Table(
    "embedding_cache",
    metadata,
    Column("key", LargeBinary, primary_key=True),
    Column("model_id", Text, nullable=False),
    Column("tensors", LargeBinary, nullable=False),
    Column("miss_seconds", Numeric, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Rollups (reports/): derived from the log, rebuilt at will, so ordinary tables.
rollup_checkpoints = Table(
    "rollup_checkpoints",
    metadata,
    Column("job", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("events_applied", BigInteger, nullable=False, server_default="0"),
)

render_rollup = Table(
    "render_rollup",
    metadata,
    Column("render_id", UUID(as_uuid=True), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("use_case", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("rendered_at", DateTime(timezone=True), nullable=False),
    Column("outcome", Text),
    Column("latency_ms", Float),
    # Sums of costs are NUMERIC: 64 bits hold one event's cost, not every sum of them.
    Column("total_nanos", Numeric, nullable=False),
    Column("baseline_nanos", Numeric, nullable=False),
    *(Column(column, Numeric, nullable=False) for column in STAGE_COLUMNS.values()),
    # Render-stages looked up in a cache, and found there (from the columns below).
    Column("cache_hits", Integer, nullable=False),
    Column("cache_lookups", Integer, nullable=False),
    *(Column(c, Integer, nullable=False) for pair in STAGE_CACHE_COLUMNS.values() for c in pair),
    Column("model", Text),
    Column("pipeline_version", Text),
    Column("gpu_type", Text),
    Column("precision", Text),
    Column("last_seq", BigInteger, nullable=False),
    Index("render_rollup_rendered_at", "rendered_at"),
    Index("render_rollup_tenant_day", "tenant_id", "day"),
)

daily_rollup = Table(
    "daily_rollup",
    metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("use_case", Text, primary_key=True),
    Column("stage", Text, primary_key=True),
    Column("sku", Text, primary_key=True),
    Column("outcome", Text, primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("events", BigInteger, nullable=False),
    Column("quantity", Numeric, nullable=False),
    Column("cost_nanos", Numeric, nullable=False),
    Column("baseline_nanos", Numeric, nullable=False),
    Column("wall_s", Numeric, nullable=False),  # the stage events' wall_s, summed
)

# Exchange rates as loaded (ledger/fx.py): append-only like the log (migration 0011).
fx_versions = Table(
    "fx_versions",
    metadata,
    Column("version", Integer, Identity(), primary_key=True),
    Column("name", Text, nullable=False),
    Column("base", String(3), nullable=False),
    Column("source_sha256", Text, nullable=False, unique=True),
    Column("rates", Integer, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

fx_rates = Table(
    "fx_rates",
    metadata,
    Column("version", Integer, ForeignKey("fx_versions.version"), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("rate", Numeric, nullable=False),
    CheckConstraint("rate > 0", name="fx_rates_positive"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("secret_sha256", LargeBinary, nullable=False),
    Column("tenant_id", Text),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint(
        "scopes <@ ARRAY['ingest', 'read', 'admin']::text[] AND cardinality(scopes) > 0",
        name="api_keys_scopes_known",
    ),
    CheckConstraint(
        "tenant_id IS NOT NULL OR 'admin' = ANY(scopes)", name="api_keys_tenant_or_admin"
    ),
)


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

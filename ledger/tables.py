"""The ledger's own tables as SQLAlchemy Core: the log and its keys, prices, caches, rollups,
fx and API keys. Billing, alerts and capacity have modules of their own; ``ledger.schema``
holds them all. The Alembic revisions are written to match."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
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

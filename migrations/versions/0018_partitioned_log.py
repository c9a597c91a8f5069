"""The log partitioned by seq range; idempotency keys in a table of their own (issue 16).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01

Reviewed by hand. ``cost_events`` becomes a table partitioned by RANGE on ``seq``: blocks,
the chain, the archive's commits and ``verify`` all speak in seq ranges, so a partition is
"fully archived" when the archive's last seq reaches its upper bound, and ``archive prune``
can detach it without reading a row. Existing rows are copied into the new table (the old
one refuses UPDATE, DELETE and TRUNCATE; it is dropped whole once its rows are across).

A partitioned table cannot have a unique index that leaves out the partition key, so the
idempotency key ``(tenant_id, event_id)`` and "reversed at most once" move to ``event_keys``:
one narrow row per event, written by the append in the same transaction, and never pruned,
so a resend of an event whose partition is long gone is still found (DESIGN.md). It also
carries each event's ``seq``: reads by key go through it to the log's primary key, so the
log needs no second b-tree of random keys on every append. Likewise
``render_owners`` holds each render's owner (the tenant and use case of its first event),
written by the append for each new render: the check that a render stays its first
tenant's reads it alone, instead of probing every partition's render index.

``cost_events_default`` catches appends past the last range partition, so an append never
fails for want of one; ``archive prune`` (the owner role) creates the next partitions ahead
of the head. The application role has SELECT and INSERT on the parent only: it reads and
writes through it, never a partition directly, and creates nothing.

``log_pruned`` records each seq range dropped from PostgreSQL (verify judges it from the
archive alone); ``pruned_walls`` keeps the ``wall_s`` of pruned events that a kept reversal
cancels, which the rollup's SQL reads when the event itself is gone. ``archive_commits``
keeps the summaries (seq range, blocks, hashes) of Iceberg snapshots that prune expired, so
``verify`` still judges every commit. All are append-only.
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

APP_ROLE = "renderledger_app"
PARTITION_EVENTS = 5_000_000
INDEXES = (
    "CREATE INDEX cost_events_render ON cost_events (render_id)",
    "CREATE INDEX cost_events_reverses ON cost_events (tenant_id, reverses) "
    "WHERE reverses IS NOT NULL",
    "CREATE INDEX cost_events_occurred_brin ON cost_events USING brin (occurred_at)",
)


def _append_only(table: str, *, rows: bool = True) -> None:
    if rows:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION renderledger_refuse_change()"
        )
    # Statement triggers are not cloned to partitions: each partition gets its own.
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
    )


def _grant(statement: str) -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                {statement};
            END IF;
        END $$
        """
    )


def upgrade() -> None:
    bind = op.get_bind()
    op.execute("LOCK TABLE cost_events IN ACCESS EXCLUSIVE MODE")
    head = bind.exec_driver_sql("SELECT coalesce(max(seq), 0) FROM cost_events").scalar() or 0
    op.execute("ALTER TABLE cost_events RENAME TO cost_events_unpartitioned")
    op.execute("ALTER INDEX cost_events_pkey RENAME TO cost_events_unpartitioned_pkey")
    for index in (
        "cost_events_render",
        "cost_events_tenant_event",
        "cost_events_reverses_once",
        "cost_events_occurred_brin",
    ):
        op.execute(f"DROP INDEX {index}")
    op.execute(
        "CREATE TABLE cost_events (LIKE cost_events_unpartitioned INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS) PARTITION BY RANGE (seq)"
    )
    op.execute("ALTER TABLE cost_events ADD CONSTRAINT cost_events_pkey PRIMARY KEY (seq)")
    # Row triggers on the parent are cloned to every partition, present and future.
    _append_only("cost_events")
    lo = 1
    while lo <= head + 1:
        name = f"cost_events_p{lo}"
        op.execute(
            f"CREATE TABLE {name} PARTITION OF cost_events "
            f"FOR VALUES FROM ({lo}) TO ({lo + PARTITION_EVENTS})"
        )
        _append_only(name, rows=False)
        lo += PARTITION_EVENTS
    op.execute("CREATE TABLE cost_events_default PARTITION OF cost_events DEFAULT")
    _append_only("cost_events_default", rows=False)
    op.execute("INSERT INTO cost_events SELECT * FROM cost_events_unpartitioned")
    for index in INDEXES:
        op.execute(index)

    op.execute(
        """
        CREATE TABLE event_keys (
            tenant_id text NOT NULL,
            event_id uuid NOT NULL,
            content_hash bytea NOT NULL,
            block_id bigint NOT NULL,
            reverses uuid,
            seq bigint NOT NULL,
            CONSTRAINT event_keys_tenant_event PRIMARY KEY (tenant_id, event_id)
        )
        """
    )
    op.execute(
        "INSERT INTO event_keys (tenant_id, event_id, content_hash, block_id, reverses, seq) "
        "SELECT tenant_id, event_id, content_hash, block_id, reverses, seq FROM cost_events "
        "ORDER BY tenant_id, event_id"
    )
    op.execute(
        "CREATE UNIQUE INDEX event_keys_reverses_once ON event_keys (tenant_id, reverses) "
        "WHERE reverses IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE log_pruned (
            first_seq bigint PRIMARY KEY,
            last_seq bigint NOT NULL,
            partition_name text NOT NULL,
            archive_snapshot_id bigint NOT NULL,
            pruned_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE pruned_walls (
            tenant_id text NOT NULL,
            event_id uuid NOT NULL,
            wall jsonb,
            PRIMARY KEY (tenant_id, event_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE render_owners (
            render_id uuid PRIMARY KEY,
            tenant_id text NOT NULL,
            use_case text NOT NULL
        )
        """
    )
    op.execute(
        "INSERT INTO render_owners SELECT DISTINCT ON (render_id) render_id, tenant_id, "
        "use_case FROM cost_events ORDER BY render_id, seq"
    )
    op.execute(
        """
        CREATE TABLE archive_commits (
            snapshot_id bigint PRIMARY KEY,
            committed_ms bigint NOT NULL,
            first_seq bigint NOT NULL UNIQUE,
            last_seq bigint NOT NULL,
            first_block bigint NOT NULL,
            last_block bigint NOT NULL,
            prev_hash bytea NOT NULL,
            last_hash bytea NOT NULL,
            blocks_sha256 bytea NOT NULL,
            events bigint NOT NULL,
            records bigint NOT NULL
        )
        """
    )
    for table in ("event_keys", "log_pruned", "pruned_walls", "render_owners", "archive_commits"):
        _append_only(table)
    op.execute("DROP TABLE cost_events_unpartitioned")
    _grant(
        f"GRANT SELECT, INSERT ON cost_events, event_keys, render_owners TO {APP_ROLE}; "
        f"GRANT SELECT ON log_pruned, pruned_walls, archive_commits TO {APP_ROLE}"
    )


def downgrade() -> None:
    pruned = op.get_bind().exec_driver_sql("SELECT count(*) FROM log_pruned").scalar()
    if pruned:
        raise RuntimeError("partitions were pruned: the unpartitioned log would miss them")
    op.execute("LOCK TABLE cost_events IN ACCESS EXCLUSIVE MODE")
    op.execute(
        "CREATE TABLE cost_events_unpartitioned (LIKE cost_events INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS)"
    )
    op.execute("INSERT INTO cost_events_unpartitioned SELECT * FROM cost_events ORDER BY seq")
    op.execute("DROP TABLE cost_events")  # its partitions, indexes and triggers with it
    op.execute("ALTER TABLE cost_events_unpartitioned RENAME TO cost_events")
    op.execute("ALTER TABLE cost_events ADD CONSTRAINT cost_events_pkey PRIMARY KEY (seq)")
    op.execute("CREATE INDEX cost_events_render ON cost_events (render_id)")
    op.execute("CREATE UNIQUE INDEX cost_events_tenant_event ON cost_events (tenant_id, event_id)")
    op.execute(
        "CREATE UNIQUE INDEX cost_events_reverses_once ON cost_events (tenant_id, reverses) "
        "WHERE reverses IS NOT NULL"
    )
    op.execute("CREATE INDEX cost_events_occurred_brin ON cost_events USING brin (occurred_at)")
    _append_only("cost_events")
    op.execute("DROP TABLE archive_commits, render_owners, pruned_walls, log_pruned, event_keys")
    _grant(f"GRANT SELECT, INSERT ON cost_events TO {APP_ROLE}")

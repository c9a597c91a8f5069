"""How the rollup job writes: merging partials into the stored rows, and its checkpoint.

Shared by the incremental run (``reports.jobs``) and the rebuild (``reports.rollup_rebuild``):
both fold partials into ``daily_rollup`` and ``render_rollup`` with the same merge rules, and
both move the one checkpoint in the transaction that wrote the rows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import psycopg

from ledger.tables import STAGE_CACHE_COLUMNS
from reports.rollups import (
    DAILY_KEYS,
    DAILY_SUMS,
    FIRSTS,
    RENDER_KEYS,
    SUMS,
    combine,
    daily,
    found,
    looked_up,
    render_partials,
)
from reports.source import copy_in

JOB = "rollup"


@dataclass(frozen=True)
class RollupResult:
    ran: bool
    events: int = 0
    chunks: int = 0
    last_seq: int = 0
    seconds: float = 0.0
    # Seconds by phase. A rebuild: waiting for rows, aggregating them, COPY (in a thread of
    # its own, overlapping the two), waiting for that writer at the end, then building the
    # indexes and merging late rows. An incremental run: reading, each table, the commit.
    phases: dict[str, float] = field(default_factory=dict)


def checkpoint(raw: psycopg.Connection[Any]) -> int:
    row = raw.execute("SELECT last_seq FROM rollup_checkpoints WHERE job = %s", (JOB,)).fetchone()
    return int(row[0]) if row else 0


def upsert(
    raw: psycopg.Connection[Any],
    table: str,
    frame: pl.DataFrame,
    keys: list[str],
    assign: dict[str, str],
    order: Sequence[str] = (),
) -> None:
    """COPY into a temp table, then one INSERT … ON CONFLICT merging old (``t``) and new
    (``EXCLUDED``) rows column by column, inserted in ``order`` (else the keys')."""
    staging = f"staging_{table}"
    raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS")
    copy_in(raw, staging, frame)
    cols = ", ".join(frame.columns)
    updates = ", ".join(f"{c} = {assign[c]}" for c in frame.columns if c not in keys)
    raw.execute(
        # In key order, index lookups walk the B-tree instead of jumping about it; new rows
        # go to the end of the table in this order.
        f"INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {staging} "
        f"ORDER BY {', '.join(order or keys)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )
    raw.execute(f"TRUNCATE {staging}")


# Merging a stored render row (t, earlier events) with a new partial (EXCLUDED, later ones):
# the same rules as ``rollups.combine``, in SQL, so no stored row is read back into Python.
RENDER_MERGE = {
    **{c: f"t.{c} + EXCLUDED.{c}" for c in SUMS},
    **{c: f"coalesce(t.{c}, EXCLUDED.{c})" for c in (*FIRSTS, "tenant_id", "use_case")},
    "day": "CASE WHEN t.outcome IS NOT NULL THEN t.day WHEN EXCLUDED.outcome IS NOT NULL "
    "THEN EXCLUDED.day ELSE least(t.day, EXCLUDED.day) END",
    "rendered_at": "CASE WHEN t.outcome IS NOT NULL THEN t.rendered_at WHEN EXCLUDED.outcome "
    "IS NOT NULL THEN EXCLUDED.rendered_at ELSE least(t.rendered_at, EXCLUDED.rendered_at) END",
    "last_seq": "greatest(t.last_seq, EXCLUDED.last_seq)",
    # Derived again from the merged per-stage counts, never added: a lookup seen in two
    # chunks is still one lookup.
    **{
        name: " + ".join(
            f"({flag(f't.{h} + EXCLUDED.{h}', f't.{m} + EXCLUDED.{m}')})::int"
            for h, m in STAGE_CACHE_COLUMNS.values()
        )
        for name, flag in (("cache_hits", found), ("cache_lookups", looked_up))
    },
}
DAILY_MERGE = {c: f"t.{c} + EXCLUDED.{c}" for c in DAILY_SUMS}
RENDER_ORDER = ("tenant_id", "day", *RENDER_KEYS)


def apply_chunk(
    raw: psycopg.Connection[Any], events: pl.DataFrame, phases: dict[str, float] | None = None
) -> None:
    """Fold one slice of the log into the rollups; every merge is additive or first-wins.
    ``phases`` gains the seconds spent on each table."""
    seconds = phases if phases is not None else {}
    clock = time.perf_counter()
    lazy = events.lazy()
    upsert(raw, "daily_rollup", daily(lazy).collect(), DAILY_KEYS, DAILY_MERGE)
    now = time.perf_counter()
    seconds["daily"] = seconds.get("daily", 0.0) + now - clock
    renders = combine(render_partials(lazy)).collect()
    # New renders are appended in (tenant, day) order, as a rebuild writes them: a run's
    # renders of one tenant share pages instead of each taking one (render ids are random).
    upsert(raw, "render_rollup", renders, RENDER_KEYS, RENDER_MERGE, RENDER_ORDER)
    seconds["renders"] = seconds.get("renders", 0.0) + time.perf_counter() - now


def save_checkpoint(
    raw: psycopg.Connection[Any], last_seq: int, applied: int, *, reset: bool = False
) -> None:
    total = (
        "EXCLUDED.events_applied"
        if reset
        else ("rollup_checkpoints.events_applied + EXCLUDED.events_applied")
    )
    raw.execute(
        "INSERT INTO rollup_checkpoints (job, last_seq, updated_at, events_applied) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (job) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
        f"updated_at = EXCLUDED.updated_at, events_applied = {total}",
        (JOB, last_seq, datetime.now(UTC), applied),
    )

"""The allocation job: fold new usage into hours, then re-allocate every hour it touched.

Each run reads the log and the actual-cost log past its checkpoint, adds the new usage to
``usage_hourly``, and recomputes the hours that either touched: ``pool_hourly`` (derived, so
replaced) and the allocations those hours *should* have. What is stored is append-only, so
the run writes only the difference between that and the net of the rows already there: a
late event re-allocates its hour by new rows, and a run that changes nothing writes none.
Everything happens in one transaction with the checkpoint, so a crash repeats a run whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import Engine

from ledger import locks
from ledger.capacity import FULL_REQUESTED, read_pools
from ledger.connections import job_lock
from ledger.journal import KEYS, LOG
from ledger.journal import head as ledger_head
from reports.allocation import ALLOCATION_KEYS, I128, hourly_parts, overhead_shares, pool_variance
from reports.allocation_inputs import fixed_shares, hourly_pools, idle_policies, month_pieces
from reports.allocation_store import append_difference
from reports.source import copy_in, copy_out
from reports.tracing import traced

JOB = "allocation"
_GPU = "sku LIKE 'gpu.%'"
# Usage past the checkpoint, aggregated into its hours. A reversal lands where the event it
# reverses did (its hour, pool and model), so taking back GPU time frees the pool-hour it
# was used in, not another tenant's. Labels are cut to 200 characters, so a key always fits
# its index (ingest allows no longer, but rows from before it typed them).
_FOLD = f"""
CREATE TEMP TABLE fold ON COMMIT DROP AS
SELECT date_trunc('hour', at, 'UTC') AS hour, tenant_id, use_case,
       coalesce(left(attributes->>'pool', 200), '') AS pool,
       coalesce(left(attributes->>'model', 200), '') AS model, currency,
       sum(CASE WHEN {_GPU} THEN sign * quantity ELSE 0 END) AS busy_seconds,
       sum(CASE WHEN {_GPU} THEN cost_nanos ELSE 0 END) AS standard_nanos,
       sum(cost_nanos) AS cost_nanos,
       sum(CASE WHEN stage = 'render' AND outcome = 'delivered' THEN sign ELSE 0 END)
           AS renders
FROM (
    SELECT occurred_at AS at, tenant_id, use_case, attributes, sku, stage, outcome,
           quantity, cost_nanos, currency, 1 AS sign
    FROM {LOG} WHERE seq > {{lo}} AND seq <= {{hi}} AND reverses IS NULL
    UNION ALL
    SELECT coalesce(o.occurred_at, e.occurred_at), e.tenant_id, e.use_case,
           coalesce(o.attributes, e.attributes), e.sku, e.stage, e.outcome, e.quantity,
           e.cost_nanos, e.currency, -1
    FROM {LOG} e
    LEFT JOIN {KEYS} k ON k.tenant_id = e.tenant_id AND k.event_id = e.reverses
    LEFT JOIN {LOG} o ON o.seq = k.seq
    WHERE e.seq > {{lo}} AND e.seq <= {{hi}} AND e.reverses IS NOT NULL
) AS usage
GROUP BY 1, 2, 3, 4, 5, 6
"""
_KEYS = "hour, tenant_id, use_case, pool, model, currency"
_ADD = f"""
INSERT INTO usage_hourly AS t ({_KEYS}, busy_seconds, standard_nanos, cost_nanos, renders)
SELECT * FROM fold ORDER BY {_KEYS}
ON CONFLICT ({_KEYS}) DO UPDATE SET
    busy_seconds = t.busy_seconds + EXCLUDED.busy_seconds,
    standard_nanos = t.standard_nanos + EXCLUDED.standard_nanos,
    cost_nanos = t.cost_nanos + EXCLUDED.cost_nanos,
    renders = t.renders + EXCLUDED.renders
"""
_USAGE_SCHEMA: dict[str, Any] = {
    "hour": pl.Datetime("us", "UTC"),
    "tenant_id": pl.String,
    "use_case": pl.String,
    "pool": pl.String,
    "model": pl.String,
    "currency": pl.String,
    "busy_seconds": pl.Float64,
    "busy_us": I128,  # exact, so a group's weight does not depend on the order of its rows
    "standard_nanos": I128,
    "renders": pl.Int64,
}
_SPAN_SCHEMA: dict[str, Any] = {
    "seq": pl.Int64,
    "kind": pl.String,
    "pool": pl.String,
    "account": pl.String,
    "allocate_by": pl.String,
    "starts_at": pl.Datetime("us", "UTC"),
    "ends_at": pl.Datetime("us", "UTC"),
    "gpus": pl.Float64,
    "cost_nanos": I128,
    "currency": pl.String,
}


@dataclass(frozen=True)
class AllocationResult:
    ran: bool
    events: int = 0
    actual_costs: int = 0
    hours: int = 0
    rows_written: int = 0
    seconds: float = 0.0


def _hours_literal(hours: list[datetime]) -> str:
    return "ARRAY[" + ", ".join(f"'{h.isoformat()}'" for h in hours) + "]::timestamptz[]"


@traced("allocation")
def run_allocation(engine: Engine, *, full: bool = False) -> AllocationResult:
    """Bring allocations up to both logs' heads; ``ran=False`` if another process runs it.

    ``full`` rebuilds the hourly usage from the whole log and re-allocates every hour; a new
    pool version asks for it (``capacity.FULL_REQUESTED``), since usage already allocated
    may name the pool."""
    started = time.perf_counter()
    with job_lock(engine, locks.ALLOCATION) as raw:
        if raw is None:
            return AllocationResult(False)
        with raw.transaction():
            asked = raw.execute(
                "DELETE FROM allocation_checkpoints WHERE job = %s RETURNING 1", (FULL_REQUESTED,)
            ).fetchone()
            full = full or asked is not None
            lo, actual_lo = (0, 0) if full else _checkpoint(raw)
            if full:  # digests too: a full run compares every group with what is stored
                raw.execute("TRUNCATE usage_hourly, pool_hourly, allocation_digests")
            hi = ledger_head(raw)
            row = raw.execute("SELECT coalesce(max(seq), 0) FROM actual_costs").fetchone()
            actual_hi = int(row[0]) if row else 0
            hours = _fold(raw, lo, hi)
            for starts, ends in raw.execute(
                "SELECT starts_at, ends_at FROM actual_costs WHERE seq > %s AND seq <= %s",
                (actual_lo, actual_hi),
            ):
                hours.update(_hours(starts, ends))
            ordered = sorted(hours)
            written = allocate_hours(raw, ordered, hi, actual_hi) if ordered else 0
            raw.execute(
                "INSERT INTO allocation_checkpoints (job, last_seq, last_actual_seq, updated_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (job) DO UPDATE SET "
                "last_seq = EXCLUDED.last_seq, last_actual_seq = EXCLUDED.last_actual_seq, "
                "updated_at = EXCLUDED.updated_at",
                (JOB, hi, actual_hi, datetime.now(UTC)),
            )
    return AllocationResult(
        True, hi - lo, actual_hi - actual_lo, len(ordered), written, time.perf_counter() - started
    )


def _fold(raw: psycopg.Connection[Any], lo: int, hi: int) -> set[datetime]:
    """Add the usage of positions (lo, hi] to ``usage_hourly``; the hours it touched."""
    if hi <= lo:
        return set()
    # The aggregate of a rebuild spills to disk at the default 4 MB (measured: 9 batches).
    raw.execute("SET LOCAL work_mem = '256MB'")
    raw.execute(_FOLD.format(lo=int(lo), hi=int(hi)))
    raw.execute(_ADD)
    return {r[0] for r in raw.execute("SELECT DISTINCT hour FROM fold")}


def _checkpoint(raw: psycopg.Connection[Any]) -> tuple[int, int]:
    row = raw.execute(
        "SELECT last_seq, last_actual_seq FROM allocation_checkpoints WHERE job = %s", (JOB,)
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _hours(starts: datetime, ends: datetime) -> list[datetime]:
    h = starts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out = []
    while h < ends:
        out.append(h)
        h += timedelta(hours=1)
    return out


def allocate_hours(
    raw: psycopg.Connection[Any], hours: list[datetime], through_seq: int, through_actual: int
) -> int:
    """Recompute ``hours`` and append the difference; the number of rows written."""
    in_hours = f"hour = ANY({_hours_literal(hours)})"
    usage = copy_out(
        raw,
        "SELECT hour, tenant_id, use_case, pool, model, currency, busy_seconds, "
        "floor(busy_seconds * 1000000) AS busy_us, standard_nanos, renders "
        f"FROM usage_hourly WHERE {in_hours}",
        _USAGE_SCHEMA,
    ).lazy()
    lo, hi = hours[0], hours[-1] + timedelta(hours=1)
    spans = copy_out(
        raw,
        "SELECT seq, kind, pool, account, allocate_by, starts_at, ends_at, "
        "coalesce(gpus, 0) AS gpus, cost_nanos, currency FROM actual_costs "
        f"WHERE starts_at < '{hi.isoformat()}' AND ends_at > '{lo.isoformat()}'",
        _SPAN_SCHEMA,
    )
    wanted = pl.Series("hour", hours, dtype=pl.Datetime("us", "UTC")).to_frame().lazy()
    pools = read_pools(raw)
    parts = hourly_parts(month_pieces(spans, pools).lazy()).join(wanted, on="hour", how="semi")
    declared = pl.LazyFrame({"pool": pools.names}, schema={"pool": pl.String})
    pooled = usage.join(declared, on="pool", how="semi")
    pool_hours = hourly_pools(parts, pooled).collect()
    raw.execute(f"DELETE FROM pool_hourly WHERE {in_hours}")
    copy_in(raw, "pool_hourly", pool_hours)
    fixed = fixed_shares(raw, spans)
    desired = (
        pl.concat(
            [
                pool_variance(pool_hours.lazy(), pooled, idle_policies(pool_hours, pools)),
                overhead_shares(parts.filter(pl.col("kind") == "overhead"), usage, fixed),
            ]
        )
        .group_by(ALLOCATION_KEYS)
        .agg(pl.col("amount_nanos").sum())
    )
    return append_difference(raw, in_hours, desired.collect(), through_seq, through_actual)

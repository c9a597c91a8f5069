"""Reading the ledger into Polars, two ways.

A small range (an incremental run) is a COPY to CSV inside the job's own transaction,
parsed by Polars. A rebuild streams the log through ADBC (binary COPY decoded to Arrow in
C++): one stream reads about as fast as the CSV route (1.4-1.7 s per million events either
way, see BENCHMARKS.md), but ADBC decodes outside the GIL, so two reads overlap with the
aggregation of the chunk before them. Each row is signed: a reversal (``sign`` −1)
subtracts its quantity, its cache events, its event count and the wall time of the event it
reverses (kept in ``pruned_walls`` once that event's partition is pruned); its cost is
already negated. Each row keeps its currency: no rollup adds two.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

import polars as pl
import psycopg

from ledger.journal import LOG

EVENT_SCHEMA: dict[str, Any] = {
    "seq": pl.Int64,
    "tenant_id": pl.String,
    "use_case": pl.String,
    "render_id": pl.String,
    "stage": pl.String,
    "sku": pl.String,
    "outcome": pl.String,
    "currency": pl.String,
    "day": pl.Date,
    "at": pl.Datetime("us"),
    "sign": pl.Int64,
    "quantity": pl.Decimal(38, 18),
    # One event's cost fits 64 bits; sums of them need 128 (rollups.py sums these columns).
    "cost_nanos": pl.Int128,
    "baseline_nanos": pl.Int128,
    "cache_hit": pl.Int64,
    "cache_miss": pl.Int64,
    "wall_s": pl.Decimal(38, 9),
    "latency_ms": pl.Float64,
    "model": pl.String,
    "pipeline_version": pl.String,
    "gpu_type": pl.String,
    "precision": pl.String,
    "unreadable": pl.Int64,
    "unreadable_wall": pl.Int64,
}

# A value a reader cannot use is treated as absent and counted, never cast blindly: one
# event from before attributes were typed at ingest must not stop the job for everyone.
UNREADABLE: Counter[str] = Counter()
"""Attribute values this process's readers treated as absent, by attribute (``/metrics``)."""
_unreadable_lock = threading.Lock()
_READABLE_LATENCY = (
    "jsonb_typeof(attributes->'latency_ms') = 'number' "
    "AND abs((attributes->'latency_ms')::numeric) < 1e15"
)
# ``wall_s`` as ledger.events.duration reads it: a number from 0 to 1e9 (nested CASEs, as
# SQL does not promise to evaluate an AND left to right). A reversal carries the wall time
# of the event it reverses, negated, so the sums stay exact whatever the reversal says.
_WALL = (
    "CASE WHEN jsonb_typeof(w) = 'number' THEN CASE WHEN w::numeric BETWEEN 0 AND 1e9 "
    "THEN round(w::numeric, 9) END END"
)

_SELECT = """
SELECT seq, tenant_id, use_case, render_id, stage, sku, coalesce(outcome, '') AS outcome,
       currency,
       (occurred_at AT TIME ZONE 'UTC')::date AS day,
       CASE WHEN stage = 'render' THEN occurred_at AT TIME ZONE 'UTC' END AS at,
       CASE WHEN reverses IS NULL THEN 1 ELSE -1 END AS sign,
       CASE WHEN reverses IS NULL THEN quantity ELSE -quantity END AS quantity,
       cost_nanos,
       coalesce(baseline_cost_nanos, cost_nanos) AS baseline_nanos,
       CASE WHEN cache = 'hit' THEN 1 ELSE 0 END * CASE WHEN reverses IS NULL THEN 1 ELSE -1 END
           AS cache_hit,
       CASE WHEN cache = 'miss' THEN 1 ELSE 0 END * CASE WHEN reverses IS NULL THEN 1 ELSE -1 END
           AS cache_miss,
       (coalesce(CASE WHEN stage <> 'render' THEN {wall} END, 0)
           * CASE WHEN reverses IS NULL THEN 1 ELSE -1 END) AS wall_s,
       CASE WHEN stage = 'render' AND reverses IS NULL AND {readable}
            THEN (attributes->>'latency_ms')::float8 END AS latency_ms,
       CASE WHEN stage = 'render' THEN attributes->>'model' END AS model,
       CASE WHEN stage = 'render' THEN attributes->>'pipeline_version' END AS pipeline_version,
       CASE WHEN stage = 'render' THEN attributes->>'gpu_type' END AS gpu_type,
       CASE WHEN stage = 'render' THEN attributes->>'precision' END AS precision,
       CASE WHEN stage = 'render' AND attributes ? 'latency_ms' AND NOT ({readable})
            THEN 1 ELSE 0 END AS unreadable,
       CASE WHEN stage <> 'render' AND reverses IS NULL AND jsonb_typeof(w) <> 'null'
            AND {wall} IS NULL THEN 1 ELSE 0 END AS unreadable_wall
FROM (
    SELECT e.*, CASE WHEN e.reverses IS NULL THEN e.attributes->'wall_s'
                ELSE coalesce((SELECT o.attributes->'wall_s' FROM {log} AS o
                               WHERE o.seq = (SELECT k.seq FROM event_keys AS k
                                              WHERE k.tenant_id = e.tenant_id
                                                AND k.event_id = e.reverses)),
                              (SELECT p.wall FROM pruned_walls AS p
                               WHERE p.tenant_id = e.tenant_id AND p.event_id = e.reverses))
                END AS w
    FROM {log} AS e WHERE e.seq BETWEEN {lo} AND {hi}
) AS e ORDER BY seq
"""


def read_events_adbc(
    url: str, lo: int, hi: int, role: str | None, *, hex_ids: bool = True
) -> pl.DataFrame:
    """Events with ``lo <= seq <= hi`` over a connection of their own. They are committed
    and immutable (below the chain head), so reading outside the job's transaction is safe.
    ``hex_ids=False`` keeps each render id as its 16 bytes (the rebuild's form)."""
    import adbc_driver_postgresql.dbapi as adbc

    query = (
        _select(lo, hi)
        .replace(
            "THEN quantity ELSE -quantity END AS quantity",
            "THEN quantity ELSE -quantity END::text AS quantity",
        )
        .replace(") AS wall_s", ")::text AS wall_s")
    )
    with adbc.connect(url) as conn, conn.cursor() as cur:
        if role:
            cur.execute(f'SET ROLE "{role}"')
        cur.execute(query)
        frame = pl.from_arrow(cur.fetch_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return (
        _counted(frame)
        .with_columns(
            pl.col("render_id").bin.encode("hex") if hex_ids else pl.col("render_id"),
            pl.col("quantity").str.to_decimal(scale=18),
            pl.col("wall_s").str.to_decimal(scale=9),
            pl.col(["sign", "cache_hit", "cache_miss", "unreadable", "unreadable_wall"]).cast(
                pl.Int64
            ),
            pl.col(["cost_nanos", "baseline_nanos"]).cast(pl.Int128),
        )
        .select(list(EVENT_SCHEMA))
    )


def uuid_text(column: str = "render_id") -> pl.Expr:
    """A uuid's 16 bytes as the 32 hex digits PostgreSQL reads as a uuid (a COPY's text)."""
    return pl.col(column).bin.encode("hex")


def read_events(raw: psycopg.Connection[Any], lo: int, hi: int) -> pl.DataFrame:
    """Events with ``lo <= seq <= hi``, one signed row each, in the caller's transaction."""
    return _counted(copy_out(raw, _select(lo, hi), EVENT_SCHEMA))


def _counted(frame: pl.DataFrame) -> pl.DataFrame:
    counts = {"latency_ms": "unreadable", "wall_s": "unreadable_wall"}
    found = {name: int(frame[column].sum()) for name, column in counts.items()}
    with _unreadable_lock:
        UNREADABLE.update({name: n for name, n in found.items() if n})
    return frame


def _select(lo: int, hi: int) -> str:
    return _SELECT.format(log=LOG, lo=int(lo), hi=int(hi), readable=_READABLE_LATENCY, wall=_WALL)


def copy_out(raw: psycopg.Connection[Any], query: str, schema: dict[str, Any]) -> pl.DataFrame:
    buffer = io.BytesIO()
    with raw.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv, HEADER)") as copy:
        for chunk in copy:
            buffer.write(chunk)
    buffer.seek(0)
    return pl.read_csv(buffer, schema=schema)


_COPY_IN_ROWS = 500_000


def copy_in(raw: psycopg.Connection[Any], table: str, frame: pl.DataFrame) -> None:
    """``frame`` into ``table`` by COPY, in chunks: a few million rows never sit in memory as
    one CSV buffer. Every job's write of derived rows goes through here."""
    cols = ", ".join(frame.columns)
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        for chunk in frame.iter_slices(_COPY_IN_ROWS):
            buffer = io.BytesIO()
            chunk.write_csv(buffer, include_header=False, null_value="")
            copy.write(buffer.getbuffer())

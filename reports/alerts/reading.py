"""What a detection pass reads from PostgreSQL, and the hourly series it keeps up to date.

``alert_hourly`` is derived from ``render_rollup``: hours it lacks or holds stale (a bulk
import of days of history, renders whose rollup arrived hours late) are rebuilt from the
earliest. Two ways to find it: the renders the events rolled up since the last pass
touched (cheap: the pass keeps its place in the event log in ``rollup_checkpoints``, as
job ``alert_hourly``), and, on the first pass of a day or when that place is lost (a
rollup rebuild), the two tables compared hour by hour — renders and money — over the whole
period a judgement reads.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl
import psycopg

from ledger.journal import LOG
from ledger.tables import STAGE_COLUMNS
from reports.alerts.series import KEYS, RENDER_FRAME_COLUMNS, hourly_frame
from reports.source import copy_in, copy_out

RENDER_SCHEMA: dict[str, Any] = {
    "tenant_id": pl.String,
    "use_case": pl.String,
    "currency": pl.String,
    "rendered_at": pl.Datetime("us", "UTC"),
    "outcome": pl.String,
    # Sums of costs are NUMERIC in the rollups: wider than 64 bits when a tenant makes them so.
    "total_nanos": pl.Int128,
    **dict.fromkeys(STAGE_COLUMNS.values(), pl.Int128),
    "cache_hits": pl.Int64,
    "cache_lookups": pl.Int64,
    "model": pl.String,
    "pipeline_version": pl.String,
    "gpu_type": pl.String,
    "precision": pl.String,
}
HOURLY_COLUMNS = [
    "hour",
    *KEYS,
    "delivered",
    "failed",
    "delivered_nanos",
    *STAGE_COLUMNS.values(),
    "waste_nanos",
    "cache_hits",
    "cache_lookups",
]
_HOURLY_SCHEMA: dict[str, Any] = {
    c: pl.Int128 if c.endswith("_nanos") else pl.Int64 for c in HOURLY_COLUMNS
} | {
    "hour": pl.Datetime("us"),
    "tenant_id": pl.String,
    "use_case": pl.String,
    "currency": pl.String,
}
_SERIES = (
    "(tenant_id, use_case, currency) IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))"
)


def _keys(keys: pl.DataFrame) -> tuple[list[str], list[str], list[str]]:
    return (keys["tenant_id"].to_list(), keys["use_case"].to_list(), keys["currency"].to_list())


def read_renders(
    raw: psycopg.Connection[Any], since: datetime, until: datetime, keys: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Renders in [since, until], of the series in ``keys`` (all when None)."""
    cols = ", ".join(
        c if c != "rendered_at" else "rendered_at AT TIME ZONE 'UTC' AS rendered_at"
        for c in RENDER_FRAME_COLUMNS
    )
    where, params = "rendered_at >= %s AND rendered_at <= %s", list[Any]([since, until])
    if keys is not None:
        where, params = f"{where} AND {_SERIES}", [*params, *_keys(keys)]
    query = psycopg.ClientCursor(raw).mogrify(
        f"SELECT {cols} FROM render_rollup WHERE {where}", params
    )
    schema = {**RENDER_SCHEMA, "rendered_at": pl.Datetime("us")}
    frame = copy_out(raw, query, schema)
    return frame.with_columns(pl.col("rendered_at").dt.replace_time_zone("UTC"))


def stale_since(raw: psycopg.Connection[Any], lo: datetime, hi: datetime) -> datetime | None:
    """The first hour in [lo, hi) where ``alert_hourly`` disagrees with ``render_rollup``
    (renders delivered or failed, and their money), or None: both sides are summed per
    hour in SQL, so only the hour that differs comes back."""
    row = raw.execute(
        """
        WITH r AS (
            SELECT date_trunc('hour', rendered_at, 'UTC') AS hour,
                   count(*) FILTER (WHERE outcome = 'delivered') AS delivered,
                   count(*) FILTER (WHERE outcome IN ('failed', 'cancelled')) AS failed,
                   coalesce(sum(total_nanos) FILTER (WHERE outcome = 'delivered'), 0) AS nanos
            FROM render_rollup
            WHERE rendered_at >= %(lo)s AND rendered_at < %(hi)s
              AND outcome IN ('delivered', 'failed', 'cancelled')
            GROUP BY 1
        ), a AS (
            SELECT hour, sum(delivered) AS delivered, sum(failed) AS failed,
                   sum(delivered_nanos) AS nanos
            FROM alert_hourly WHERE hour >= %(lo)s AND hour < %(hi)s GROUP BY 1
        )
        SELECT min(coalesce(r.hour, a.hour)) FROM r FULL JOIN a ON a.hour = r.hour
        WHERE (r.delivered, r.failed, r.nanos) IS DISTINCT FROM (a.delivered, a.failed, a.nanos)
        """,
        {"lo": lo, "hi": hi},
    ).fetchone()
    return None if row is None else row[0]


def touched_since(
    raw: psycopg.Connection[Any], after: int, upto: int, lo: datetime, hi: datetime
) -> datetime | None:
    """The first hour in [lo, hi) of a render that events ``after`` < seq ≤ ``upto``
    changed, or None."""
    row = raw.execute(
        "SELECT date_trunc('hour', min(r.rendered_at), 'UTC') FROM render_rollup r "
        f"WHERE r.render_id IN (SELECT render_id FROM {LOG} WHERE seq > %s AND seq <= %s) "
        "AND r.rendered_at >= %s AND r.rendered_at < %s",
        (after, upto, lo, hi),
    ).fetchone()
    return None if row is None else row[0]


def place(raw: psycopg.Connection[Any], job: str) -> tuple[int, datetime] | None:
    """A job's place (``rollup_checkpoints``) and the time it was saved at."""
    row = raw.execute(
        "SELECT last_seq, updated_at FROM rollup_checkpoints WHERE job = %s", (job,)
    ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def keep_place(raw: psycopg.Connection[Any], job: str, position: int, at: datetime) -> None:
    raw.execute(
        "INSERT INTO rollup_checkpoints (job, last_seq, updated_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (job) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
        "updated_at = EXCLUDED.updated_at",
        (job, position, at),
    )


def refresh_hourly(raw: psycopg.Connection[Any], renders: pl.DataFrame, since: datetime) -> None:
    """Replace the hours from ``since`` with sums of the renders read."""
    hours = hourly_frame(renders.lazy()).collect().select(HOURLY_COLUMNS)
    raw.execute("DELETE FROM alert_hourly WHERE hour >= %s", (since,))
    copy_in(raw, "alert_hourly", hours)


def _hourly(raw: psycopg.Connection[Any], query: str) -> pl.DataFrame:
    frame = copy_out(raw, query, _HOURLY_SCHEMA)
    return frame.with_columns(pl.col("hour").dt.replace_time_zone("UTC"))


def read_hourly(
    raw: psycopg.Connection[Any], top: datetime, days: int, keys: pl.DataFrame
) -> pl.DataFrame:
    """The busy path's baseline hours: this hour of day ±1 h on each of the last ``days``."""
    wanted = [
        top - timedelta(days=k) + timedelta(hours=o) for k in range(1, days + 1) for o in (-1, 0, 1)
    ]
    cols = ", ".join(
        c if c != "hour" else "hour AT TIME ZONE 'UTC' AS hour" for c in HOURLY_COLUMNS
    )
    query = psycopg.ClientCursor(raw).mogrify(
        f"SELECT {cols} FROM alert_hourly WHERE hour = ANY(%s) AND {_SERIES}",
        [wanted, *_keys(keys)],
    )
    return _hourly(raw, query)


def read_blocks(
    raw: psycopg.Connection[Any], top: datetime, days: int, keys: pl.DataFrame
) -> pl.DataFrame:
    """The low-volume path's baseline: day-long blocks of ``alert_hourly`` ending at ``top``
    and every 24 hours before it, one row per block in ``alert_hourly``'s shape (``hour``
    is the block's start), for the series in ``keys``."""
    sums = ", ".join(f"sum({c}) AS {c}" for c in HOURLY_COLUMNS[4:])
    block = "((extract(epoch FROM %(top)s - hour))::bigint / 3600 - 1) / 24"
    # Thousands of series × a month of hours: let the aggregate stay in memory.
    raw.execute("SET LOCAL work_mem = '64MB'")
    query = psycopg.ClientCursor(raw).mogrify(
        f"""
        SELECT (%(top)s - ({block} + 1) * interval '1 day') AT TIME ZONE 'UTC' AS hour,
               tenant_id, use_case, currency, {sums}
        FROM alert_hourly
        WHERE hour >= %(lo)s AND hour < %(top)s
          AND (tenant_id, use_case, currency) IN (
              SELECT * FROM unnest(%(t)s::text[], %(u)s::text[], %(c)s::text[]))
        GROUP BY 1, 2, 3, 4
        """,
        dict(zip(("t", "u", "c"), _keys(keys), strict=True))
        | {"top": top, "lo": top - timedelta(days=days)},
    )
    return _hourly(raw, query)


def last_resolved(
    raw: psycopg.Connection[Any], since: datetime
) -> dict[tuple[str, str, str | None], dict[str, int]]:
    """When each series' alerts last resolved, by signal (epoch seconds of the pass that
    judged it so), for those resolved since ``since``."""
    rows = raw.execute(
        "SELECT tenant_id, use_case, currency, signal, "
        "max(coalesce((detail->>'judged_at')::timestamptz, at)) FROM alert_events "
        "WHERE kind = 'resolved' AND at >= %s GROUP BY 1, 2, 3, 4",
        (since,),
    ).fetchall()
    out: dict[tuple[str, str, str | None], dict[str, int]] = {}
    for tenant, use_case, currency, signal, at in rows:
        out.setdefault((tenant, use_case, currency), {})[signal] = int(at.timestamp())
    return out

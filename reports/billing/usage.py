"""A month's usage read straight from the log, bounded by position.

Invoices read the events, not the rollups: an invoice names the last position it covers
(``through_seq``), and the rollups cannot split a render's cost at a position. The BRIN
index on ``occurred_at`` keeps the read to the month's pages.

A batch of drafts reads the log's history through ``reports.history`` instead
(``read_usage_history``): the archived files that may hold the month (by their statistics)
in Polars, then the hot tail in PostgreSQL, by the same rules as ``_USAGE``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import psycopg

from ledger.journal import LOG
from reports import history
from reports.billing.months import Window, next_month, previous_month, window
from reports.billing.plans import Plan, plans_for
from reports.billing.pricing import Usage

# Per currency: a render priced in two (its book changed currency mid-render) is a row in
# each, its outcome on the row of its render event's currency, the other's outcome "".
_USAGE = """
SELECT tenant_id, use_case, coalesce(outcome, '') AS outcome, count(*) AS renders,
       sum(events)::bigint, sum(cost), min(first_seq), max(last_seq), currency
FROM (
    SELECT tenant_id, use_case, render_id, currency, max(outcome) AS outcome,
           count(*) AS events, sum(cost_nanos) AS cost, min(seq) AS first_seq,
           max(seq) AS last_seq
    FROM {log}
    WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
      AND seq > %(after)s AND seq <= %(through)s {tenant_filter}
    GROUP BY tenant_id, use_case, render_id, currency
) AS renders
GROUP BY 1, 2, 3, 9
"""


# A few tenants' events are found through their keys (event_keys' primary key leads with the
# tenant and holds each event's seq), then by the log's primary key: the log has no index
# by tenant (one less index for every append to write). Many tenants' are a scan of the
# month, cheaper than that many lookups.
_BY_KEYS = 20
_TENANT_KEYS = (
    "AND tenant_id = ANY(%(tenants)s) "
    "AND seq IN (SELECT seq FROM event_keys WHERE tenant_id = ANY(%(tenants)s))"
)


def read_usage(
    raw: psycopg.Connection[Any],
    window: Window,
    through_seq: int,
    *,
    tenants: list[str] | None = None,
    exclude: list[str] | None = None,
    after_seq: int = 0,
) -> dict[str, list[Usage]]:
    """Usage by tenant: of ``tenants`` if given, else of all but ``exclude``."""
    params: dict[str, Any] = {
        "start": window.start,
        "end": window.end,
        "after": after_seq,
        "through": through_seq,
    }
    tenant_filter = ""
    if tenants is not None and len(tenants) <= _BY_KEYS:
        tenant_filter, params["tenants"] = _TENANT_KEYS, tenants
    elif tenants is not None:
        tenant_filter, params["tenants"] = "AND tenant_id = ANY(%(tenants)s)", tenants
    elif exclude:
        tenant_filter, params["exclude"] = "AND tenant_id <> ALL(%(exclude)s)", exclude
    out: dict[str, list[Usage]] = defaultdict(list)
    query = _USAGE.format(log=LOG, tenant_filter=tenant_filter)
    # The cost sum is NUMERIC: a tenant's month may pass 64 bits of nanos.
    rows = raw.execute(query, params)
    for tenant, use_case, outcome, renders, events, cost, first, last, currency in rows:
        usage = Usage(use_case, outcome, renders, events, int(cost), first, last, currency)
        out[tenant].append(usage)
    return out


# The first step of ``_USAGE`` (a render's events in one currency), over the hot tail of
# ``read_usage_history``: each tenant in its own window.
_TAIL_RENDERS = """
SELECT e.tenant_id, e.use_case, e.render_id, e.currency, max(e.outcome), count(*),
       sum(e.cost_nanos), min(e.seq), max(e.seq)
FROM {log} AS e
JOIN unnest(%(tenants)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[])
    AS w(tenant_id, start_at, end_at)
  ON e.tenant_id = w.tenant_id AND e.occurred_at >= w.start_at AND e.occurred_at < w.end_at
WHERE e.seq > %(after)s AND e.seq <= %(through)s
GROUP BY 1, 2, 3, 4
"""
_RENDER_KEY = ("tenant_id", "use_case", "render_id", "currency")
_READ = ("seq", "tenant_id", "use_case", "render_id", "currency", "outcome", "cost_nanos",
         "occurred_at")  # fmt: skip
# Read dictionary-encoded: a file's few distinct strings are decoded once, not per row.
_DICTIONARY = ("tenant_id", "use_case", "currency", "outcome")
# A render's events, summed: strings as categoricals (one code per string, whichever file or
# the tail it came from), the render id's 16 bytes as one Int128 (a fixed-width key hashes
# several times faster than bytes).
_RENDERS: dict[str, Any] = {
    "tenant_id": pl.Categorical,
    "use_case": pl.Categorical,
    "render_id": pl.Int128,
    "currency": pl.Categorical,
    "outcome": pl.Categorical,  # max is lexical, as on strings
    "events": pl.Int64,
    "cost": pl.Int128,  # exact: a month's nanos may pass 64 bits, never 128
    "first_seq": pl.Int64,
    "last_seq": pl.Int64,
}


def read_usage_history(
    raw: psycopg.Connection[Any],
    past: history.History,
    windows: Mapping[str, Window],
    through_seq: int,
    *,
    after_seq: int = 0,
) -> dict[str, list[Usage]]:
    """``read_usage`` of every tenant of ``windows``, each in its own window, over the log's
    history as ``past`` pins it: the archived files that may hold an event of some window
    (``history.archive_files_in``, by their statistics) aggregated a file at a time in
    Polars, two files at once, while the tail (seq after the archive) is aggregated by SQL
    on ``raw``; both by render, merged by render (a render's events may lie on both sides,
    or in two files), then grouped exactly as ``_USAGE`` groups: the render's greatest
    outcome ("" for none), integer nanos."""
    if not windows:
        return {}
    tenants = list(windows)
    bounds = pl.DataFrame(
        {
            "tenant_id": tenants,
            "start_at": [windows[t].start for t in tenants],
            "end_at": [windows[t].end for t in tenants],
        },
        schema={
            "tenant_id": pl.Categorical,
            "start_at": pl.Datetime("us", "UTC"),
            "end_at": pl.Datetime("us", "UTC"),
        },
    )
    files = history.archive_files_in(
        past,
        since=min(w.start for w in windows.values()),
        until=max(w.end for w in windows.values()),
        through=through_seq,
        after=after_seq,
    )
    tail_after = max(after_seq, past.archive.last_seq)

    def tail() -> pl.DataFrame:
        rows = raw.execute(
            _TAIL_RENDERS.format(log=LOG),
            {
                "tenants": tenants,
                "starts": [windows[t].start for t in tenants],
                "ends": [windows[t].end for t in tenants],
                "after": tail_after,
                "through": through_seq,
            },
        ).fetchall()
        return _tail_frame(rows)

    def archived(file: history.ArchivedFile) -> pl.DataFrame:
        data = history.read_archive_file(past, file, _READ, _DICTIONARY)
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        return _by_render(frame, bounds, after_seq, through_seq)

    parts = [pl.DataFrame(schema=_RENDERS)]
    # The tail's query runs in PostgreSQL while this process reads the archive; the files
    # are read and grouped two at a time (pyarrow and Polars work without the GIL), so one
    # file's decoding overlaps another's grouping.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="usage-history") as pool:
        pending = [pool.submit(tail)] if tail_after < through_seq else []
        try:
            pending += [pool.submit(archived, f) for f in files]
            parts += [p.result() for p in pending]
        finally:
            for p in pending:
                p.cancel()
    renders = (
        pl.concat(parts)
        .lazy()
        .group_by(_RENDER_KEY)
        .agg(
            pl.col("outcome").max(),
            pl.col("events").sum(),
            pl.col("cost").sum(),
            pl.col("first_seq").min(),
            pl.col("last_seq").max(),
        )
    )
    usage = (
        renders.group_by("tenant_id", "use_case", "outcome", "currency")
        .agg(
            pl.len().alias("renders"),
            pl.col("events").sum(),
            pl.col("cost").sum(),
            pl.col("first_seq").min(),
            pl.col("last_seq").max(),
        )
        .with_columns(pl.col("tenant_id", "use_case", "outcome", "currency").cast(pl.String))
        .collect()
    )
    out: dict[str, list[Usage]] = defaultdict(list)
    for tenant, use_case, outcome, currency, n, events, cost, first, last in usage.iter_rows():
        out[tenant].append(
            Usage(use_case, outcome or "", n, int(events), int(cost), first, last, currency)
        )
    return out


def _tail_frame(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    """The tail's renders (``_TAIL_RENDERS``) in ``_RENDERS``."""
    frame = pl.DataFrame(
        [(t, u, r.bytes, c, o, n, int(cost), a, b) for t, u, r, c, o, n, cost, a, b in rows],
        schema={**_RENDERS, "render_id": pl.Binary},
        orient="row",
    )
    return frame.with_columns(_render_key(pl.col("render_id")))


def _render_key(render_id: pl.Expr) -> pl.Expr:
    """A render id's 16 bytes as one Int128 (a key only: never turned back)."""
    return render_id.cast(pl.Binary).bin.reinterpret(dtype=pl.Int128, endianness="little")


def _by_render(
    frame: pl.DataFrame, bounds: pl.DataFrame, after_seq: int, through_seq: int
) -> pl.DataFrame:
    """One archived file's rows in their tenant's window and the seq bounds, by render.

    A file is mostly inside every window and the seq bounds (time follows seq but for late
    events): its rows are then grouped as they are, without the join that finds each
    row's window (a third of the time); otherwise only the rows outside some window's
    common part are joined to their tenant's window."""
    seq, at = frame["seq"], frame["occurred_at"]
    lazy = frame.lazy()
    if not (after_seq < seq.min() and seq.max() <= through_seq):  # type: ignore[operator]
        lazy = lazy.filter((pl.col("seq") > after_seq) & (pl.col("seq") <= through_seq))
    latest_start, earliest_end = bounds["start_at"].max(), bounds["end_at"].min()
    known = set(bounds["tenant_id"].cast(pl.String))
    if not set(frame["tenant_id"].unique().cast(pl.String)) <= known:
        lazy = lazy.filter(pl.col("tenant_id").cast(pl.String).is_in(list(known)))
    if not (latest_start <= at.min() and at.max() < earliest_end):  # type: ignore[operator]
        at_ = pl.col("occurred_at")
        common = (at_ >= latest_start) & (at_ < earliest_end)
        edges = (
            lazy.filter(~common)
            .join(bounds.lazy(), on="tenant_id")
            .filter((at_ >= pl.col("start_at")) & (at_ < pl.col("end_at")))
            .drop("start_at", "end_at")
        )
        lazy = pl.concat([lazy.filter(common), edges])
    return (
        lazy.group_by(
            "tenant_id", "use_case", _render_key(pl.col("render_id")).alias("render_id"), "currency"
        )
        .agg(
            pl.col("outcome").max(),
            pl.len().cast(pl.Int64).alias("events"),
            pl.col("cost_nanos").cast(pl.Int128).sum().alias("cost"),
            pl.col("seq").min().alias("first_seq"),
            pl.col("seq").max().alias("last_seq"),
        )
        .collect()
        .select(*_RENDERS)
    )


def late_months(
    raw: psycopg.Connection[Any],
    tenants: list[str],
    after_seq: int,
    through_seq: int,
    before: datetime,
) -> dict[str, set[date]]:
    """UTC months of events that arrived after ``after_seq`` but happened before ``before``.

    One range scan of the positions since the last finalization, for every tenant at once.
    """
    rows = raw.execute(
        "SELECT tenant_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date "
        f"FROM {LOG} WHERE seq > %s AND seq <= %s AND occurred_at < %s "
        "AND tenant_id = ANY(%s) GROUP BY 1, 2",
        (after_seq, through_seq, before, tenants),
    ).fetchall()
    out: dict[str, set[date]] = defaultdict(set)
    for tenant, month in rows:
        out[tenant].add(month)
    return out


def windows_of(
    raw: psycopg.Connection[Any],
    tenants: list[str],
    period: date,
    plans: dict[str, Plan] | None = None,
) -> dict[str, Window]:
    """Each tenant's window for ``period``: from its plans of this month and the next, and
    the windows its finalized invoices of this month and its neighbours recorded."""
    plans = plans if plans is not None else plans_for(raw, tenants, period)
    following = next_month(period)
    upcoming = plans_for(raw, tenants, following)
    recorded: dict[str, dict[date, tuple[datetime, datetime]]] = defaultdict(dict)
    for tenant, month, start, end in raw.execute(
        "SELECT tenant_id, period, document->'window'->>'start', document->'window'->>'end' "
        "FROM invoices WHERE tenant_id = ANY(%s) AND period = ANY(%s)",
        (tenants, [previous_month(period), period, following]),
    ):
        recorded[tenant][month] = (datetime.fromisoformat(start), datetime.fromisoformat(end))
    return {
        t: window(
            period,
            {period: plans[t].timezone, following: upcoming[t].timezone}.__getitem__,
            recorded.get(t, {}),
        )
        for t in tenants
    }


def window_of(
    raw: psycopg.Connection[Any], tenant: str, period: date, plan: Plan | None = None
) -> Window:
    return windows_of(raw, [tenant], period, None if plan is None else {tenant: plan})[tenant]


def month_of(raw: psycopg.Connection[Any], tenant: str, at: datetime) -> date:
    """The billing month of ``tenant`` that ``at`` falls in."""
    utc = at.astimezone(UTC).date().replace(day=1)
    for period in (utc, previous_month(utc), next_month(utc)):
        w = window_of(raw, tenant, period)
        if w.start <= at < w.end:
            return period
    return utc  # unreachable: windows meet, and none is shifted by more than a day


def first_usage_before(
    raw: psycopg.Connection[Any], tenants: list[str], before: datetime, through_seq: int
) -> dict[str, datetime]:
    """Each tenant's earliest event before ``before`` (up to ``through_seq``), if it has one.

    Reads every page before ``before``: it runs once per tenant's first finalization, for
    all tenants of a batch at once.
    """
    return {
        t: at
        for t, at in raw.execute(
            f"SELECT tenant_id, min(occurred_at) FROM {LOG} WHERE occurred_at < %s "
            "AND seq <= %s AND tenant_id = ANY(%s) GROUP BY 1",
            (before, through_seq, tenants),
        )
    }


def allocation_head(raw: psycopg.Connection[Any]) -> int:
    """The last allocation row: rows are appended by one job at a time, so in order."""
    row = raw.execute("SELECT coalesce(max(alloc_id), 0) FROM allocations").fetchone()
    return int(row[0]) if row else 0


def read_allocated(
    raw: psycopg.Connection[Any], tenant: str, window: Window, through: int
) -> dict[tuple[str, str], int]:
    """The tenant's allocated idle capacity and overheads in ``window`` by use case and
    currency, as of allocation row ``through``."""
    return {
        (use_case, currency): int(nanos)
        for use_case, currency, nanos in raw.execute(
            "SELECT use_case, currency, sum(amount_nanos) FROM allocations WHERE tenant_id = %s "
            "AND hour >= %s AND hour < %s AND alloc_id <= %s GROUP BY 1, 2",
            (tenant, window.start, window.end, through),
        )
    }


def late_allocation_months(
    raw: psycopg.Connection[Any], tenant: str, after: int, before: datetime
) -> set[date]:
    """UTC months before ``before`` whose allocations to ``tenant`` moved after allocation row
    ``after`` (late capacity or overheads, with no late event to flag the month)."""
    rows = raw.execute(
        "SELECT DISTINCT date_trunc('month', hour AT TIME ZONE 'UTC')::date FROM allocations "
        "WHERE tenant_id = %s AND alloc_id > %s AND hour < %s",
        (tenant, after, before),
    ).fetchall()
    return {r[0] for r in rows}

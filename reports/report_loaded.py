"""The report's fully-loaded side: allocated idle capacity and overheads, and utilisation.

Read from the allocation job's tables (``allocations``, ``usage_hourly``, ``pool_hourly``),
by the covering indexes of migration 0012. Allocations carry an hour and a use case, not a
stage, so this side exists for reports grouped by use case and/or day only. A tenant's own
overhead with no use case to spread it over is a row of use case ``""``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg

from reports.capacity_report import hour_range
from reports.report_rows import Converter

_EXPRESSIONS = {"use_case": "{t}use_case", "day": "({t}hour AT TIME ZONE 'UTC')::date"}
_RANGE = "tenant_id = %(tenant)s AND hour >= %(start)s AND hour < %(end)s"


def _select(outer: list[str], table: str = "") -> tuple[str, str]:
    cols = "".join(f"{_EXPRESSIONS[k].format(t=table)} AS {k}, " for k in outer)
    return cols, "".join(f"{k}, " for k in outer)


def allocated(
    raw: psycopg.Connection[Any],
    tenant: str,
    start: date,
    end: date,
    outer: list[str],
    m: Converter,
) -> dict[tuple[Any, ...], dict[str, Decimal]]:
    """Idle and overhead allocated per outer group and row currency."""
    cols, group = _select(outer)
    day = "(hour AT TIME ZONE 'UTC')::date" if m.target else "NULL::date"
    rows = raw.execute(
        f"SELECT {cols} currency, {day} AS fx_day, kind, sum(amount_nanos) FROM allocations "
        f"WHERE {_RANGE} GROUP BY {group} currency, fx_day, kind",
        hour_range(start, end, tenant=tenant),
    ).fetchall()
    out: dict[tuple[Any, ...], dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    n = len(outer)
    for r in rows:
        currency, fx_day, kind, nanos = r[n:]
        out[(*r[:n], m.row_currency(currency))][kind] += m.amount(nanos, currency, fx_day)
    return out


def utilisation(
    raw: psycopg.Connection[Any], tenant: str, start: date, end: date, outer: list[str]
) -> dict[tuple[Any, ...], float]:
    """Per outer group: the utilisation of the pools its renders ran on, each pool-hour
    weighted by the group's busy GPU-seconds in it (the infrastructure key metric)."""
    cols, group = _select(outer, "u.")
    rows = raw.execute(
        f"SELECT {cols} sum(u.busy_seconds * p.busy / p.held) / sum(u.busy_seconds) "
        "FROM usage_hourly u JOIN (SELECT hour, pool, sum(busy_seconds) AS busy, "
        "sum(held_seconds) AS held FROM pool_hourly WHERE hour >= %(start)s AND hour < %(end)s "
        "GROUP BY 1, 2 HAVING sum(held_seconds) > 0) p USING (hour, pool) "
        f"WHERE u.{_RANGE.replace('hour', 'u.hour')} AND u.busy_seconds > 0 "
        f"GROUP BY {group.rstrip(', ') or '()'}",
        hour_range(start, end, tenant=tenant),
    ).fetchall()
    n = len(outer)
    return {tuple(r[:n]): round(float(r[n]), 6) for r in rows if r[n] is not None}

"""A tenant's cost report over a date range, grouped by use case, stage and/or day.

Read from the rollups only, never from the log, with a few GROUP BY queries over the
tenant's rows (a tenant-month is a few thousand rows, which PostgreSQL aggregates in a
millisecond where a DataFrame engine spends more on start-up than on work). Money stays
integer nanos; a division is rounded once, half-even, to the nano.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg
from pydantic import BaseModel, Field

from ledger.money import format_nanos
from ledger.tables import STAGE_COLUMNS

GROUPS = ("use_case", "stage", "day")
_RANGE = "tenant_id = %(tenant)s AND day >= %(start)s AND day < %(end)s"
_STAGES = ", ".join(f"('{stage}', {column})" for stage, column in STAGE_COLUMNS.items())


@dataclass(frozen=True)
class ReportQuery:
    tenant: str
    start: date
    end: date  # exclusive
    group_by: tuple[str, ...] = ("use_case",)


Key = tuple[Any, ...]


class Usd(BaseModel):
    """Metered cost in USD: exact integer nanos, and the same as decimal text."""

    nanos: int
    amount: str = Field(examples=["0.007722000"])


class WhatIf(BaseModel):
    """The same work priced with another price book (the ``what_if`` query parameter)."""

    cost: Usd
    cost_per_delivered_render: Usd | None
    difference_per_delivered_render: Usd | None


class ReportRow(BaseModel):
    """One group of the report: the keys it is grouped by (``group_by``) and no others;
    ``share_of_cost`` when grouped by stage, else ``stage_share``; ``what_if`` when asked."""

    # Only the fields given are set, and a row is served with ``exclude_unset``.
    use_case: str | None = None
    stage: str | None = None
    day: date | None = None
    renders_delivered: int
    renders_failed: int
    renders_cancelled: int
    cost: Usd
    cost_per_delivered_render: Usd | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cache_hit_rate: float | None
    cache_savings: Usd
    waste: Usd = Field(description="Cost of failed and cancelled renders")
    share_of_cost: float | None = Field(default=None, description="The stage's part of its group")
    stage_share: dict[str, float] | None = Field(default=None, description="Parts by stage")
    what_if: WhatIf | None = None


def _select(keys: Iterable[str]) -> tuple[str, str]:
    cols = list(keys)
    return ("".join(f"{c}, " for c in cols), ", ".join(cols) or "()")


def _daily(raw: psycopg.Connection[Any], q: ReportQuery, outer: list[str]) -> list[dict[str, Any]]:
    """Cost, savings and cache counts per outer group and stage: costs and shares both."""
    head, _ = _select(outer)
    rows = raw.execute(
        f"SELECT {head} stage, sum(cost_nanos), sum(baseline_nanos) - sum(cost_nanos), "
        f"sum(cache_hits), sum(cache_lookups) FROM daily_rollup WHERE {_RANGE} "
        f"GROUP BY {', '.join([*outer, 'stage'])}",
        _params(q),
    ).fetchall()
    names = [*outer, "stage", "cost", "savings", "hits", "lookups"]
    return [dict(zip(names, r, strict=True)) for r in rows]


def _facts(
    raw: psycopg.Connection[Any], q: ReportQuery, outer: list[str]
) -> dict[Key, dict[str, Any]]:
    """Counts, latency percentiles and waste per outer group, from one row per render; the
    waste also per stage, so grouping by stage needs no second pass."""
    head, group = _select(outer)
    failed = "outcome IN ('failed', 'cancelled')"
    per_stage = "".join(
        f", coalesce(sum({column}) FILTER (WHERE {failed}), 0)" for column in STAGE_COLUMNS.values()
    )
    rows = raw.execute(
        f"SELECT {head} count(*) FILTER (WHERE outcome = 'delivered'), "
        "count(*) FILTER (WHERE outcome = 'failed'), "
        "count(*) FILTER (WHERE outcome = 'cancelled'), "
        # To the microsecond: an interpolated double prints as 3612.5099999999998 otherwise.
        "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric, 3)::float8, "
        "round(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)::numeric, 3)::float8, "
        f"coalesce(sum(total_nanos) FILTER (WHERE {failed}), 0){per_stage} "
        f"FROM render_rollup WHERE {_RANGE} GROUP BY {group}",
        _params(q),
    ).fetchall()
    out = {}
    for r in rows:
        n = len(outer)
        delivered, failed_n, cancelled, p50, p95, waste = r[n : n + 6]
        out[tuple(r[:n])] = {
            "delivered": delivered,
            "failed": failed_n,
            "cancelled": cancelled,
            "p50": p50,
            "p95": p95,
            "waste": waste,
            "stage_waste": dict(zip(STAGE_COLUMNS, r[n + 6 :], strict=True)),
        }
    return out


def _what_if(
    raw: psycopg.Connection[Any], q: ReportQuery, keys: list[str], prices: dict[str, Decimal]
) -> dict[Key, int]:
    """The same work under another book; an API's per-image price is paid for delivered
    images only, so ``render.image`` counts delivered renders alone."""
    head, _ = _select(keys)
    rows = raw.execute(
        f"SELECT {head} sku, sum(quantity) FROM daily_rollup WHERE {_RANGE} "
        "AND sku = ANY(%(skus)s) AND (sku <> 'render.image' OR outcome = 'delivered') "
        f"GROUP BY {', '.join([*keys, 'sku'])}",
        {**_params(q), "skus": list(prices)},
    ).fetchall()
    exact: dict[Key, Decimal] = {}
    for r in rows:
        key = tuple(r[: len(keys)])
        exact[key] = exact.get(key, Decimal(0)) + r[-1] * prices[r[-2]]
    return {k: int(v.to_integral_value(ROUND_HALF_EVEN)) for k, v in exact.items()}


def _params(q: ReportQuery) -> dict[str, Any]:
    return {"tenant": q.tenant, "start": q.start, "end": q.end}


def report(
    raw: psycopg.Connection[Any], q: ReportQuery, what_if: dict[str, Decimal] | None = None
) -> list[ReportRow]:
    """One row per group, sorted by the group keys; no keys means one row for everything."""
    keys = list(q.group_by)
    outer = [k for k in keys if k != "stage"]
    costs: dict[Key, list[int]] = {}
    shares: dict[Key, dict[str, int]] = {}
    for d in _daily(raw, q, outer):
        key = tuple(d[k] for k in keys)
        total = costs.setdefault(key, [0, 0, 0, 0])
        for i, name in enumerate(("cost", "savings", "hits", "lookups")):
            total[i] += int(d[name])
        shares.setdefault(tuple(d[k] for k in outer), {})[d["stage"]] = int(d["cost"])
    facts = _facts(raw, q, outer)
    alt = _what_if(raw, q, keys, what_if) if what_if is not None else None
    groups = set(costs)
    if "stage" not in keys:
        groups |= set(facts)
    ordered = sorted(groups, key=lambda k: tuple(str(v) for v in k))
    return [_row(k, keys, costs.get(k), facts, shares, alt) for k in ordered]


def _money(nanos: int | Decimal | None) -> Usd:
    n = int(nanos or 0)
    return Usd(nanos=n, amount=format_nanos(n))


def _per(nanos: int, count: int) -> Usd | None:
    if not count:
        return None
    return _money(int((Decimal(nanos) / count).to_integral_value(ROUND_HALF_EVEN)))


def _row(
    key: Key,
    keys: list[str],
    cost_row: list[int] | None,
    facts: dict[Key, dict[str, Any]],
    shares: dict[Key, dict[str, int]],
    alt: dict[Key, int] | None,
) -> ReportRow:
    cost, savings, hits, lookups = cost_row or (0, 0, 0, 0)
    values = dict(zip(keys, key, strict=True))
    outer = tuple(v for k, v in values.items() if k != "stage")
    fact = facts.get(outer, {})
    waste = fact.get("waste", 0)
    if "stage" in keys:
        waste = fact.get("stage_waste", {}).get(values["stage"], 0)
    delivered = int(fact.get("delivered", 0))
    # Only the fields given are set: a row has the keys it is grouped by and no others.
    given: dict[str, Any] = dict(values)
    by_stage = shares.get(outer, {})
    whole = sum(by_stage.values())
    if "stage" in keys:
        given["share_of_cost"] = round(cost / whole, 6) if whole else None
    else:
        given["stage_share"] = (
            {s: round(c / whole, 6) for s, c in sorted(by_stage.items())} if whole else {}
        )
    if alt is not None:
        other = alt.get(key, 0)
        given["what_if"] = WhatIf(
            cost=_money(other),
            cost_per_delivered_render=_per(other, delivered),
            difference_per_delivered_render=_per(other - cost, delivered),
        )
    return ReportRow(
        renders_delivered=delivered,
        renders_failed=int(fact.get("failed", 0)),
        renders_cancelled=int(fact.get("cancelled", 0)),
        cost=_money(cost),
        cost_per_delivered_render=_per(cost, delivered),
        latency_p50_ms=fact.get("p50"),
        latency_p95_ms=fact.get("p95"),
        cache_hit_rate=round(hits / lookups, 6) if lookups else None,
        cache_savings=_money(savings),
        waste=_money(waste),
        **given,
    )

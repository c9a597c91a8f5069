"""A tenant's cost report over a date range, grouped by use case, stage and/or day.

Read from the rollups only, never from the log, with a few GROUP BY queries over the
tenant's rows (a tenant-month is a few thousand rows, which PostgreSQL aggregates in a
millisecond where a DataFrame engine spends more on start-up than on work). Every key holds
the currency: without a target currency a row is one currency's, and nothing of two is ever
added; with one, each day's amounts are converted at that day's rate (``ledger.fx``) and
summed exactly. Money stays integer nanos or exact Decimals; each figure is rounded once,
half-even, to the nano.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg

from ledger.events import Stage
from ledger.fx import FxTable
from ledger.money import EXACT
from ledger.tables import STAGE_CACHE_COLUMNS, STAGE_COLUMNS
from reports.report_attributes import ATTRIBUTES, check, costs_by_render
from reports.report_loaded import allocated, utilisation
from reports.report_rows import (
    Converter,
    FullyLoaded,
    Previous,
    ReportRow,
    WhatIf,
    change,
    earlier,
    fraction,
    money,
    per,
    shares,
)
from reports.rollups import found, looked_up

GROUPS = ("use_case", "stage", "day", *ATTRIBUTES)
STAGES = [s.value for s in Stage]
_RANGE = "tenant_id = %(tenant)s AND day >= %(start)s AND day < %(end)s"
_FAILED = "outcome IN ('failed', 'cancelled')"
_PERCENTILES = (  # to the microsecond: an interpolated double prints as 3612.5099999999998
    "round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::numeric, 3)::float8, "
    "round(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)::numeric, 3)::float8"
)

Key = tuple[Any, ...]
Sums = defaultdict[Key, defaultdict[str, Decimal]]


@dataclass(frozen=True)
class ReportQuery:
    tenant: str
    start: date
    end: date  # exclusive
    group_by: tuple[str, ...] = ("use_case",)
    currency: str | None = None  # convert every amount to it; None: a row per currency

    def previous(self) -> ReportQuery:
        """The period of equal length just before."""
        return replace(self, start=earlier(self.start, self.end - self.start), end=self.start)


@dataclass(frozen=True)
class WhatIfBook:
    currency: str
    prices: dict[str, Decimal]  # nanos per unit, by SKU


def _select(keys: list[str]) -> str:
    return "".join(f"{c}, " for c in keys)


def _group(keys: list[str], *more: str) -> str:
    return ", ".join([*keys, *more])


def _params(q: ReportQuery) -> dict[str, Any]:
    return {"tenant": q.tenant, "start": q.start, "end": q.end}


def _costs(raw: psycopg.Connection[Any], q: ReportQuery, outer: list[str], m: Converter) -> Sums:
    """Cost, savings and wall time per outer group, currency and stage."""
    sums: Sums = defaultdict(lambda: defaultdict(Decimal))
    rows = raw.execute(
        f"SELECT {_select(outer)} stage, currency, {m.day_column()} AS fx_day, sum(cost_nanos), "
        f"sum(baseline_nanos) - sum(cost_nanos), sum(wall_s) FROM daily_rollup WHERE {_RANGE} "
        f"GROUP BY {_group(outer, 'stage', 'currency', 'fx_day')}",
        _params(q),
    ).fetchall()
    n = len(outer)
    for r in rows:
        stage, currency, day, cost, savings, wall = r[n:]
        key = (*r[:n], m.row_currency(currency), stage)
        sums[key]["cost"] += m.amount(cost, currency, day)
        sums[key]["savings"] += m.amount(savings, currency, day)
        sums[key]["wall"] += Decimal(wall)
    return sums


def _waste_columns(where: str) -> str:
    """SQL: a failed render's cost in all and by stage, summed over rows matching ``where``."""
    return ", ".join(f"sum({c}) {where}" for c in ["total_nanos", *STAGE_COLUMNS.values()])


def _add_waste(
    sums: Sums, key: Key, values: Sequence[Any], m: Converter, currency: str, day: Any
) -> None:
    sums[key][""] += m.amount(values[0] or 0, currency, day)
    for stage, value in zip(STAGE_COLUMNS, values[1:], strict=True):
        sums[key][stage] += m.amount(value or 0, currency, day)


def _waste(raw: psycopg.Connection[Any], q: ReportQuery, outer: list[str], m: Converter) -> Sums:
    """The cost of renders not delivered, per outer group and currency, in all and by stage,
    each day converted at its rate (without converting, ``_facts`` sums it in its pass)."""
    rows = raw.execute(
        f"SELECT {_select(outer)} currency, {m.day_column()} AS fx_day, {_waste_columns('')} "
        f"FROM render_rollup WHERE {_RANGE} AND {_FAILED} "
        f"GROUP BY {_group(outer, 'currency', 'fx_day')}",
        _params(q),
    ).fetchall()
    sums: Sums = defaultdict(lambda: defaultdict(Decimal))
    n = len(outer)
    for r in rows:
        currency, day = r[n : n + 2]
        _add_waste(sums, (*r[:n], m.row_currency(currency)), r[n + 2 :], m, currency, day)
    return sums


def _facts(
    raw: psycopg.Connection[Any],
    q: ReportQuery,
    outer: list[str],
    m: Converter,
    waste: Sums,
    latency: bool,
) -> dict[Key, dict[str, Any]]:
    """Render counts, latency percentiles and cache (hits, lookups) per outer group (and
    currency unless converting), in one pass over the renders. A render's own
    ``cache_hits``/``cache_lookups`` add up its stages; by stage, each stage's pair is a
    column of counts (one lookup per render and stage that had one, however many events
    metered it: ``reports.rollups``), never a join against the list of stages, which
    multiplied the rows by eight and cost four times the rest of the report. Without
    converting, the waste of failed renders is summed into ``waste`` in the same pass."""
    currency = "%(target)s::text" if m.target else "currency"
    failed = "" if m.target else ", " + _waste_columns(f"FILTER (WHERE {_FAILED})")
    if "stage" in q.group_by:
        cache = "".join(
            f", count(*) FILTER (WHERE {found(h, x)}), count(*) FILTER (WHERE {looked_up(h, x)})"
            for h, x in STAGE_CACHE_COLUMNS.values()
        )
    else:
        cache = ", sum(cache_hits), sum(cache_lookups)"
    rows = raw.execute(
        f"SELECT {_select(outer)} {currency} AS row_currency, "
        "count(*) FILTER (WHERE outcome = 'delivered'), "
        "count(*) FILTER (WHERE outcome = 'failed'), "
        "count(*) FILTER (WHERE outcome = 'cancelled'), "
        f"{_PERCENTILES if latency else 'NULL::float8, NULL::float8'}"
        f"{failed}{cache} FROM render_rollup WHERE {_RANGE} "
        f"GROUP BY {_group(outer, 'row_currency')}",
        _params(q) | {"target": m.target},
    ).fetchall()
    n = len(outer) + 1
    names = ("delivered", "failed", "cancelled", "p50", "p95")
    stages = list(STAGE_CACHE_COLUMNS) if "stage" in q.group_by else [""]
    out = {}
    for r in rows:
        fact: dict[str, Any] = dict(zip(names, r[n : n + 5], strict=True))
        more = r[n + 5 :]
        if failed:
            _add_waste(waste, tuple(r[:n]), more[: 1 + len(STAGE_COLUMNS)], m, r[n - 1], None)
            more = more[1 + len(STAGE_COLUMNS) :]
        counts = [int(c or 0) for c in more]
        fact["cache"] = {s: (counts[2 * i], counts[2 * i + 1]) for i, s in enumerate(stages)}
        out[tuple(r[:n])] = fact
    return out


def _what_if(
    raw: psycopg.Connection[Any], q: ReportQuery, outer: list[str], book: WhatIfBook, m: Converter
) -> dict[Key, Decimal]:
    """The same work under another book, in the row's currency. An API's per-image price is
    paid for delivered images only, so ``render.image`` counts delivered renders alone. A row
    of another currency than the book's gets none unless the report converts."""
    by_stage = "stage" in q.group_by
    stage = "stage" if by_stage else "NULL::text"
    rows = raw.execute(
        f"SELECT {_select(outer)} currency, {stage} AS by_stage, {m.day_column()} AS fx_day, "
        f"sku, sum(quantity) FROM daily_rollup WHERE {_RANGE} AND sku = ANY(%(skus)s) "
        "AND (sku <> 'render.image' OR outcome = 'delivered') "
        f"GROUP BY {_group(outer, 'currency', 'by_stage', 'fx_day', 'sku')}",
        _params(q) | {"skus": list(book.prices)},
    ).fetchall()
    out: dict[Key, Decimal] = defaultdict(Decimal)
    n = len(outer)
    for r in rows:
        currency, in_stage, day, sku, quantity = r[n:]
        if m.target is None and currency != book.currency:
            continue
        key = (*r[:n], m.row_currency(currency), *([in_stage] if by_stage else []))
        out[key] += m.amount(EXACT.multiply(quantity, book.prices[sku]), book.currency, day)
    return out


def report(
    raw: psycopg.Connection[Any],
    q: ReportQuery,
    what_if: WhatIfBook | None = None,
    fx: FxTable | None = None,
    *,
    compare: bool = False,
    latency: bool = True,
) -> list[ReportRow]:
    """One row per group and currency, sorted by the group keys then the currency; no keys
    means one row per currency. ``fx`` must cover the days when ``q.currency`` is set;
    ``compare`` adds each row's ``previous`` (the same report of the period before).
    ``latency=False`` leaves the percentiles out (None): they alone need every render
    sorted, where the other figures are sums PostgreSQL hashes in parallel."""
    keys = list(q.group_by)
    outer = [k for k in keys if k != "stage"]
    check(q.group_by, what_if is not None)
    by_attribute = bool(set(keys) & set(ATTRIBUTES))
    m = Converter(q.currency, fx)
    costs = costs_by_render(raw, _params(q), outer, m) if by_attribute else _costs(raw, q, outer, m)
    waste = _waste(raw, q, outer, m) if m.target else defaultdict(lambda: defaultdict(Decimal))
    facts = _facts(raw, q, outer, m, waste, latency)
    alt = _what_if(raw, q, outer, what_if, m) if what_if is not None else None
    loaded = util = None
    if "stage" not in keys and not by_attribute:  # allocations know no stage or attribute
        loaded = allocated(raw, q.tenant, q.start, q.end, outer, m)
        util = utilisation(raw, q.tenant, q.start, q.end, outer)
    by_outer: dict[Key, dict[str, dict[str, Decimal]]] = defaultdict(dict)
    for (*o, currency, stage), sums in costs.items():
        by_outer[(*o, currency)][stage] = sums
    groups: set[Key] = set()
    for outer_key, stages in by_outer.items():
        if "stage" in keys:
            groups |= {(*outer_key, s) for s in stages}
        else:
            groups.add(outer_key)
    if "stage" not in keys:
        groups |= set(facts) | set(loaded or {})
    before = _previous(raw, q, fx) if compare else {}
    rows = []
    for g in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        outer_key = g[: len(outer) + 1]
        stage = g[-1] if "stage" in keys else None
        values = dict(zip(outer, g[: len(outer)], strict=True))
        if stage is not None:
            values["stage"] = stage
        fact = facts.get(outer_key, {})
        delivered = int(fact.get("delivered") or 0)
        stage_sums = by_outer.get(outer_key, {})
        picked = [stage_sums.get(stage, {})] if stage else list(stage_sums.values())
        cost = sum((s.get("cost", Decimal(0)) for s in picked), Decimal(0))
        hits, looks = fact.get("cache", {}).get(stage or "", (0, 0))
        given: dict[str, Any] = {k: values[k] for k in keys}
        cost_parts = {s: v.get("cost", Decimal(0)) for s, v in stage_sums.items()}
        wall_parts = {s: v.get("wall", Decimal(0)) for s, v in stage_sums.items()}
        if stage:
            given["share_of_cost"] = fraction(cost, sum(cost_parts.values(), Decimal(0)))
            given["wall_share"] = fraction(wall_parts.get(stage, 0), sum(wall_parts.values()))
        else:
            given["stage_share"] = shares(cost_parts, STAGES)
            given["stage_wall_share"] = shares(wall_parts, STAGES)
        if alt is not None and what_if is not None:
            same = m.target is not None or g[len(outer)] == what_if.currency
            other = alt.get(g, Decimal(0) if same else None)
            given["what_if"] = (
                None
                if other is None
                else WhatIf(
                    cost=money(other),
                    cost_per_delivered_render=per(other, delivered),
                    difference_per_delivered_render=per(other - cost, delivered),
                )
            )
        if loaded is not None and util is not None:
            shared = loaded.get(outer_key, {})
            idle, overhead = shared.get("idle", Decimal(0)), shared.get("overhead", Decimal(0))
            given["utilisation"] = util.get(g[: len(outer)])
            given["fully_loaded"] = FullyLoaded(
                idle=money(idle),
                overhead=money(overhead),
                cost=money(cost + idle + overhead),
                cost_per_delivered_render=per(cost + idle + overhead, delivered),
            )
        finished = delivered + int(fact.get("failed") or 0) + int(fact.get("cancelled") or 0)
        row = ReportRow(
            currency=g[len(outer)],
            renders_delivered=delivered,
            renders_failed=int(fact.get("failed") or 0),
            renders_cancelled=int(fact.get("cancelled") or 0),
            failed_rate=fraction(int(fact.get("failed") or 0), finished),
            cost_per_delivered_render=per(cost, delivered),
            latency_p50_ms=fact.get("p50"),
            latency_p95_ms=fact.get("p95"),
            cache_hit_rate=fraction(hits, looks),
            cache_savings=money(sum((s.get("savings", Decimal(0)) for s in picked), Decimal(0))),
            waste=money(waste[outer_key][stage or ""] if outer_key in waste else 0),
            cost=money(cost),
            **given,
        )
        if compare:
            row.previous = _compared(row, before.get(_shifted(g, keys, q)))
        rows.append(row)
    return rows


def _shifted(g: Key, keys: list[str], q: ReportQuery) -> Key:
    """The key of the same group in the previous period: a day moves back by its length."""
    if "day" not in keys:
        return g
    i = [k for k in keys if k != "stage"].index("day")
    return (*g[:i], earlier(g[i], q.end - q.start), *g[i + 1 :])


def _previous(
    raw: psycopg.Connection[Any], q: ReportQuery, fx: FxTable | None
) -> dict[Key, ReportRow]:
    keys = [k for k in q.group_by if k != "stage"]
    out = {}
    for row in report(raw, q.previous(), None, fx):
        key = (*(getattr(row, k) for k in keys), row.currency)
        out[(*key, row.stage) if "stage" in q.group_by else key] = row
    return out


def _compared(now: ReportRow, before: ReportRow | None) -> Previous | None:
    if before is None:
        return None
    return Previous(
        cost=before.cost,
        cost_per_delivered_render=before.cost_per_delivered_render,
        cost_change=change(now.cost, before.cost),
        cost_per_delivered_render_change=change(
            now.cost_per_delivered_render, before.cost_per_delivered_render
        ),
    )

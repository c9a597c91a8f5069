"""Every tenant's spend over a period, ranked, with cost per delivered render and its change
against the period of equal length before (the admin's view across tenants).

Spend is read from ``daily_rollup`` and delivered renders from ``render_rollup``, as a
tenant's own report reads them, so the two agree to the nano. Without a target currency a
tenant has a line per currency and lines are ranked within their currency; with one, every
day's spend is converted at that day's rate and all lines are ranked together.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from pydantic import BaseModel

from ledger.fx import FxTable
from reports.report_rows import Converter, Money, change, earlier, money, per

_RANGE = "day >= %(start)s AND day < %(end)s"


class TenantSpend(BaseModel):
    rank: int  # 1 is the largest spend (within its currency unless converted)
    tenant: str
    currency: str
    cost: Money
    renders_delivered: int
    cost_per_delivered_render: Money | None
    previous_cost: Money
    previous_cost_per_delivered_render: Money | None
    cost_change: float | None
    cost_per_delivered_render_change: float | None


def _period(
    raw: psycopg.Connection[Any], start: date, end: date, m: Converter
) -> dict[tuple[str, str], tuple[Decimal, int]]:
    """(tenant, row currency) → (exact spend, delivered renders)."""
    params = {"start": start, "end": end, "target": m.target}
    spend: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for tenant, currency, day, cost in raw.execute(
        f"SELECT tenant_id, currency, {m.day_column()} AS fx_day, sum(cost_nanos) "
        f"FROM daily_rollup WHERE {_RANGE} GROUP BY tenant_id, currency, fx_day",
        params,
    ).fetchall():
        spend[(tenant, m.row_currency(currency))] += m.amount(cost, currency, day)
    currency = "%(target)s::text" if m.target else "currency"
    delivered = {
        (tenant, cur): int(n)
        for tenant, cur, n in raw.execute(
            f"SELECT tenant_id, {currency} AS row_currency, count(*) FROM render_rollup "
            f"WHERE {_RANGE} AND outcome = 'delivered' GROUP BY tenant_id, row_currency",
            params,
        ).fetchall()
    }
    return {k: (spend.get(k, Decimal(0)), delivered.get(k, 0)) for k in spend.keys() | delivered}


def rank_tenants(
    raw: psycopg.Connection[Any],
    start: date,
    end: date,
    currency: str | None = None,
    fx: FxTable | None = None,
) -> list[TenantSpend]:
    """Lines ranked by spend, largest first; ``fx`` must cover the previous period too."""
    m = Converter(currency, fx)
    now = _period(raw, start, end, m)
    before = _period(raw, earlier(start, end - start), start, m)
    order = sorted(now, key=lambda k: (currency or k[1], -now[k][0], k[0]))
    lines: list[TenantSpend] = []
    for tenant, cur in order:
        cost, delivered = now[(tenant, cur)]
        old_cost, old_delivered = before.get((tenant, cur), (Decimal(0), 0))
        rank = (
            1
            if not lines or (currency is None and lines[-1].currency != cur)
            else (lines[-1].rank + 1)
        )
        line = TenantSpend(
            rank=rank,
            tenant=tenant,
            currency=cur,
            cost=money(cost),
            renders_delivered=delivered,
            cost_per_delivered_render=per(cost, delivered),
            previous_cost=money(old_cost),
            previous_cost_per_delivered_render=per(old_cost, old_delivered),
            cost_change=None,
            cost_per_delivered_render_change=None,
        )
        line.cost_change = change(line.cost, line.previous_cost)
        line.cost_per_delivered_render_change = change(
            line.cost_per_delivered_render, line.previous_cost_per_delivered_render
        )
        lines.append(line)
    return lines

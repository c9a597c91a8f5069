"""The dashboard's charts, assembled from the report rows a page read: each figure in a
tooltip or beside a bar is written by ``dashboard_format``, as on the tiles."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from markupsafe import Markup

from reports.report_rows import Money, ReportRow
from reports.tenant_report import STAGES
from service.http import dashboard_format as fmt
from service.http.dashboard_charts import HALF, PALETTE, WIDE, Bar, Series, bars, hbars
from service.http.dashboard_data import AdminView, CurrencyView, Filters


def _value(m: Money | None) -> float:
    return float(Decimal(m.amount)) if m is not None else 0.0


def _days(f: Filters) -> list[date]:
    return [f.start + timedelta(d) for d in range((f.end - f.start).days)]


def _label(day: date, f: Filters) -> str:
    return day.isoformat()[5:] if f.start.year == f.last_day.year else day.isoformat()


def tenant_charts(view: CurrencyView, f: Filters) -> dict[str, Markup]:
    """Cost per render by stage and day, spend per day, cache savings beside waste."""
    c = view.currency
    days = _days(f)
    names = [_label(d, f) for d in days]
    by_day = {r.day: r for r in view.days}
    day_rows = [by_day.get(d) for d in days]
    stages = []
    for i, stage in enumerate(STAGES):
        # A stage's part of the day's cost per render: its share of the day's cost (the
        # row's ``stage_share``), drawn as that part of the bar; the tooltip says both.
        parts, labels = [], []
        for r in day_rows:
            share = (r.stage_share or {}).get(stage) if r else None
            cpr = r.cost_per_delivered_render if r else None
            parts.append(_value(cpr) * share if share else 0.0)
            labels.append(f"{fmt.percent(share)} of {fmt.money(cpr, c)} per render")
        stages.append(Series(stage, parts, labels, PALETTE[i % len(PALETTE)]))

    def series(name: str, pick: Any, color: str) -> Series:
        values = [pick(r) if r else None for r in day_rows]
        return Series(name, [_value(m) for m in values], [fmt.money(m, c) for m in values], color)

    return {
        "cost_per_render": bars("cost per render by stage", names, stages, f"{c} per render"),
        "spend": bars(
            "spend per day",
            names,
            [series("spend", lambda r: r.cost, PALETTE[0])],
            c,
            width=HALF,
        ),
        "savings_waste": bars(
            "cache savings and waste",
            names,
            [
                series("cache savings", lambda r: r.cache_savings, PALETTE[2]),
                series("failed-render waste", lambda r: r.waste, PALETTE[5]),
            ],
            c,
            stacked=False,
            width=HALF,
        ),
    }


def what_if_chart(row: ReportRow, book: str | None) -> Markup | None:
    """This ledger's cost per delivered render beside the same work under ``book``."""
    if row.what_if is None or book is None:
        return None
    c = row.currency
    ours, theirs = row.cost_per_delivered_render, row.what_if.cost_per_delivered_render
    return hbars(
        "what-if",
        [
            Bar("as metered", _value(ours), fmt.money(ours, c)),
            Bar(book, _value(theirs), fmt.money(theirs, c)),
        ],
        width=WIDE,
    )


def budget_chart(budgets: list[dict[str, Any]]) -> Markup | None:
    if not budgets:
        return None
    rows = []
    for b in budgets:
        used = b["used_ratio"]
        spent = fmt.amount(b["spent"]) if b["spent"] is not None else fmt.DASH
        text = f"{spent} of {fmt.amount(str(b['amount']))} {b['currency']} ({fmt.percent(used)})"
        rows.append(Bar(b["use_case"] or "whole tenant", used or 0.0, text))
    top = max(1.0, *(r.value for r in rows))
    return hbars("budgets", rows, top=top)


def admin_charts(view: AdminView, currency: str, link: Callable[[str], str]) -> dict[str, Markup]:
    """Tenants by spend and by change in cost per render (one currency's ranking)."""
    spend = [
        Bar(t.tenant, _value(t.cost), fmt.money(t.cost, currency), link(t.tenant))
        for t in view.by_spend(currency)[:25]
    ]
    moved = [
        Bar(
            t.tenant,
            t.cost_per_delivered_render_change or 0.0,
            fmt.change(t.cost_per_delivered_render_change),
            link(t.tenant),
            f"{fmt.change(t.cost_per_delivered_render_change)} per render "
            f"({fmt.money(t.previous_cost_per_delivered_render)} → "
            f"{fmt.money(t.cost_per_delivered_render, currency)})",
        )
        for t in view.by_change(currency)[:25]
    ]
    return {
        "spend": hbars("tenants by spend", spend),
        "change": hbars(
            "tenants by change in cost per render",
            moved,
            diverging=True,
            empty="No tenant delivered renders in both this period and the one before",
        ),
    }


def pools_chart(view: AdminView) -> Markup:
    rows = [
        Bar(p.pool, p.utilisation or 0.0, fmt.percent(p.utilisation))
        for p in view.pools_by_utilisation()
    ]
    return hbars("pools by utilisation", rows, top=1.0)

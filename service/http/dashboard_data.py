"""What the dashboard's pages show, read through the report API's own query functions (the
rollups, the allocation tables, the alert and budget stores), never from the raw log: a
month of a large tenant's data is a few GROUP BYs over its rollup rows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg

from ledger.capacity import read_pools
from ledger.events import USE_CASE_PATTERN
from ledger.fx import FxTable, MissingRate
from ledger.store import Ledger
from reports.alerts.store import alerts
from reports.billing.document import InvoiceSummary
from reports.billing.lifecycle import list_invoices
from reports.break_even import BreakEven, BreakEvenRefused, assess
from reports.budgets import statuses
from reports.capacity_report import PoolRow, pool_rows
from reports.report_rows import Money, ReportRow, change
from reports.tenant_ranking import TenantSpend, rank_tenants
from reports.tenant_report import ReportQuery, WhatIfBook
from service.http.dashboard_reports import page_rows, rollup_state
from service.http.errors import http_error
from service.http.reports import fx_for, missing_rate

PERIOD_DAYS = 30
MAX_DAYS = 366 * 2  # a page draws a bar a day
CURRENCY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
USE_CASE_RE = re.compile(USE_CASE_PATTERN.replace("$", r"\Z"))


class FilterError(ValueError):
    """A query-string value the page cannot use, named."""


@dataclass(frozen=True)
class Filters:
    """The view in the URL (so it can be shared): dates, use case, currency, what-if book."""

    start: date
    end: date  # exclusive, like the API's ``to``
    use_case: str | None = None
    currency: str | None = None
    what_if: str | None = None

    @classmethod
    def parse(cls, params: dict[str, str], today: date | None = None) -> Filters:
        end = _day(params.get("to"), "to") or (today or datetime.now(UTC).date()) + timedelta(1)
        start = _day(params.get("from"), "from") or end - timedelta(PERIOD_DAYS)
        if start >= end:
            raise FilterError("from must be before to")
        if (end - start).days > MAX_DAYS:
            raise FilterError(f"a page shows at most {MAX_DAYS} days")
        use_case = params.get("use_case") or None
        if use_case is not None and not USE_CASE_RE.match(use_case):
            raise FilterError(f"use_case: no such use case {use_case!r}")
        currency = params.get("currency") or None
        if currency is not None and (len(currency) != 3 or not set(currency) <= CURRENCY_CHARS):
            raise FilterError("currency: three capital letters, e.g. EUR")
        return cls(start, end, use_case, currency, params.get("what_if") or None)

    def query(self, **changes: Any) -> str:
        """This view's query string, with ``changes`` (None drops a parameter)."""
        values = {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "use_case": self.use_case,
            "currency": self.currency,
            "what_if": self.what_if,
        } | changes
        return urlencode({k: v for k, v in values.items() if v is not None})

    @property
    def last_day(self) -> date:
        return self.end - timedelta(1)

    def presets(self, today: date | None = None) -> list[tuple[str, str]]:
        """Links to common periods, keeping the other filters."""
        today = today or datetime.now(UTC).date()
        tomorrow = today + timedelta(1)
        first = today.replace(day=1)
        before = (first - timedelta(1)).replace(day=1)
        spans = [
            ("7 days", tomorrow - timedelta(7), tomorrow),
            ("30 days", tomorrow - timedelta(30), tomorrow),
            ("90 days", tomorrow - timedelta(90), tomorrow),
            ("this month", first, tomorrow),
            ("last month", before, first),
        ]
        return [
            (name, self.query(**{"from": a.isoformat(), "to": b.isoformat()}))
            for name, a, b in spans
        ]


def _day(text: str | None, name: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FilterError(f"{name}: a date as YYYY-MM-DD, got {text!r}") from None


@dataclass(frozen=True)
class Tile:
    metric: str  # the report field, as the API names it
    title: str
    value: Any  # Money, float or None: the API's own value
    before: Any
    change: float | None
    note: str = ""
    kind: str = "money"  # money, ms, rate


@dataclass
class CurrencyView:
    """One currency's figures (a report never adds two currencies)."""

    currency: str
    row: ReportRow
    before: ReportRow | None
    tiles: list[Tile]
    days: list[ReportRow] = field(default_factory=list)


@dataclass
class TenantView:
    tenant: str
    filters: Filters
    use_cases: list[str]
    what_if_books: list[str]
    currencies: list[CurrencyView]
    alerts: list[dict[str, Any]]
    invoices: list[InvoiceSummary]
    drafts: list[str]  # months in the range with no finalized invoice
    budgets: list[dict[str, Any]]
    break_even: list[BreakEven]


def _tiles(now: ReportRow, before: ReportRow | None) -> list[Tile]:
    def loaded(row: ReportRow | None) -> Money | None:
        if row is None or row.fully_loaded is None:
            return None
        if not row.fully_loaded.idle.nanos and not row.fully_loaded.overhead.nanos:
            return None  # no capacity or overhead recorded: the same as direct
        return row.fully_loaded.cost_per_delivered_render

    tiles = [
        Tile(
            "cost_per_delivered_render",
            "Cost per delivered render",
            now.cost_per_delivered_render,
            before.cost_per_delivered_render if before else None,
            change(now.cost_per_delivered_render, before.cost_per_delivered_render)
            if before
            else None,
            "direct: the events' cost",
        )
    ]
    full = loaded(now)
    if full is not None:
        old = loaded(before)
        tiles.append(
            Tile(
                "fully_loaded.cost_per_delivered_render",
                "Fully-loaded per render",
                full,
                old,
                change(full, old),
                "with idle capacity and overheads",
            )
        )
    p95, old_p95 = now.latency_p95_ms, before.latency_p95_ms if before else None
    tiles += [
        Tile(
            "latency_p95_ms",
            "p95 latency",
            p95,
            old_p95,
            None if p95 is None or not old_p95 else round((p95 - old_p95) / old_p95, 6),
            kind="ms",
        ),
        Tile(
            "cache_hit_rate",
            "Cache hit rate",
            now.cache_hit_rate,
            before.cache_hit_rate if before else None,
            None,
            "per render and stage looked up",
            kind="rate",
        ),
        Tile(
            "utilisation",
            "Utilisation",
            now.utilisation,
            before.utilisation if before else None,
            None,
            "busy share of the GPU pools used" if now.utilisation is not None else "no capacity",
            kind="rate",
        ),
    ]
    return tiles


def _pick(rows: list[ReportRow], use_case: str | None) -> list[ReportRow]:
    return [r for r in rows if use_case is None or r.use_case == use_case]


def what_if_books(raw: psycopg.Connection[Any]) -> list[str]:
    rows = raw.execute(
        "SELECT name FROM price_versions WHERE kind = 'what_if' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _use_cases(raw: psycopg.Connection[Any], tenant: str, f: Filters) -> list[str]:
    rows = raw.execute(
        "SELECT DISTINCT use_case FROM daily_rollup WHERE tenant_id = %s AND day >= %s "
        "AND day < %s ORDER BY 1",
        (tenant, f.start, f.end),
    ).fetchall()
    found = [r[0] for r in rows]
    return found if f.use_case is None or f.use_case in found else [*found, f.use_case]


def _fx(raw: psycopg.Connection[Any], f: Filters, first: date) -> FxTable | None:
    return fx_for(raw, f.currency, None, first, f.end)


def tenant_view(
    raw: psycopg.Connection[Any], ledger: Ledger, tenant: str, f: Filters, *, admin: bool
) -> TenantView:
    """Everything a tenant's page shows; raises the API's HTTP errors (422 for a currency
    without rates, 404 for an unknown book) so the page answers as the API would."""
    books = what_if_books(raw)
    if f.what_if is None and books:
        f = replace(f, what_if=books[0])
    book = None
    version = ledger.price_version(f.what_if) if f.what_if else None
    if f.what_if and version is None:
        raise http_error(f"what_if: no price book named {f.what_if!r}", 404)
    if version is not None:
        prices = {sku: p.unit_price_nanos for sku, p in version.prices.items()}
        book = WhatIfBook(version.currency, prices)
    outer: tuple[str, ...] = ("use_case",) if f.use_case else ()
    q = ReportQuery(tenant, f.start, f.end, outer, f.currency)
    fx = _fx(raw, f, q.previous().start)
    named = (f.what_if, book) if f.what_if and book else None
    try:
        rows = page_rows(ledger.engine, rollup_state(raw), q, named, fx)
    except MissingRate as exc:
        raise missing_rate(exc) from exc
    before = {r.currency: r for r in _pick(rows.before, f.use_case)}
    by_day = _pick(rows.days, f.use_case)
    views = []
    for row in _pick(rows.now, f.use_case):
        old = before.get(row.currency)
        view = CurrencyView(row.currency, row, old, _tiles(row, old))
        view.days = [r for r in by_day if r.currency == row.currency]
        views.append(view)
    found = alerts(raw, tenant=tenant, limit=50)
    if f.use_case:
        found = [a for a in found if a["use_case"] in (f.use_case, "*")]
    invoices = list_invoices(raw, tenant)
    done = {i.period for i in invoices}
    days = range((f.end - f.start).days)
    months = sorted({(f.start + timedelta(d)).isoformat()[:7] for d in days})
    this_month = datetime.now(UTC).date().isoformat()[:7]
    drafts = [m for m in months if m not in done and m <= this_month]
    return TenantView(
        tenant=tenant,
        filters=f,
        use_cases=_use_cases(raw, tenant, f),
        what_if_books=books,
        currencies=views,
        alerts=found[:20],
        invoices=invoices,
        drafts=drafts,
        budgets=[s.as_dict() for s in statuses(raw, tenant, datetime.now(UTC))],
        break_even=_break_even(raw, ledger, f) if admin and f.what_if else [],
    )


def _break_even(raw: psycopg.Connection[Any], ledger: Ledger, f: Filters) -> list[BreakEven]:
    """Each pool's break-even against the what-if book, where one exists (a pool with
    renders in the period, paid in the book's currency): what GET /v1/break-even answers."""
    assert f.what_if is not None
    book = ledger.price_version(f.what_if)
    out = []
    pools = read_pools(raw)
    for name in pools.names:
        try:
            result, _ = assess(raw, book, name, f.what_if, "render.image", f.start, f.end)
        except BreakEvenRefused:
            continue
        if result.renders_in_period:
            out.append(result)
    return out


@dataclass
class AdminView:
    filters: Filters
    ranking: list[TenantSpend]
    pools: list[PoolRow]
    alerts: list[dict[str, Any]]

    @property
    def currencies(self) -> list[str]:
        return sorted({line.currency for line in self.ranking})

    def by_spend(self, currency: str) -> list[TenantSpend]:
        return [t for t in self.ranking if t.currency == currency]

    def by_change(self, currency: str) -> list[TenantSpend]:
        lines = [
            t for t in self.by_spend(currency) if t.cost_per_delivered_render_change is not None
        ]
        return sorted(lines, key=lambda t: -abs(t.cost_per_delivered_render_change or 0.0))

    def pools_by_utilisation(self) -> list[PoolRow]:
        """A pool's utilisation is over every currency its usage was priced in: one row."""
        seen: dict[str, PoolRow] = {}
        for p in self.pools:
            seen.setdefault(p.pool, p)
        return sorted(seen.values(), key=lambda p: -(p.utilisation or 0.0))


def admin_view(raw: psycopg.Connection[Any], f: Filters) -> AdminView:
    """Every tenant ranked by spend and by change in cost per render (GET /v1/report/tenants)
    and the pools by utilisation (GET /v1/pools/report)."""
    fx = _fx(raw, f, f.start - (f.end - f.start))
    try:
        ranking = rank_tenants(raw, f.start, f.end, f.currency, fx)
    except MissingRate as exc:
        raise missing_rate(exc) from exc
    return AdminView(
        filters=f,
        ranking=ranking,
        pools=pool_rows(raw, f.start, f.end),
        alerts=alerts(raw, status="open", limit=20),
    )

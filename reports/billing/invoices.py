"""Invoices: drafted from the log on request, finalized once, corrected by credit notes.

A finalized invoice records the last log position it covers. Events that arrive later
for a finalized month never change it: the next invoice recomputes that month with them
and bills the difference as a prior-period adjustment.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from ledger.fx import FxError, fx_table
from ledger.journal import head as ledger_head
from ledger.money import format_nanos
from reports.billing.document import (
    CostBasis,
    Customer,
    Invoice,
    InvoicePlan,
    InvoiceWindow,
    Positions,
    money,
)
from reports.billing.months import Window, month, next_month, previous_month
from reports.billing.parties import BillingProfile, Issuer, profile_for
from reports.billing.plans import Plan, plan_for
from reports.billing.pricing import (
    Line,
    Rates,
    UnbillableCurrency,
    Usage,
    adjustment_lines,
    billed_outcomes,
    commitment_topup,
    price_usage,
)
from reports.billing.tax import tax_lines
from reports.billing.usage import (
    allocation_head,
    late_allocation_months,
    late_months,
    read_allocated,
    read_usage,
    window_of,
)


class InvoiceError(ValueError):
    """An invoice operation refused, with the reason; nothing was written."""


@dataclass(frozen=True, slots=True)
class Finalized:
    period: date
    through_seq: int
    allocations_through: int = 0


Shares = dict[tuple[str, str], int]


def _charge(
    plan: Plan, usage: list[Usage], allocated: Shares | None = None, rates: Rates | None = None
) -> list[Line]:
    lines = price_usage(plan, usage, allocated, rates)
    topup = commitment_topup(plan, sum(line.amount_minor for line in lines))
    return [*lines, topup] if topup else lines


def _rates(
    raw: psycopg.Connection[Any],
    plan: Plan,
    window: Window,
    usage: list[Usage],
    *allocated: Shares | None,
) -> Rates:
    """FX rates into the plan's currency for metered currencies other than its own and USD
    (USD goes by the plan's agreed ``usd_rate``): the last published at the window's end.
    A currency without one is left out, and pricing refuses it by name."""
    seen = {u.currency for u in usage} | {c for a in allocated if a for _, c in a}
    needed = seen - {plan.currency, "USD"}
    if not needed:
        return {}
    last = (window.end - timedelta(microseconds=1)).date()
    try:
        fx = fx_table(raw, None, window.start.date(), last, [*needed, plan.currency])
    except FxError:
        return {}
    out = {}
    for currency in needed:
        try:
            out[currency] = fx.factor(currency, plan.currency, last)
        except FxError:
            continue
    return out


def _adjustments(
    raw: psycopg.Connection[Any],
    tenant: str,
    months: set[date],
    last: Finalized,
    through: int,
    allocations: int,
) -> list[Line]:
    """Late events of months up to the last finalized one: each month priced now and as
    last billed. Months are finalized in order, so such a month is either finalized or
    before the tenant's first invoice; the latter were never invoiced, so their late usage
    is billed at their plan's prices without a commitment top-up."""
    candidates = {m for utc in months for m in (previous_month(utc), utc, next_month(utc))}
    out: list[Line] = []
    for period in sorted(p for p in candidates if p <= last.period):
        plan = plan_for(raw, tenant, period)
        window = window_of(raw, tenant, period, plan)
        charge = _charge if window.finalized else price_usage
        now = read_usage(raw, window, through, tenants=[tenant]).get(tenant, [])
        before = read_usage(raw, window, last.through_seq, tenants=[tenant]).get(tenant, [])
        shares: tuple[Shares | None, Shares | None] = (None, None)
        if plan.cost_basis == "fully_loaded":
            shares = (
                read_allocated(raw, tenant, window, allocations),
                read_allocated(raw, tenant, window, last.allocations_through),
            )
        rates = _rates(raw, plan, window, now, *shares)
        out += adjustment_lines(
            month(period),
            charge(plan, now, shares[0], rates),
            charge(plan, before, shares[1], rates),
        )
    return out


def last_finalized(raw: psycopg.Connection[Any], tenant: str, before: date) -> Finalized | None:
    row = raw.execute(
        "SELECT period, through_seq, "
        "coalesce((document->'positions'->>'allocations_through')::bigint, 0) "
        "FROM invoices WHERE tenant_id = %s AND period < %s ORDER BY period DESC LIMIT 1",
        (tenant, before),
    ).fetchone()
    return Finalized(row[0], int(row[1]), int(row[2])) if row else None


def last_finalized_all(
    raw: psycopg.Connection[Any], tenants: list[str], before: date
) -> dict[str, Finalized]:
    """``last_finalized`` of many tenants in one query (those without one are left out)."""
    return {
        t: Finalized(period, int(through), int(allocations))
        for t, period, through, allocations in raw.execute(
            "SELECT DISTINCT ON (tenant_id) tenant_id, period, through_seq, "
            "coalesce((document->'positions'->>'allocations_through')::bigint, 0) "
            "FROM invoices WHERE tenant_id = ANY(%s) AND period < %s "
            "ORDER BY tenant_id, period DESC",
            (tenants, before),
        )
    }


def credit_balances(
    raw: psycopg.Connection[Any], plans: Mapping[str, Plan], windows: Mapping[str, Window]
) -> dict[str, int]:
    """``_credit_balance`` of every tenant of ``windows`` in one query."""
    tenants = list(windows)
    return {
        t: int(balance)
        for t, balance in raw.execute(
            """
            SELECT w.t,
                   (SELECT coalesce(sum(amount_minor), 0) FROM credit_grants
                    WHERE tenant_id = w.t AND currency = w.c AND granted_on < w.e)
                 - (SELECT coalesce(sum(credits_applied_minor), 0) FROM invoices
                    WHERE tenant_id = w.t AND currency = w.c AND period <> w.p)
            FROM unnest(%s::text[], %s::text[], %s::date[], %s::date[]) AS w(t, c, e, p)
            """,
            (
                tenants,
                [plans[t].currency for t in tenants],
                [windows[t].end.date() for t in tenants],
                [windows[t].period for t in tenants],
            ),
        )
    }


def _credit_balance(raw: psycopg.Connection[Any], plan: Plan, window: Window) -> int:
    row = raw.execute(
        """
        SELECT (SELECT coalesce(sum(amount_minor), 0) FROM credit_grants
                WHERE tenant_id = %(t)s AND currency = %(c)s AND granted_on < %(end)s)
             - (SELECT coalesce(sum(credits_applied_minor), 0) FROM invoices
                WHERE tenant_id = %(t)s AND currency = %(c)s AND period <> %(p)s)
        """,
        {"t": plan.tenant, "c": plan.currency, "end": window.end.date(), "p": window.period},
    ).fetchone()
    return int(row[0]) if row else 0


def compute(
    raw: psycopg.Connection[Any],
    tenant: str,
    period: date,
    through_seq: int,
    *,
    plan: Plan | None = None,
    usage: list[Usage] | None = None,
    late: set[date] | None = None,
    window: Window | None = None,
    issuer: Issuer | None = None,
    issued_on: date | None = None,
    profiles: Mapping[str, BillingProfile] | None = None,
    finalized: Mapping[str, Finalized] | None = None,
    credits: Mapping[str, int] | None = None,
) -> Invoice:
    """The invoice of ``tenant`` for ``period`` over the log up to ``through_seq``.

    ``plan``, ``usage``, ``late`` and ``window`` may be handed in by a caller that read
    them for many tenants at once; otherwise they are read here. So may ``finalized`` (each
    tenant's last finalized invoice before ``period``, ``last_finalized_all``) and
    ``credits`` (its credit balance, ``credit_balances``). The billing profile is
    the one in force on ``issued_on`` (today for a draft): from ``profiles``, read for a
    batch on that day, when given.
    """
    plan = plan or plan_for(raw, tenant, period)
    if profiles is not None:
        profile = profiles.get(tenant)
    else:
        profile = profile_for(raw, tenant, issued_on or datetime.now(UTC).date())
    if profile is not None and profile.currency not in (None, plan.currency):
        raise InvoiceError(
            f"{tenant} {month(period)}: the billing profile invoices in {profile.currency} "
            f"but the plan bills in {plan.currency}; add a plan or profile version that agree"
        )
    window = window or window_of(raw, tenant, period, plan)
    if usage is None:
        usage = read_usage(raw, window, through_seq, tenants=[tenant]).get(tenant, [])
    allocations = allocation_head(raw) if plan.cost_basis == "fully_loaded" else None
    allocated = None
    if allocations is not None:
        allocated = read_allocated(raw, tenant, window, allocations)
    try:
        lines = _charge(plan, usage, allocated, _rates(raw, plan, window, usage, allocated))
        if finalized is not None:
            last = finalized.get(tenant)
        else:
            last = last_finalized(raw, tenant, period)
        if last is not None:
            if late is None:
                late = late_months(raw, [tenant], last.through_seq, through_seq, window.start).get(
                    tenant, set()
                )
            if last.allocations_through and allocations:
                moved = late_allocation_months(raw, tenant, last.allocations_through, window.start)
                late = late | moved
            lines += _adjustments(raw, tenant, late, last, through_seq, allocations or 0)
    except UnbillableCurrency as exc:
        raise InvoiceError(str(exc)) from exc
    digits = plan.minor_digits
    sums: dict[str, int] = defaultdict(int)
    for line in lines:
        sums[line.kind] += line.amount_minor
    net = sums["usage"] + sums["allocation"] + sums["commitment"] + sums["adjustment"]
    taxes = []
    if profile is not None and not profile.reverse_charge:
        taxes = tax_lines(net, profile.tax_rates, digits)
    total = net + sum(t.amount_minor for t in taxes)
    balance = credits[tenant] if credits is not None else _credit_balance(raw, plan, window)
    credit = max(0, min(balance, total))
    renders: dict[str, int] = defaultdict(int)
    for u in usage:
        renders[u.outcome or "no_outcome"] += u.renders
    # The cost basis is in USD, as it always was; other currencies' metered cost beside it.
    usd = [u for u in usage if u.currency == "USD"]
    metered = sum(u.cost_nanos for u in usd)
    billed = billed_outcomes(plan)
    billed_nanos = sum(u.cost_nanos for u in usd if u.outcome in billed)
    others: dict[str, int] = defaultdict(int)
    for u in usage:
        if u.currency != "USD":
            others[u.currency] += u.cost_nanos
    return Invoice(
        tenant=tenant,
        period=month(period),
        status="draft",
        number=None,
        issued_on=None,
        currency=plan.currency,
        timezone=plan.timezone,
        window=InvoiceWindow(start=window.start.isoformat(), end=window.end.isoformat()),
        plan=InvoicePlan(
            name=plan.name,
            effective_from=plan.effective_from,
            sha256=plan.digest(),
            failed_renders=plan.failed_renders,
        ),
        positions=Positions(
            first_seq=min((u.first_seq for u in usage), default=None),
            last_seq=max((u.last_seq for u in usage), default=None),
            through_seq=through_seq,
            adjustments_after_seq=last.through_seq if last else None,
            allocations_through=allocations,
        ),
        cost_basis=CostBasis(
            currency="USD",
            metered=format_nanos(metered),
            metered_nanos=metered,
            billed_nanos=billed_nanos,
            not_billed_nanos=metered - billed_nanos,
            events=sum(u.events for u in usage),
            renders=dict(sorted(renders.items())),
            by_use_case=_by_use_case(usd),
            allocated_nanos=None
            if allocated is None
            else sum(n for (_, c), n in allocated.items() if c == "USD"),
            other_currencies=dict(sorted(others.items())) or None,
        ),
        lines=[line.as_invoice_line(digits) for line in lines],
        subtotal=money(sums["usage"] + sums["allocation"], digits),
        commitment_topup=money(sums["commitment"], digits),
        adjustments=money(sums["adjustment"], digits),
        credits_applied=money(credit, digits),
        credits_applied_minor=credit,
        total=money(total, digits),
        total_minor=total,
        issuer=issuer.party() if issuer else None,
        payment_instructions=list(issuer.payment_instructions) if issuer else None,
        customer=_customer(profile),
        payment_terms_days=profile.payment_terms_days if profile else 0,
        reverse_charge=bool(profile and profile.reverse_charge),
        net=money(net, digits),
        taxes=taxes,
        tax=money(total - net, digits),
        tax_minor=total - net,
        amount_due=money(total - credit, digits),
        amount_due_minor=total - credit,
        content_sha256="",
    ).sealed()


def _customer(profile: BillingProfile | None) -> Customer | None:
    if profile is None:
        return None
    party = profile.party().model_dump()
    return Customer(**party, profile_from=profile.effective_from, profile_sha256=profile.digest())


def _by_use_case(usage: list[Usage]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for u in usage:
        out[u.use_case] += u.cost_nanos
    return dict(sorted(out.items()))


def draft(
    raw: psycopg.Connection[Any], tenant: str, period: date, issuer: Issuer | None = None
) -> Invoice:
    return compute(raw, tenant, period, ledger_head(raw), issuer=issuer)

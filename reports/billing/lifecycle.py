"""An invoice's life: a draft recomputed on request, finalized once in month order, then
corrected only by credit notes. Finalization and credit notes take a per-tenant lock, so
two callers cannot number two invoices alike or over-credit one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.journal import head as ledger_head
from reports.billing.invoices import (
    Document,
    InvoiceError,
    compute,
    draft,
    money,
    month,
    seal,
)
from reports.billing.plans import Plan, default_plan, plan_for
from reports.billing.pricing import Usage, to_minor
from reports.billing.usage import (
    Window,
    late_months,
    next_month,
    previous_month,
    read_usage,
)


def invoice(raw: psycopg.Connection[Any], tenant: str, period: date) -> Document:
    """The finalized invoice with its credit notes if there is one, else a fresh draft."""
    row = raw.execute(
        "SELECT document FROM invoices WHERE tenant_id = %s AND period = %s", (tenant, period)
    ).fetchone()
    if row is None:
        return draft(raw, tenant, period)
    return {**row[0], "credit_notes": credit_notes(raw, tenant, period)}


def draft_all(
    raw: psycopg.Connection[Any],
    period: date,
    tenants: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Document]:
    """Every tenant's invoice for ``period`` (finalized ones as they are): one read of the
    month per time zone in use, not one per tenant."""
    through = ledger_head(raw)
    if tenants is None:
        tenants = [
            r[0]
            for r in raw.execute(
                "SELECT tenant_id FROM tenants WHERE created_at < %s ORDER BY tenant_id",
                (datetime.combine(next_month(next_month(period)), datetime.min.time(), UTC),),
            )
        ]
    plans = {
        t: Plan.model_validate(p)
        for t, p in raw.execute(
            "SELECT DISTINCT ON (tenant_id) tenant_id, plan FROM billing_plans "
            "WHERE effective_from <= %s AND tenant_id = ANY(%s) "
            "ORDER BY tenant_id, effective_from DESC",
            (period, tenants),
        )
    }
    plans.update({t: default_plan(t, period) for t in tenants if t not in plans})
    finalized = {
        r[0]
        for r in raw.execute(
            "SELECT tenant_id FROM invoices WHERE period = %s AND tenant_id = ANY(%s)",
            (period, tenants),
        )
    }
    open_tenants = [t for t in tenants if t not in finalized]
    zones: dict[str, list[str]] = defaultdict(list)
    for t in open_tenants:
        zones[plans[t].timezone].append(t)
    usage: dict[str, list[Usage]] = {}
    for zone, members in zones.items():
        window = Window(period, zone)
        if zone == "UTC" and len(members) > 100:
            others = [t for t in tenants if plans[t].timezone != "UTC" or t in finalized]
            usage.update(read_usage(raw, window, through, exclude=others))
        else:
            usage.update(read_usage(raw, window, through, tenants=members))
    lasts = {
        r[0]: int(r[1])
        for r in raw.execute(
            "SELECT DISTINCT ON (tenant_id) tenant_id, through_seq FROM invoices "
            "WHERE period < %s AND tenant_id = ANY(%s) ORDER BY tenant_id, period DESC",
            (period, open_tenants),
        )
    }
    late: dict[str, set[date]] = {}
    if lasts:
        # The month's last start on Earth (UTC−12): a superset; _adjustments re-checks.
        latest_start = Window(period, "Etc/GMT+12").start
        late = late_months(raw, list(lasts), min(lasts.values()), through, latest_start)
    docs = []
    for i, t in enumerate(tenants, 1):
        if t in finalized:
            docs.append(invoice(raw, t, period))
        else:
            docs.append(
                compute(
                    raw,
                    t,
                    period,
                    through,
                    plan=plans[t],
                    usage=usage.get(t, []),
                    late=late.get(t, set()),
                )
            )
        if progress:
            progress(i, len(tenants))
    return docs


def finalize(
    raw: psycopg.Connection[Any],
    tenant: str,
    period: date,
    now: datetime | None = None,
    prepared: Document | None = None,
) -> tuple[Document, bool]:
    """Make the invoice immutable; (document, True) the first time, (document, False) after.

    ``prepared`` is a draft already computed (by ``draft_all``, for many tenants in one
    read): it covers the log through its own ``through_seq``, and whatever arrives after
    that is billed next month as an adjustment, exactly as if it had arrived a moment later.
    """
    now = now or datetime.now(UTC)
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(hashtext('invoice:' || %s))", (tenant,))
        row = raw.execute(
            "SELECT document FROM invoices WHERE tenant_id = %s AND period = %s", (tenant, period)
        ).fetchone()
        if row is not None:
            return row[0], False
        plan = plan_for(raw, tenant, period)
        window = Window(period, plan.timezone)
        if window.end > now:
            raise InvoiceError(
                f"{tenant} {month(period)}: the month is not over until {window.end.isoformat()}"
            )
        latest = raw.execute(
            "SELECT max(period), count(*) FROM invoices WHERE tenant_id = %s", (tenant,)
        ).fetchone()
        assert latest is not None
        if latest[0] is not None and latest[0] > period:
            raise InvoiceError(
                f"{tenant} {month(period)}: {month(latest[0])} is already finalized; "
                "months are finalized in order"
            )
        if latest[0] is not None and latest[0] != previous_month(period):
            raise InvoiceError(
                f"{tenant} {month(period)}: finalize {month(next_month(latest[0]))} first"
            )
        if prepared is not None and prepared["status"] == "draft":
            doc = prepared
        else:
            doc = compute(raw, tenant, period, ledger_head(raw), plan=plan)
        number = f"RL-{period:%Y-%m}-{int(latest[1]) + 1:04d}"
        doc = seal(
            {**doc, "status": "finalized", "number": number, "issued_on": now.date().isoformat()}
        )
        raw.execute(
            "INSERT INTO invoices (tenant_id, period, number, currency, through_seq, total_minor, "
            "credits_applied_minor, document, content_sha256) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                tenant,
                period,
                number,
                doc["currency"],
                doc["positions"]["through_seq"],
                doc["total_minor"],
                doc["credits_applied_minor"],
                orjson.dumps(doc).decode(),
                doc["content_sha256"],
            ),
        )
        return doc, True


def credit_notes(raw: psycopg.Connection[Any], tenant: str, period: date) -> list[dict[str, Any]]:
    rows = raw.execute(
        "SELECT number, amount_minor, currency, reason, created_at FROM credit_notes "
        "WHERE tenant_id = %s AND period = %s ORDER BY number",
        (tenant, period),
    ).fetchall()
    return [
        {"number": n, "amount_minor": a, "currency": c, "reason": r, "created_at": t.isoformat()}
        for n, a, c, r, t in rows
    ]


def issue_credit_note(
    raw: psycopg.Connection[Any], tenant: str, period: date, amount: Decimal, reason: str
) -> dict[str, Any]:
    """A correction to a finalized invoice; all notes together never exceed its total."""
    if not reason.strip():
        raise InvoiceError("reason: say why the credit is given")
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(hashtext('invoice:' || %s))", (tenant,))
        row = raw.execute(
            "SELECT number, currency, total_minor, document->'window' FROM invoices "
            "WHERE tenant_id = %s AND period = %s",
            (tenant, period),
        ).fetchone()
        if row is None:
            raise InvoiceError(
                f"{tenant} {month(period)}: no finalized invoice; a draft is corrected by "
                "recomputing it"
            )
        number, currency, total, _ = row
        digits = Plan(tenant=tenant, effective_from=period, currency=currency).minor_digits
        minor = to_minor(amount, digits)
        if minor <= 0 or minor != amount.scaleb(digits):
            raise InvoiceError(f"amount: a positive amount in whole minor units, got {amount}")
        notes = credit_notes(raw, tenant, period)
        issued = sum(n["amount_minor"] for n in notes)
        if issued + minor > max(total, 0):
            raise InvoiceError(
                f"amount: {money(issued + minor, digits)} {currency} in credit notes would "
                f"exceed the invoice total of {money(total, digits)}"
            )
        note_number = f"{number}-CN{len(notes) + 1:02d}"
        raw.execute(
            "INSERT INTO credit_notes (number, tenant_id, period, amount_minor, currency, reason) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (note_number, tenant, period, minor, currency, reason.strip()),
        )
    return credit_notes(raw, tenant, period)[-1]


def list_invoices(raw: psycopg.Connection[Any], tenant: str) -> list[dict[str, Any]]:
    rows = raw.execute(
        "SELECT period, number, currency, total_minor, content_sha256, created_at FROM invoices "
        "WHERE tenant_id = %s ORDER BY period",
        (tenant,),
    ).fetchall()
    return [
        {
            "period": month(p),
            "number": n,
            "currency": c,
            "total_minor": t,
            "content_sha256": h,
            "finalized_at": at.isoformat(),
            "credit_notes": credit_notes(raw, tenant, p),
        }
        for p, n, c, t, h, at in rows
    ]


@dataclass(frozen=True, slots=True)
class Finalization:
    tenant: str
    document: Document | None
    created: bool
    error: str | None = None


def finalize_all(
    engine: Engine,
    period: date,
    tenants: list[str] | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Finalization]:
    """Finalize many tenants' invoices from one batch of drafts; each tenant's in its own
    transaction, so one refusal (a month out of order) stops no other."""
    with connection(engine) as raw:
        drafts = draft_all(raw, period, tenants)
    out = []
    for i, doc in enumerate(drafts, 1):
        tenant = doc["tenant"]
        try:
            with connection(engine, transaction=True) as raw:
                final, created = finalize(raw, tenant, period, now, prepared=doc)
            out.append(Finalization(tenant, final, created))
        except InvoiceError as exc:
            out.append(Finalization(tenant, None, False, str(exc)))
        if progress:
            progress(i, len(drafts))
    return out

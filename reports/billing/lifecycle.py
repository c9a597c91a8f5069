"""An invoice's life: a draft recomputed on request, finalized once in month order, then
corrected only by credit notes. Finalization and credit notes take a per-tenant lock, so
two callers cannot number two invoices alike or over-credit one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger import encoding
from ledger.connections import connection
from ledger.journal import head as ledger_head
from ledger.locks import INVOICE, scoped
from reports import history
from reports.archive_settings import HasArchive
from reports.billing import notices
from reports.billing.credit_notes import credit_notes
from reports.billing.document import Invoice, InvoiceSummary
from reports.billing.invoices import (
    InvoiceError,
    compute,
    credit_balances,
    draft,
    last_finalized_all,
)
from reports.billing.listing import list_all
from reports.billing.months import (
    Window,
    latest_start,
    month,
    next_month,
    previous_month,
    utc_window,
)
from reports.billing.numbers import take_number
from reports.billing.parties import Issuer, profiles_for
from reports.billing.plans import plan_for, plans_for
from reports.billing.pricing import Usage
from reports.billing.usage import (
    first_usage_before,
    late_months,
    month_of,
    read_usage,
    read_usage_history,
    window_of,
    windows_of,
)


def invoice(
    raw: psycopg.Connection[Any], tenant: str, period: date, issuer: Issuer | None = None
) -> Invoice:
    """The finalized invoice with its credit notes if there is one, else a fresh draft."""
    row = raw.execute(
        "SELECT document FROM invoices WHERE tenant_id = %s AND period = %s", (tenant, period)
    ).fetchone()
    if row is None:
        return draft(raw, tenant, period, issuer)
    notes = credit_notes(raw, tenant, period)
    return Invoice.model_validate(row[0]).model_copy(update={"credit_notes": notes})


def draft_all(
    raw: psycopg.Connection[Any],
    period: date,
    tenants: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    issuer: Issuer | None = None,
    issued_on: date | None = None,
    refused: dict[str, str] | None = None,
    past: history.History | None = None,
) -> list[Invoice]:
    """Every tenant's invoice for ``period`` (finalized ones as they are): one read of the
    month per time zone in use, not one per tenant; with ``past`` (``history.opened``)
    holding an archive, one read of the archived files that may hold the month and of the
    hot tail, every tenant in its own window (``read_usage_history``).

    With ``refused``, a tenant whose draft cannot be priced (say, a currency without a
    rate) is left out and its reason kept there, so one tenant never stops the batch.
    """
    through = ledger_head(raw)
    if tenants is None:
        tenants = [
            r[0]
            for r in raw.execute(
                "SELECT tenant_id FROM tenants WHERE created_at < %s ORDER BY tenant_id",
                (datetime.combine(next_month(next_month(period)), datetime.min.time(), UTC),),
            )
        ]
    plans = plans_for(raw, tenants, period)
    profiles = profiles_for(raw, tenants, issued_on or datetime.now(UTC).date())
    finalized = {
        r[0]
        for r in raw.execute(
            "SELECT tenant_id FROM invoices WHERE period = %s AND tenant_id = ANY(%s)",
            (period, tenants),
        )
    }
    open_tenants = [t for t in tenants if t not in finalized]
    windows = windows_of(raw, open_tenants, period, plans)
    # One read per distinct window (in practice, per time zone in use).
    groups: dict[tuple[datetime, datetime], list[str]] = defaultdict(list)
    for t in open_tenants:
        groups[windows[t].start, windows[t].end].append(t)
    utc = utc_window(period)
    usage: dict[str, list[Usage]] = {}
    if past is not None and past.archive.last_seq > 0:
        groups = {}  # the archive holds part of the log: read through it instead
        usage = read_usage_history(raw, past, {t: windows[t] for t in open_tenants}, through)
    for bounds, members in groups.items():
        window = windows[members[0]]
        if bounds == (utc.start, utc.end) and len(members) > 100:
            inside = set(members)
            others = [t for t in tenants if t not in inside]
            usage.update(read_usage(raw, window, through, exclude=others))
        else:
            usage.update(read_usage(raw, window, through, tenants=members))
    finalized_before = last_finalized_all(raw, open_tenants, period)
    lasts = {t: f.through_seq for t, f in finalized_before.items()}
    credits = credit_balances(raw, plans, {t: windows[t] for t in open_tenants})
    late: dict[str, set[date]] = {}
    if lasts:
        # The month's last possible start: a superset; _adjustments re-checks.
        late = late_months(raw, list(lasts), min(lasts.values()), through, latest_start(period))
    docs = []
    for i, t in enumerate(tenants, 1):
        try:
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
                        window=windows[t],
                        issuer=issuer,
                        issued_on=issued_on,
                        profiles=profiles,
                        finalized=finalized_before,
                        credits=credits,
                    )
                )
        except InvoiceError as exc:
            if refused is None:
                raise
            refused[t] = str(exc)
        if progress:
            progress(i, len(tenants))
    return docs


@dataclass(frozen=True, slots=True)
class Prepared:
    """A draft computed in a batch, with the tenant's earliest event before the month
    (``None``: none, or the tenant has invoices) read up to the same ``through_seq``."""

    document: Invoice
    earliest: datetime | None


def finalize(
    raw: psycopg.Connection[Any],
    tenant: str,
    period: date,
    now: datetime | None = None,
    prepared: Prepared | None = None,
    issuer: Issuer | None = None,
) -> tuple[Invoice, bool]:
    """Make the invoice immutable; (document, True) the first time, (document, False) after.

    ``prepared`` is a draft already computed (by ``draft_all``, for many tenants in one
    read): it covers the log through its own ``through_seq``, and whatever arrives after
    that is billed next month as an adjustment, exactly as if it had arrived a moment later.
    It is recomputed if its window or its last finalization changed since.

    A tenant's first invoice is refused while an earlier month has usage: that month
    would otherwise never be billed. Later, months are finalized in order; usage that
    arrives late for a month before the first invoice is billed as an adjustment.
    """
    now = now or datetime.now(UTC)
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (scoped(INVOICE, tenant),))
        row = raw.execute(
            "SELECT document FROM invoices WHERE tenant_id = %s AND period = %s", (tenant, period)
        ).fetchone()
        if row is not None:
            return Invoice.model_validate(row[0]), False
        plan = plan_for(raw, tenant, period)
        window = window_of(raw, tenant, period, plan)
        if window.end > now:
            raise InvoiceError(
                f"{tenant} {month(period)}: the month is not over until {window.end.isoformat()}"
            )
        latest = raw.execute(
            "SELECT max(period), count(*), max(through_seq) FILTER (WHERE period = %s) "
            "FROM invoices WHERE tenant_id = %s",
            (previous_month(period), tenant),
        ).fetchone()
        assert latest is not None
        if latest[0] is not None and latest[0] > period:
            raise InvoiceError(
                f"{tenant} {month(period)}: {month(latest[0])} is already finalized; months "
                "are finalized in order (late usage of earlier months is billed as a "
                "prior-period adjustment on the next invoice)"
            )
        if latest[0] is not None and latest[0] != previous_month(period):
            raise InvoiceError(
                f"{tenant} {month(period)}: finalize {month(next_month(latest[0]))} first"
            )
        doc = _still_valid(prepared, window, latest[2], issuer)
        through = doc.positions.through_seq if doc else ledger_head(raw)
        if latest[0] is None:
            if doc is not None and prepared is not None:
                earliest = prepared.earliest
            else:
                earliest = first_usage_before(raw, [tenant], window.start, through).get(tenant)
            if earliest is not None and earliest < window.start:
                unbilled = month(month_of(raw, tenant, earliest))
                raise InvoiceError(
                    f"{tenant} {month(period)}: {unbilled} has usage and is not finalized; "
                    f"finalize {unbilled} first"
                )
        if doc is None:
            doc = compute(
                raw,
                tenant,
                period,
                through,
                plan=plan,
                window=window,
                issuer=issuer,
                issued_on=now.date(),
            )
        number = take_number(raw, "invoice", tenant, period, now.year)
        final: dict[str, Any] = {"status": "finalized", "number": number, "issued_on": now.date()}
        if doc.payment_terms_days is not None:
            final["due_on"] = now.date() + timedelta(days=doc.payment_terms_days)
        doc = doc.model_copy(update=final).sealed()
        raw.execute(
            "INSERT INTO invoices (tenant_id, period, number, currency, through_seq, total_minor, "
            "credits_applied_minor, document, content_sha256) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                tenant,
                period,
                number,
                doc.currency,
                doc.positions.through_seq,
                doc.total_minor,
                doc.credits_applied_minor,
                encoding.dumps(doc.stored()).decode(),
                doc.content_sha256,
            ),
        )
        notices.record(raw, "invoice.finalized", tenant, period, number, _finalized_data(doc))
        return doc, True


def _finalized_data(doc: Invoice) -> dict[str, Any]:
    return {
        "tenant": doc.tenant,
        "period": doc.period,
        "number": doc.number,
        "currency": doc.currency,
        "issued_on": doc.issued_on and doc.issued_on.isoformat(),
        "due_on": doc.due_on and doc.due_on.isoformat(),
        "total": doc.total,
        "amount_due": doc.amount_due or doc.total,
    }


def _still_valid(
    prepared: Prepared | None, window: Window, last_seq: int | None, issuer: Issuer | None
) -> Invoice | None:
    """The prepared draft, unless a finalization since moved its window or its adjustments,
    or it was drafted for another issuer."""
    if prepared is None or prepared.document.status != "draft":
        return None
    doc = prepared.document
    if doc.issuer != (issuer.party() if issuer else None):
        return None
    bounds = (window.start.isoformat(), window.end.isoformat())
    if (doc.window.start, doc.window.end) != bounds:
        return None
    return doc if doc.positions.adjustments_after_seq == last_seq else None


def list_invoices(raw: psycopg.Connection[Any], tenant: str) -> list[InvoiceSummary]:
    """A tenant's finalized invoices, in month order (months are finalized in order)."""
    return list(list_all(raw, None, None, tenant=tenant))


@dataclass(frozen=True, slots=True)
class Finalization:
    tenant: str
    document: Invoice | None
    created: bool
    error: str | None = None


def finalize_all(
    engine: Engine,
    period: date,
    tenants: list[str] | None = None,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
    issuer: Issuer | None = None,
    archive: HasArchive | None = None,
) -> list[Finalization]:
    """Finalize many tenants' invoices from one batch of drafts; each tenant's in its own
    transaction, so one refusal (a month out of order) stops no other. The drafts read
    archived history from ``archive``'s Iceberg table when given."""
    with history.opened(engine, archive) as past, connection(engine) as raw:
        now = now or datetime.now(UTC)
        refused: dict[str, str] = {}
        drafts = draft_all(
            raw,
            period,
            tenants,
            issuer=issuer,
            issued_on=now.date(),
            refused=refused,
            past=past,
        )
        open_drafts = [d for d in drafts if d.status == "draft"]
        earliest: dict[str, datetime] = {}
        if open_drafts:
            invoiced = {
                r[0]
                for r in raw.execute(
                    "SELECT DISTINCT tenant_id FROM invoices WHERE tenant_id = ANY(%s)",
                    ([d.tenant for d in open_drafts],),
                )
            }
            first = [d.tenant for d in open_drafts if d.tenant not in invoiced]
            through = open_drafts[0].positions.through_seq
            earliest = first_usage_before(raw, first, latest_start(period), through)
    out = [Finalization(t, None, False, why) for t, why in refused.items()]
    for i, doc in enumerate(drafts, 1):
        tenant = doc.tenant
        try:
            with connection(engine, transaction=True) as raw:
                prepared = Prepared(doc, earliest.get(tenant))
                final, created = finalize(
                    raw, tenant, period, now, prepared=prepared, issuer=issuer
                )
            out.append(Finalization(tenant, final, created))
        except InvoiceError as exc:
            out.append(Finalization(tenant, None, False, str(exc)))
        if progress:
            progress(i, len(drafts))
    return out

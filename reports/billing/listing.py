"""Finalized invoices across tenants, for an admin: what a billing team reconciles against."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg

from reports.billing.credit_notes import notes_of
from reports.billing.document import InvoiceSummary
from reports.billing.months import month


class ListedInvoice(InvoiceSummary):
    """A finalized invoice in the list across tenants."""

    tenant: str


def list_all(
    raw: psycopg.Connection[Any],
    start: date | None,
    end: date | None,
    limit: int | None = None,
    tenant: str | None = None,
) -> list[ListedInvoice]:
    """Finalized invoices of the months in [start, end) (either end open), of every tenant or
    one, in the order they were finalized, with their credit notes; two queries in all."""
    rows = raw.execute(
        "SELECT tenant_id, period, number, currency, total_minor, content_sha256, created_at, "
        "(document->>'amount_due_minor')::bigint, (document->>'due_on')::date, "
        "document->'customer'->>'legal_name' "
        "FROM invoices WHERE (%(start)s::date IS NULL OR period >= %(start)s) "
        "AND (%(end)s::date IS NULL OR period < %(end)s) "
        "AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s) "
        "ORDER BY created_at, tenant_id LIMIT %(limit)s",
        {"start": start, "end": end, "limit": limit, "tenant": tenant},
    ).fetchall()
    notes = notes_of(raw, [(r[0], r[1]) for r in rows])
    return [
        ListedInvoice(
            tenant=t,
            period=month(p),
            number=n,
            currency=c,
            total_minor=total,
            content_sha256=h,
            finalized_at=at.isoformat(),
            credit_notes=notes.get((t, p), []),
            amount_due_minor=total if due is None else due,
            due_on=due_on,
            customer=customer,
        )
        for t, p, n, c, total, h, at, due, due_on, customer in rows
    ]

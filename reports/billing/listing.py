"""Finalized invoices across tenants, for an admin: what a billing team reconciles against."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

import psycopg

from reports.billing.document import CreditNote, InvoiceSummary
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
        "SELECT tenant_id, period, number, currency, total_minor, content_sha256, created_at "
        "FROM invoices WHERE (%(start)s::date IS NULL OR period >= %(start)s) "
        "AND (%(end)s::date IS NULL OR period < %(end)s) "
        "AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s) "
        "ORDER BY created_at, tenant_id LIMIT %(limit)s",
        {"start": start, "end": end, "limit": limit, "tenant": tenant},
    ).fetchall()
    notes: dict[tuple[str, date], list[CreditNote]] = defaultdict(list)
    if rows:
        for t, p, n, a, c, r, at in raw.execute(
            "SELECT tenant_id, period, number, amount_minor, currency, reason, created_at "
            "FROM credit_notes WHERE (tenant_id, period) IN "
            "(SELECT unnest(%s::text[]), unnest(%s::date[])) ORDER BY created_at",
            ([r[0] for r in rows], [r[1] for r in rows]),
        ):
            notes[(t, p)].append(
                CreditNote(
                    number=n, amount_minor=a, currency=c, reason=r, created_at=at.isoformat()
                )
            )
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
        )
        for t, p, n, c, total, h, at in rows
    ]

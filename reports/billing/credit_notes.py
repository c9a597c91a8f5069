"""Credit notes: corrections to a finalized invoice, numbered in the issuer's one series,
each naming its invoice; together they never exceed the invoice's total."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from ledger.locks import INVOICE, scoped
from reports.billing import notices
from reports.billing.document import CreditNote, money
from reports.billing.invoices import InvoiceError
from reports.billing.months import month
from reports.billing.numbers import take_number
from reports.billing.plans import MINOR_DIGITS
from reports.billing.pricing import to_minor
from reports.billing.tax import share


def notes_of(
    raw: psycopg.Connection[Any], invoices: list[tuple[str, date]]
) -> dict[tuple[str, date], list[CreditNote]]:
    """The notes of these (tenant, month) invoices, in issue order; each names its invoice
    and the part of it that is tax (the note's amount at the invoice's tax-to-total ratio,
    rounded once half-even)."""
    out: dict[tuple[str, date], list[CreditNote]] = {}
    if not invoices:
        return out
    rows = raw.execute(
        "SELECT c.tenant_id, c.period, c.number, c.amount_minor, c.currency, c.reason, "
        "c.created_at, i.number, i.total_minor, "
        "coalesce((i.document->>'tax_minor')::bigint, 0) "
        "FROM credit_notes c JOIN invoices i USING (tenant_id, period) "
        "WHERE (c.tenant_id, c.period) IN (SELECT unnest(%s::text[]), unnest(%s::date[])) "
        "ORDER BY c.created_at, c.number",
        ([t for t, _ in invoices], [p for _, p in invoices]),
    ).fetchall()
    for tenant, period, n, a, c, r, t, invoice_number, total, tax in rows:
        digits = MINOR_DIGITS.get(c, 2)
        part = share(a, tax, total) if tax and total else 0
        out.setdefault((tenant, period), []).append(
            CreditNote(
                number=n,
                amount_minor=a,
                currency=c,
                reason=r,
                created_at=t.isoformat(),
                invoice_number=invoice_number,
                amount=money(a, digits),
                tax=money(part, digits),
            )
        )
    return out


def credit_notes(raw: psycopg.Connection[Any], tenant: str, period: date) -> list[CreditNote]:
    return notes_of(raw, [(tenant, period)]).get((tenant, period), [])


def issue_credit_note(
    raw: psycopg.Connection[Any], tenant: str, period: date, amount: Decimal, reason: str
) -> CreditNote:
    """A correction to a finalized invoice; all notes together never exceed its total."""
    if not reason.strip():
        raise InvoiceError("reason: say why the credit is given")
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (scoped(INVOICE, tenant),))
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
        _, currency, total, _ = row
        digits = MINOR_DIGITS.get(currency, 2)
        minor = to_minor(amount, digits)
        if minor <= 0 or minor != amount.scaleb(digits):
            raise InvoiceError(f"amount: a positive amount in whole minor units, got {amount}")
        notes = credit_notes(raw, tenant, period)
        issued = sum(n.amount_minor for n in notes)
        if issued + minor > max(total, 0):
            raise InvoiceError(
                f"amount: {money(issued + minor, digits)} {currency} in credit notes would "
                f"exceed the invoice total of {money(total, digits)}"
            )
        note_number = take_number(raw, "credit_note", tenant, period, datetime.now(UTC).year)
        raw.execute(
            "INSERT INTO credit_notes (number, tenant_id, period, amount_minor, currency, reason) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (note_number, tenant, period, minor, currency, reason.strip()),
        )
        note = next(n for n in credit_notes(raw, tenant, period) if n.number == note_number)
        notices.record(
            raw,
            "credit_note.issued",
            tenant,
            period,
            note_number,
            {
                "tenant": tenant,
                "period": month(period),
                "number": note_number,
                "invoice_number": note.invoice_number,
                "currency": currency,
                "amount": note.amount,
                "tax": note.tax,
                "reason": note.reason,
            },
        )
    return note

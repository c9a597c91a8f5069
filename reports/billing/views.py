"""The customer's copy of an invoice: what they buy, never what it cost us.

The stored document (``document.Invoice``) is the internal view: metered cost, positions
in the log, hashes. The customer document is derived from it, so the two cannot disagree:
cost-plus lines become usage of a use case (images and amount; their quantity in cost and
the markup stay inside), the lines the document keeps in one list are laid out once each:
usage lines, subtotal, commitment top-up, adjustments, tax, total, credits, amount due.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from reports.billing.document import (
    CreditNote,
    DecimalText,
    Invoice,
    InvoiceLine,
    TaxLine,
    money,
)
from reports.billing.parties import Party
from reports.billing.plans import MINOR_DIGITS
from reports.billing.tax import REVERSE_CHARGE

View = Literal["customer", "internal"]
_COST_UNITS = ("metered cost", "allocated cost")


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class CustomerLine(_Part):
    description: str
    use_case: str
    period: str | None = Field(description="YYYY-MM of the month an adjustment corrects")
    tier: int | None
    quantity: DecimalText | None
    unit: str | None
    unit_price: DecimalText | None
    amount: DecimalText


class Commitment(_Part):
    description: str
    amount: DecimalText


class CustomerCreditNote(_Part):
    number: str
    invoice_number: str | None
    issued_on: date
    reason: str
    amount: DecimalText
    tax: DecimalText


class CustomerInvoice(_Part):
    """The document sent to the customer (``?view=customer``, the default)."""

    view: Literal["customer"] = "customer"
    number: str | None
    status: Literal["draft", "finalized"]
    period: str
    issued_on: date | None
    due_on: date | None
    payment_terms_days: int | None
    currency: str
    issuer: Party | None
    payment_instructions: list[str]
    customer: Party
    tenant: str
    plan: str
    lines: list[CustomerLine]
    subtotal: DecimalText
    commitment: Commitment | None
    adjustments: list[CustomerLine]
    adjustments_total: DecimalText
    net: DecimalText
    taxes: list[TaxLine]
    tax: DecimalText
    tax_note: str | None = Field(description="The reverse-charge mention, when it applies")
    total: DecimalText
    credits_applied: DecimalText
    amount_due: DecimalText
    credit_notes: list[CustomerCreditNote]


def customer_view(doc: Invoice) -> CustomerInvoice:
    digits = MINOR_DIGITS.get(doc.currency, 2)
    priced = [ln for ln in doc.lines if ln.kind in ("usage", "allocation")]
    adjustments = [ln for ln in doc.lines if ln.kind == "adjustment"]
    topup = next((ln for ln in doc.lines if ln.kind == "commitment"), None)
    net_minor = sum(ln.amount_minor for ln in doc.lines)
    customer = doc.customer.model_dump(include=set(Party.model_fields)) if doc.customer else {}
    return CustomerInvoice(
        number=doc.number,
        status=doc.status,
        period=doc.period,
        issued_on=doc.issued_on,
        due_on=doc.due_on,
        payment_terms_days=doc.payment_terms_days,
        currency=doc.currency,
        issuer=doc.issuer,
        payment_instructions=doc.payment_instructions or [],
        customer=Party.model_validate(customer or {"legal_name": doc.tenant}),
        tenant=doc.tenant,
        plan=doc.plan.name or "custom",
        lines=_merged(priced, digits),
        subtotal=doc.subtotal,
        commitment=Commitment(description=topup.description, amount=topup.amount)
        if topup
        else None,
        adjustments=_merged(adjustments, digits),
        adjustments_total=doc.adjustments,
        net=doc.net or money(net_minor, digits),
        taxes=doc.taxes or [],
        tax=doc.tax or money(0, digits),
        tax_note=REVERSE_CHARGE if doc.reverse_charge else None,
        total=doc.total if doc.amount_due is not None else money(net_minor, digits),
        credits_applied=doc.credits_applied,
        amount_due=money(doc.due_minor, digits),
        credit_notes=[_note(n) for n in doc.credit_notes],
    )


def _merged(lines: list[InvoiceLine], digits: int) -> list[CustomerLine]:
    """Per-image lines as they are; cost-plus lines of one use case (a line per metered
    currency inside) as one line of images and amount, with no cost and no markup, where
    the first of them stood."""
    groups: dict[tuple[str, str, str | None] | int, list[InvoiceLine]] = {}
    for i, line in enumerate(lines):
        cost_plus = line.unit.endswith(_COST_UNITS)
        groups.setdefault((line.kind, line.use_case, line.period) if cost_plus else i, []).append(
            line
        )
    out = []
    for key, group in groups.items():
        first = group[0]
        if isinstance(key, int):
            out.append(
                CustomerLine(
                    description=first.description,
                    use_case=first.use_case,
                    period=first.period,
                    tier=first.tier,
                    quantity=first.quantity,
                    unit=first.unit,
                    unit_price=first.unit_price,
                    amount=first.amount,
                )
            )
            continue
        kind, use_case, period = key
        images = next((ln.images for ln in group if ln.images is not None), None)
        counted = images is not None and kind != "allocation"
        out.append(
            CustomerLine(
                description=_describe(kind, use_case, period),
                use_case=use_case,
                period=period,
                tier=None,
                quantity=str(images) if counted else None,
                unit="image" if counted else None,
                unit_price=None,
                amount=money(sum(ln.amount_minor for ln in group), digits),
            )
        )
    return out


def _describe(kind: str, use_case: str, period: str | None) -> str:
    name = use_case or "all use cases"
    if kind == "allocation":
        return f"{name}: reserved GPU capacity and platform services"
    if kind == "adjustment":
        return f"{name}: charges of {period} revised after its invoice (late usage)"
    return f"{name}: image generation"


def _note(note: CreditNote) -> CustomerCreditNote:
    digits = MINOR_DIGITS.get(note.currency, 2)
    return CustomerCreditNote(
        number=note.number,
        invoice_number=note.invoice_number,
        issued_on=date.fromisoformat(note.created_at[:10]),
        reason=note.reason,
        amount=note.amount or money(note.amount_minor, digits),
        tax=note.tax or money(0, digits),
    )

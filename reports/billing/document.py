"""The invoice document: one typed shape for the API, the stored JSON, the CSV and the PDF.

``invoices.compute`` builds it, ``lifecycle`` stores it (``stored()``) and loads it back
(``model_validate``), ``exports`` prints it. Money stays text (``"12.50"``: a decimal, never
a float) beside its integer minor units, as the document has always been stored: a finalized
invoice's ``content_sha256`` is over exactly these fields and their JSON spelling.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from ledger import encoding
from reports.billing.parties import Party
from reports.billing.plans import FailedRenders

# A decimal as plain text, no exponent: what ``format(Decimal, "f")`` writes.
DecimalText = Annotated[str, Field(pattern=r"^-?\d+(\.\d+)?$", examples=["12.50"])]
LineKind = Literal["usage", "allocation", "commitment", "adjustment"]


def money(minor: int, digits: int) -> str:
    """Minor units as decimal text in the currency's digits: ``1250, 2 -> "12.50"``."""
    return format(Decimal(minor).scaleb(-digits), "f")


def _absent(value: object) -> bool:
    """Fields added after documents were first stored are left out of the JSON when unset,
    so a document stored before keeps its exact JSON, and so its content_sha256."""
    return value is None


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True)


class InvoiceLine(_Part):
    """One priced line; ``exact`` is before rounding, ``rounding`` what rounding added."""

    kind: LineKind
    description: str
    use_case: str
    tier: int | None = Field(description="Index into the plan's tiers; none for cost-plus")
    period: str | None = Field(description="YYYY-MM of the month an adjustment corrects")
    quantity: DecimalText
    unit: str
    unit_price: DecimalText
    exact: DecimalText
    amount: DecimalText
    amount_minor: int
    rounding: DecimalText
    images: int | None = Field(
        default=None,
        exclude_if=_absent,
        description="Images billed under a cost-plus line (what the customer document counts)",
    )


class TaxLine(_Part):
    """One tax rate on the net amount, rounded once half-even to the minor unit."""

    label: str
    percent: DecimalText
    base: DecimalText
    amount: DecimalText
    amount_minor: int


class Customer(Party):
    """The customer party as of the billing profile version the invoice was issued with."""

    profile_from: date
    profile_sha256: str


class InvoiceWindow(_Part):
    """The instants (ISO 8601, UTC) the billing month spans in the plan's time zone."""

    start: str
    end: str


class InvoicePlan(_Part):
    """The plan that priced the month; ``sha256`` is its content digest."""

    name: str
    effective_from: date
    sha256: str
    failed_renders: FailedRenders


class Positions(_Part):
    """Which part of the log the invoice covers: ``through_seq`` and everything before."""

    first_seq: int | None
    last_seq: int | None
    through_seq: int
    adjustments_after_seq: int | None = Field(
        description="The last finalized invoice's through_seq: later events of earlier "
        "months are billed here as adjustments"
    )
    # Absent (not null) unless the plan bills fully-loaded cost: documents stored before
    # it existed keep their JSON, and so their content_sha256.
    allocations_through: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="The last allocation row (alloc_id) the allocated-share lines include",
    )


class CostBasis(_Part):
    """The metered cost the month's lines were priced from, in USD nanos."""

    currency: Literal["USD"]
    metered: DecimalText
    metered_nanos: int
    billed_nanos: int
    not_billed_nanos: int
    events: int
    renders: dict[str, int] = Field(description="Renders by outcome (no_outcome: none seen)")
    by_use_case: dict[str, int] = Field(description="Metered nanos by use case")
    allocated_nanos: int | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Idle capacity and overheads allocated to the tenant (fully-loaded plans)",
    )
    other_currencies: dict[str, int] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="Metered nanos in currencies other than USD, by currency (each its lines)",
    )


class CreditNote(_Part):
    number: str
    amount_minor: int
    currency: str
    reason: str
    created_at: str
    invoice_number: str | None = Field(default=None, description="The invoice it corrects")
    amount: DecimalText | None = Field(default=None, description="Tax included")
    tax: DecimalText | None = Field(
        default=None, description="The part of the amount that is tax, at the invoice's rate"
    )


class Invoice(_Part):
    """The invoice document; ``content_sha256`` covers every field but itself and the notes."""

    tenant: str
    period: str = Field(description="YYYY-MM")
    status: Literal["draft", "finalized"]
    number: str | None
    issued_on: date | None
    currency: str
    timezone: str
    window: InvoiceWindow
    plan: InvoicePlan
    positions: Positions
    cost_basis: CostBasis
    lines: list[InvoiceLine]
    subtotal: DecimalText
    commitment_topup: DecimalText
    adjustments: DecimalText
    credits_applied: DecimalText
    credits_applied_minor: int
    total: DecimalText = Field(
        description="Net plus tax (before credits); in documents "
        "without amount_due, the amount due after credits"
    )
    total_minor: int
    issuer: Party | None = Field(default=None, exclude_if=_absent)
    payment_instructions: list[str] | None = Field(default=None, exclude_if=_absent)
    customer: Customer | None = Field(
        default=None, exclude_if=_absent, description="None: the tenant has no billing profile"
    )
    payment_terms_days: int | None = Field(default=None, exclude_if=_absent)
    due_on: date | None = Field(default=None, exclude_if=_absent, description="Final only")
    reverse_charge: bool | None = Field(default=None, exclude_if=_absent)
    net: DecimalText | None = Field(
        default=None, exclude_if=_absent, description="Subtotal + top-up + adjustments"
    )
    taxes: list[TaxLine] | None = Field(default=None, exclude_if=_absent)
    tax: DecimalText | None = Field(default=None, exclude_if=_absent)
    tax_minor: int | None = Field(default=None, exclude_if=_absent)
    amount_due: DecimalText | None = Field(
        default=None, exclude_if=_absent, description="Total less prepaid credits"
    )
    amount_due_minor: int | None = Field(default=None, exclude_if=_absent)
    content_sha256: str = Field(  # "" only while ``compute`` builds it, until ``sealed``
        description="SHA-256 of the other fields but credit_notes, as JSON with sorted keys"
    )
    # Notes come after sealing: they correct a finalized invoice without changing it.
    credit_notes: list[CreditNote] = Field(
        default_factory=list,
        description="A finalized invoice's credit notes; a draft's JSON has none",
    )

    @property
    def due_minor(self) -> int:
        """What the customer pays; documents from before tax had it in ``total_minor``."""
        return self.total_minor if self.amount_due_minor is None else self.amount_due_minor

    def stored(self) -> dict[str, object]:
        """The JSON kept in the ``invoices`` table: the sealed fields, without the notes."""
        return self.model_dump(mode="json", exclude={"credit_notes"})

    def sealed(self) -> Self:
        """This document with ``content_sha256`` set over its other fields, sorted keys."""
        body = self.model_dump(mode="json", exclude={"content_sha256", "credit_notes"})
        digest = hashlib.sha256(encoding.dumps(body, sort_keys=True)).hexdigest()
        return self.model_copy(update={"content_sha256": digest})


class InvoiceSummary(_Part):
    """A finalized invoice in a tenant's list."""

    period: str
    number: str
    currency: str
    total_minor: int
    content_sha256: str
    finalized_at: str
    credit_notes: list[CreditNote]
    amount_due_minor: int | None = Field(default=None, description="Total less credits")
    due_on: date | None = None
    customer: str | None = Field(default=None, description="The customer's legal name")

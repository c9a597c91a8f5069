"""``/v1/tenants/{tenant}/invoices`` and ``/plans``: drafts, finalized invoices, credit notes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, Field

from ledger.connections import connection
from ledger.events import TENANT_PATTERN as TENANT
from reports.billing.credit_notes import credit_notes, issue_credit_note
from reports.billing.document import CreditNote, Invoice, InvoiceSummary
from reports.billing.exports import MEDIA_TYPES, file_stem, render, render_credit_note
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import finalize, invoice, list_invoices
from reports.billing.listing import ListedInvoice, list_all
from reports.billing.months import MonthError, check_month, parse_period
from reports.billing.parties import NoIssuer, require_issuer
from reports.billing.plans import Plan, PlanError, PlanTerms, parse_plan, plans_of, store_plan
from reports.billing.views import CustomerCreditNote, CustomerInvoice, View
from service.http.deps import AdminKey, LedgerDep, ReadKey, SettingsDep, ensure_tenant
from service.http.errors import http_error, responses
from service.keys import Principal

router = APIRouter(prefix="/v1", tags=["billing"], responses=responses(401, 403, 404, 422))
T = TypeVar("T")
Conn = psycopg.Connection[Any]
Tenant = Annotated[str, Path(pattern=TENANT)]
Month = Annotated[str, Path(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM", examples=["2026-10"])]
# Documented as ``PlanTerms``, checked by ``parse_plan`` with the tenant and month of the
# path: its refusals are the API's (``plan.name: …``), not FastAPI's (``body.name: …``).
PlanBody = Annotated[
    dict[str, Any],
    BeforeValidator(lambda body: body, json_schema_input_type=PlanTerms),
    Body(examples=[{"default": {"markup": "0.25"}}]),
]


class CreditNoteIn(BaseModel):
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False, max_digits=18, decimal_places=3)]
    reason: Annotated[str, Field(min_length=1, max_length=500)]


def _invalid(field: str, message: str) -> HTTPException:
    """A 422 naming the path field, in the shape FastAPI's own validation errors take."""
    errors = [{"index": 0, "field": field, "message": message}]
    return http_error(message, 422, errors=errors)


def _period(text: str, field: str = "path.month") -> date:
    try:
        return parse_period(text)
    except MonthError as exc:
        raise _invalid(field, str(exc)) from None


def _read(ledger: LedgerDep, key: Principal, tenant: str, read: Callable[[Conn], T]) -> T:
    """A draft that cannot be priced (metered cost in a currency with no rate) is a 422."""
    try:
        with connection(ledger.engine) as raw:
            ensure_tenant(raw, key, tenant)
            return read(raw)
    except InvoiceError as exc:
        raise http_error(str(exc), 422) from None


def _write(
    ledger: LedgerDep, key: Principal, tenant: str, month: str, write: Callable[[Conn, date], T]
) -> T:
    """One transaction for an invoice change; a refusal (out of order, too much credit) is 409."""
    period = _period(month)
    try:
        with connection(ledger.engine, transaction=True) as raw:
            ensure_tenant(raw, key, tenant)
            return write(raw, period)
    except InvoiceError as exc:
        raise http_error(str(exc), 409) from None


_DOCUMENT: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in ("application/pdf", "text/csv")}}
}


@router.get(
    "/tenants/{tenant}/invoices/{month}",
    response_model=CustomerInvoice | Invoice,
    responses=_DOCUMENT,
    summary="A month's invoice: finalized if it is, else a draft computed now",
)
def get_invoice(
    ledger: LedgerDep,
    key: ReadKey,
    tenant: Tenant,
    month: Month,
    settings: SettingsDep,
    fmt: Annotated[str, Query(alias="format", pattern="^(json|csv|pdf)$")] = "json",
    view: Annotated[
        View,
        Query(
            description="customer: the document sent (no cost, margin, positions or hashes); "
            "internal (admin only): the stored document with its cost basis and audit fields"
        ),
    ] = "customer",
) -> Response:
    period = _period(month)
    if view == "internal" and not key.is_admin:
        raise http_error("view=internal: the internal view needs an admin key", 403)
    issuer = settings.billing.issuer
    doc = _read(ledger, key, tenant, lambda raw: invoice(raw, tenant, period, issuer))
    headers = {}
    if fmt != "json":
        name = file_stem(doc).replace("/", "-")
        headers["content-disposition"] = f'inline; filename="{name}.{fmt}"'
    body = render(doc, fmt, view, issuer.logo if issuer else None)
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(
    "/invoices",
    response_model=list[ListedInvoice],
    summary="Finalized invoices of every tenant, in finalize order (admin)",
)
def get_all_invoices(
    ledger: LedgerDep,
    _key: AdminKey,
    start: Annotated[str | None, Query(alias="from", description="First month, YYYY-MM")] = None,
    end: Annotated[
        str | None, Query(alias="to", description="Month after the last, YYYY-MM")
    ] = None,
    status: Annotated[str, Query(description="finalized (drafts are never stored)")] = "finalized",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    if status != "finalized":
        raise _invalid(
            "query.status",
            "only finalized invoices are stored; a draft is computed per tenant on request",
        )
    first = None if start is None else _period(start, "query.from")
    after = None if end is None else _period(end, "query.to")
    with connection(ledger.engine) as raw:
        return list_all(raw, first, after, limit)


@router.get(
    "/tenants/{tenant}/invoices",
    response_model=list[InvoiceSummary],
    summary="A tenant's finalized invoices and their credit notes",
)
def get_invoices(ledger: LedgerDep, key: ReadKey, tenant: Tenant) -> Any:
    return _read(ledger, key, tenant, lambda raw: list_invoices(raw, tenant))


@router.post(
    "/tenants/{tenant}/invoices/{month}/finalize",
    response_model=Invoice,
    responses=responses(409),
    summary="Finalize a month's invoice (admin); finalizing again returns the same invoice",
)
def post_finalize(
    ledger: LedgerDep,
    _key: AdminKey,
    settings: SettingsDep,
    tenant: Tenant,
    month: Month,
    response: Response,
) -> Any:
    try:
        issuer = require_issuer(settings.billing.issuer)
    except NoIssuer as exc:
        raise http_error(str(exc), 409) from None
    doc, created = _write(
        ledger, _key, tenant, month, lambda raw, p: finalize(raw, tenant, p, issuer=issuer)
    )
    response.status_code = 201 if created else 200
    return doc


@router.post(
    "/tenants/{tenant}/invoices/{month}/credit-notes",
    response_model=CreditNote,
    status_code=201,
    responses=responses(409),
    summary="Credit part of a finalized invoice (admin)",
)
def post_credit_note(
    ledger: LedgerDep, _key: AdminKey, tenant: Tenant, month: Month, body: CreditNoteIn
) -> Any:
    return _write(
        ledger,
        _key,
        tenant,
        month,
        lambda raw, p: issue_credit_note(raw, tenant, p, body.amount, body.reason),
    )


@router.get("/tenants/{tenant}/plans", response_model=list[Plan], summary="A tenant's plans")
def get_plans(ledger: LedgerDep, key: ReadKey, tenant: Tenant) -> Any:
    return _read(ledger, key, tenant, lambda raw: plans_of(raw, tenant))


@router.put(
    "/tenants/{tenant}/plans/{effective_from}",
    response_model=Plan,
    responses=responses(409),
    summary="Add a plan version taking effect on the first of a month (admin)",
)
def put_plan(
    ledger: LedgerDep,
    _key: AdminKey,
    tenant: Tenant,
    effective_from: date,
    plan: PlanBody,
    response: Response,
) -> Any:
    try:
        check_month(effective_from)
    except MonthError as exc:
        raise _invalid("path.effective_from", f"effective_from: {exc}") from None
    try:
        parsed = parse_plan({**plan, "tenant": tenant, "effective_from": effective_from})
        with connection(ledger.engine, transaction=True) as raw:
            created = store_plan(raw, parsed)
    except PlanError as exc:
        status = 409 if "different plan" in str(exc) else 422
        raise http_error(str(exc), status) from None
    response.status_code = 201 if created else 200
    return parsed


NoteNumber = Annotated[
    str, Path(max_length=40, description="The credit note's number", examples=["RL-2026-000124"])
]


@router.get(
    "/tenants/{tenant}/invoices/{month}/credit-notes/{number}",
    response_model=CustomerCreditNote,
    responses={200: {"content": {"application/pdf": {}}}},
    summary="A credit note of a finalized invoice, naming the invoice it credits",
)
def get_credit_note(
    ledger: LedgerDep,
    key: ReadKey,
    settings: SettingsDep,
    tenant: Tenant,
    month: Month,
    number: NoteNumber,
    fmt: Annotated[str, Query(alias="format", pattern="^(json|pdf)$")] = "json",
) -> Response:
    period = _period(month)

    def read(raw: Conn) -> Invoice | None:
        if all(n.number != number for n in credit_notes(raw, tenant, period)):
            return None
        return invoice(raw, tenant, period)

    doc = _read(ledger, key, tenant, read)
    if doc is None:
        raise http_error(f"no credit note {number} on {tenant}'s invoice for {month}", 404)
    issuer = settings.billing.issuer
    body = render_credit_note(doc, number, fmt, issuer.logo if issuer else None)
    headers = {}
    if fmt == "pdf":
        headers["content-disposition"] = f'inline; filename="{tenant}-{number}.pdf"'
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)

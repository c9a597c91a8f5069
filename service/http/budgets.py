"""``/v1/tenants/{tenant}/budgets``: monthly spend limits, their use so far and forecast."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel

from ledger.connections import connection
from ledger.events import TENANT_PATTERN
from reports.budgets import Budget, BudgetError, current, judge, set_budgets, statuses
from service.http.deps import AdminKey, LedgerDep, ReadKey, ensure_tenant
from service.http.errors import http_error, responses

router = APIRouter(prefix="/v1", tags=["budgets"], responses=responses(401, 403, 404, 422))
Tenant = Annotated[str, Path(pattern=TENANT_PATTERN)]


class BudgetStatus(Budget):
    month: str
    spent: str | None
    used_ratio: float | None
    forecast: str | None
    forecast_ratio: float | None
    error: str | None


class TenantBudgets(BaseModel):
    tenant: str
    version: int | None
    budgets: list[BudgetStatus]


class Judged(BaseModel):
    budgets: int
    opened: int
    resolved: int
    ran: bool


def _answer(ledger: LedgerDep, tenant: str, key: Any = None) -> TenantBudgets:
    now = datetime.now(UTC)
    with connection(ledger.engine) as raw:
        if key is not None:
            ensure_tenant(raw, key, tenant)
        version = current(raw, tenant).get(tenant, (None, []))[0]
        found = statuses(raw, tenant, now)
    return TenantBudgets(
        tenant=tenant,
        version=version,
        budgets=[BudgetStatus.model_validate(s.as_dict()) for s in found],
    )


@router.get(
    "/tenants/{tenant}/budgets",
    response_model=TenantBudgets,
    summary="A tenant's budgets, this month's spend against each, and the month-end forecast",
)
def get_budgets(ledger: LedgerDep, key: ReadKey, tenant: Tenant) -> Any:
    return _answer(ledger, tenant, key)


@router.put(
    "/tenants/{tenant}/budgets",
    response_model=TenantBudgets,
    summary="Replace a tenant's budgets (admin); an empty list removes them",
    description="Each budget is a monthly amount in a currency, for the whole tenant "
    "(`use_case` null) or one use case, with alert thresholds in percent (default 50, 80, "
    "100). Spend in other currencies is converted at each day's FX rate.",
)
def put_budgets(
    ledger: LedgerDep,
    key: AdminKey,
    tenant: Tenant,
    budgets: Annotated[
        list[Budget],
        Body(examples=[[{"amount": "1000.00", "currency": "EUR", "thresholds": [50, 80, 100]}]]),
    ],
) -> Any:
    try:
        with connection(ledger.engine, transaction=True) as raw:
            set_budgets(raw, tenant, budgets, f"key:{key.key_id}")
    except BudgetError as exc:
        field = f"body[{exc.index}].use_case"
        errors = [{"index": exc.index, "field": field, "message": str(exc)}]
        raise http_error(f"budgets{exc}", 422, errors=errors) from None
    return _answer(ledger, tenant)


@router.post(
    "/budgets/run",
    response_model=Judged,
    summary="Judge every budget now (admin); the scheduler does it after every rollup",
)
def run_budgets(ledger: LedgerDep, _key: AdminKey) -> Any:
    result = judge(ledger.engine)
    return Judged(
        budgets=result.budgets, opened=result.opened, resolved=result.resolved, ran=result.ran
    )

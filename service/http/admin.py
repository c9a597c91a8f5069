"""``/v1/report/tenants``: every tenant's spend, ranked (admin keys only)."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter
from pydantic import BaseModel

from ledger.connections import connection
from ledger.fx import MissingRate
from reports.report_rows import earlier
from reports.tenant_ranking import TenantSpend, rank_tenants
from service.http.deps import AdminKey, LedgerDep
from service.http.errors import http_error, responses
from service.http.reports import Currency, End, FxVersion, Start, fx_for, missing_rate

router = APIRouter(prefix="/v1", tags=["reports"], responses=responses(401, 403, 422))


class TenantRanking(BaseModel):
    start: date
    end: date
    currency: str | None  # the target; None: each line names its own, ranked within it
    fx_version: int | None
    tenants: list[TenantSpend]


@router.get("/report/tenants", response_model=TenantRanking, summary="Every tenant's spend, ranked")
def tenant_ranking(
    ledger: LedgerDep,
    _key: AdminKey,
    start: Start,
    end: End,
    currency: Currency = None,
    fx_version: FxVersion = None,
) -> TenantRanking:
    if start >= end:
        raise http_error("from must be before to")
    with connection(ledger.engine) as raw:
        fx = fx_for(raw, currency, fx_version, earlier(start, end - start), end)
        try:
            lines = rank_tenants(raw, start, end, currency, fx)
        except MissingRate as exc:
            raise missing_rate(exc) from exc
    return TenantRanking(
        start=start,
        end=end,
        currency=currency,
        fx_version=fx.version if fx else None,
        tenants=lines,
    )

"""``/v1/tenants/{tenant}/billing-profiles``: who a tenant's invoices are addressed to."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from ledger.connections import connection
from ledger.events import TENANT_PATTERN
from reports.billing.parties import (
    BillingProfile,
    ProfileError,
    ProfileTerms,
    parse_profile,
    profiles_of,
    store_profile,
)
from service.http.deps import AdminKey, LedgerDep, ReadKey, ensure_tenant
from service.http.errors import http_error, responses

router = APIRouter(prefix="/v1", tags=["billing"], responses=responses(401, 403, 404, 422))
Tenant = Annotated[str, Path(pattern=TENANT_PATTERN)]


@router.get(
    "/tenants/{tenant}/billing-profiles",
    response_model=list[BillingProfile],
    summary="A tenant's billing profile versions, oldest first",
)
def get_profiles(ledger: LedgerDep, key: ReadKey, tenant: Tenant) -> Any:
    with connection(ledger.engine) as raw:
        ensure_tenant(raw, key, tenant)
        return profiles_of(raw, tenant)


@router.put(
    "/tenants/{tenant}/billing-profiles/{effective_from}",
    response_model=BillingProfile,
    responses=responses(409),
    summary="Add a billing profile version taking effect on a date (admin)",
    description="Versions are history: the same content again is a no-op (200), other "
    "content for a date already set is a conflict (409). An invoice keeps the version in "
    "force on the day it was finalized.",
)
def put_profile(
    ledger: LedgerDep,
    _key: AdminKey,
    tenant: Tenant,
    effective_from: date,
    terms: ProfileTerms,
    response: Response,
) -> Any:
    try:
        profile = parse_profile(
            {**terms.model_dump(), "tenant": tenant, "effective_from": effective_from}
        )
        with connection(ledger.engine, transaction=True) as raw:
            created = store_profile(raw, profile)
    except ProfileError as exc:
        status = 409 if "different billing profile" in str(exc) else 422
        raise http_error(str(exc), status) from None
    response.status_code = 201 if created else 200
    return profile

"""``/v1/billing-events``: invoice and credit note events and how their delivery went (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ledger.connections import connection
from reports.billing.notices import BillingEvent, events
from service.http.deps import AdminKey, LedgerDep
from service.http.errors import responses

router = APIRouter(prefix="/v1", tags=["billing"], responses=responses(401, 403, 422))


@router.get(
    "/billing-events",
    response_model=list[BillingEvent],
    summary="Billing events, oldest first, with their webhook delivery state (admin)",
)
def list_billing_events(
    ledger: LedgerDep,
    _key: AdminKey,
    after: Annotated[
        int, Query(ge=0, description="Only events after this event_id: the last one seen")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    with connection(ledger.engine) as raw:
        return events(raw, after, limit)

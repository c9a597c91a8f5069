"""``/v1/alerts``: list, read and acknowledge alerts; a tenant's key sees only its own."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from ledger.connections import connection
from ledger.events import TENANT_PATTERN
from reports.alerts.store import STATUSES, Alert, AlertError, acknowledge, alerts
from service.http.deps import LedgerDep, ReadKey
from service.http.errors import http_error, responses
from service.keys import Principal

router = APIRouter(prefix="/v1", tags=["alerts"], responses=responses(401, 403, 404, 422))


def _one(ledger: LedgerDep, key: Principal, alert_id: uuid.UUID) -> dict[str, Any]:
    with connection(ledger.engine) as raw:
        found = alerts(raw, alert_id=alert_id)
    if not found or not key.can_see(found[0]["tenant"]):
        raise http_error(f"no alert {alert_id}", 404)  # another tenant's alert does not exist
    return found[0]


@router.get(
    "/alerts",
    response_model=list[Alert],
    response_model_exclude_unset=True,
    summary="Alerts, newest first",
)
def list_alerts(
    ledger: LedgerDep,
    key: ReadKey,
    tenant: Annotated[
        str | None, Query(pattern=TENANT_PATTERN, description="Only this tenant's (admin keys)")
    ] = None,
    status: Annotated[str | None, Query(pattern=f"^({'|'.join(STATUSES)})$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    if not key.is_admin:
        if tenant not in (None, key.tenant_id):
            raise http_error(f"no tenant {tenant!r}", 404)
        tenant = key.tenant_id
    with connection(ledger.engine) as raw:
        return alerts(raw, tenant=tenant, status=status, limit=limit)


@router.get(
    "/alerts/{alert_id}",
    response_model=Alert,
    response_model_exclude_unset=True,
    summary="One alert",
)
def get_alert(ledger: LedgerDep, key: ReadKey, alert_id: uuid.UUID) -> Any:
    return _one(ledger, key, alert_id)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=Alert,
    response_model_exclude_unset=True,
    responses=responses(409),
    summary="Acknowledge an alert (its tenant's read key or an admin key); again is a no-op",
)
def ack_alert(ledger: LedgerDep, key: ReadKey, alert_id: uuid.UUID) -> Any:
    _one(ledger, key, alert_id)
    try:
        with connection(ledger.engine) as raw:
            return acknowledge(raw, alert_id, f"key:{key.key_id}")
    except AlertError as exc:
        raise http_error(str(exc), 409) from None

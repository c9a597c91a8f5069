"""The alert log: opened, acknowledged and resolved events, folded into alerts on read.

An alert's ``currency`` is that of the series it was opened on (migration 0013): the
currency of every amount in its detail and message. Alerts opened before it have none
(``null``), and so do alerts that are not of one series' money (a pool's utilisation).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal, get_args

import orjson
import psycopg
from pydantic import BaseModel, ConfigDict

from ledger.locks import ALERT, scoped

Status = Literal["open", "acknowledged", "resolved"]
STATUSES: tuple[Status, ...] = get_args(Status)


class StageShare(BaseModel):
    """A pipeline stage's part of a cost change."""

    stage: str
    share: float
    change_nanos: float


class AttributeChange(BaseModel):
    """An attribute whose usual value changed, e.g. ``precision`` int8 → fp16."""

    attribute: str
    before: str
    after: str
    share: float


class AlertDetail(BaseModel):
    """What the detector saw when it opened the alert; a signal fills the fields it has."""

    model_config = ConfigDict(extra="allow")  # a key logged by another version stays shown

    message: str | None = None
    currency: str | None = None  # of value, baseline, spread, waste and stage changes
    value: float | None = None
    baseline: float | None = None
    spread: float | None = None
    change: float | None = None
    renders: float | None = None
    since: str | None = None
    waste_nanos: float | None = None
    stages: list[StageShare] | None = None
    changes: list[AttributeChange] | None = None


class Resolution(BaseModel):
    """The measure and the baseline when the alert resolved."""

    model_config = ConfigDict(extra="allow")

    value: float | None = None
    baseline: float | None = None


class Alert(BaseModel):
    """An alert folded from its events; ``detail`` and ``resolution`` as they were logged."""

    # ``alerts()`` returns these as dicts, which the CLI and the detector read; the API
    # serves them through this model with ``exclude_unset``, so no logged key gains a null.
    alert_id: str
    tenant: str
    use_case: str
    currency: str | None  # of the series it opened on; null for alerts logged before 0013
    signal: str
    status: Status
    message: str
    opened_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    detail: AlertDetail
    resolution: Resolution | None


class AlertError(ValueError):
    """An alert operation refused, with the reason."""


_FOLD = """
SELECT alert_id, min(tenant_id), min(use_case), min(signal),
       min(at) FILTER (WHERE kind = 'opened') AS opened_at,
       min(at) FILTER (WHERE kind = 'acknowledged') AS acknowledged_at,
       min(at) FILTER (WHERE kind = 'resolved') AS resolved_at,
       (array_agg(detail ORDER BY event_id) FILTER (WHERE kind = 'opened'))[1] AS opened,
       (array_agg(detail ORDER BY event_id) FILTER (WHERE kind = 'resolved'))[1] AS resolved,
       (array_agg(actor ORDER BY event_id) FILTER (WHERE kind = 'acknowledged'))[1] AS ack_by,
       min(currency) FILTER (WHERE kind = 'opened') AS currency
FROM alert_events {where}
GROUP BY alert_id
"""


def _status(row: tuple[Any, ...]) -> str:
    return "resolved" if row[6] else "acknowledged" if row[5] else "open"


def _alert(row: tuple[Any, ...]) -> dict[str, Any]:
    opened = row[7] or {}
    return {
        "alert_id": str(row[0]),
        "tenant": row[1],
        "use_case": row[2],
        "currency": row[10],
        "signal": row[3],
        "status": _status(row),
        "message": opened.get("message", ""),
        "opened_at": row[4].isoformat() if row[4] else None,
        "acknowledged_at": row[5].isoformat() if row[5] else None,
        "acknowledged_by": row[9],
        "resolved_at": row[6].isoformat() if row[6] else None,
        "detail": opened,
        "resolution": row[8],
    }


def alerts(
    raw: psycopg.Connection[Any],
    tenant: str | None = None,
    status: str | None = None,
    alert_id: uuid.UUID | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Alerts newest first; ``status`` filters the folded state."""
    clauses, params = [], []
    if tenant is not None:
        clauses.append("tenant_id = %s")
        params.append(tenant)
    if alert_id is not None:
        clauses.append("alert_id = %s")
        params.append(alert_id)  # type: ignore[arg-type]  # psycopg adapts UUIDs
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = raw.execute(_FOLD.format(where=where) + " ORDER BY opened_at DESC", params).fetchall()
    out = [_alert(r) for r in rows if status is None or _status(r) == status]
    return out[:limit]


def open_alerts(raw: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every alert not resolved (acknowledged ones included): the detector's state."""
    rows = raw.execute(
        _FOLD.format(
            where="WHERE alert_id IN (SELECT alert_id FROM alert_events GROUP BY alert_id "
            "HAVING bool_and(kind <> 'resolved'))"
        )
    ).fetchall()
    return [_alert(r) for r in rows]


def append(
    raw: psycopg.Connection[Any],
    alert_id: uuid.UUID,
    tenant: str,
    use_case: str,
    signal: str,
    kind: str,
    detail: dict[str, Any],
    actor: str = "detector",
    *,
    currency: str | None = None,
) -> int:
    """Log one event of an alert; ``currency`` is its series' (``None``: not of one)."""
    row = raw.execute(
        "INSERT INTO alert_events "
        "(alert_id, tenant_id, use_case, currency, signal, kind, actor, detail) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING event_id",
        (
            alert_id,
            tenant,
            use_case,
            currency,
            signal,
            kind,
            actor,
            orjson.dumps(detail, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def acknowledge(raw: psycopg.Connection[Any], alert_id: uuid.UUID, actor: str) -> dict[str, Any]:
    """Acknowledge an open alert; again is a no-op; a resolved one cannot be."""
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (scoped(ALERT, alert_id),))
        found = alerts(raw, alert_id=alert_id)
        if not found:
            raise LookupError(f"no alert {alert_id}")
        alert = found[0]
        if alert["status"] == "resolved":
            raise AlertError(f"alert {alert_id} is resolved; nothing to acknowledge")
        if alert["status"] == "open":
            append(
                raw,
                alert_id,
                alert["tenant"],
                alert["use_case"],
                alert["signal"],
                "acknowledged",
                {"currency": alert["currency"]} if alert["currency"] else {},  # for webhooks
                actor,
                currency=alert["currency"],
            )
    return alerts(raw, alert_id=alert_id)[0]

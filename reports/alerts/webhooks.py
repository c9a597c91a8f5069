"""Pushing alert events to a webhook: signed with HMAC-SHA256, retried with backoff, every
attempt logged in ``webhook_attempts``.

The alert log is the outbox: an event is pending until one attempt got a 2xx, or it has
used up its attempts. Each call makes at most one attempt per pending event whose backoff
has passed, so the scheduler's tick is the retry loop and nothing here sleeps.

A receiver checks ``X-Renderledger-Signature: sha256=<hex>`` against
``HMAC-SHA256(secret, f"{X-Renderledger-Timestamp}.{body}")``, refuses stale timestamps,
and uses ``X-Renderledger-Event`` (the event id) to ignore a delivery it has seen.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine

from ledger.connections import connection

_PENDING = """
SELECT e.event_id, e.alert_id, e.tenant_id, e.use_case, e.signal, e.kind, e.at, e.detail,
       count(a.attempt_id) AS attempts, max(a.at) AS last_at
FROM alert_events e LEFT JOIN webhook_attempts a ON a.event_id = e.event_id
WHERE e.at >= %(oldest)s
GROUP BY e.event_id
HAVING count(a.attempt_id) < %(max)s
   AND NOT bool_or(coalesce(a.status BETWEEN 200 AND 299, false))
ORDER BY e.event_id
"""


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str
    max_attempts: int = 8
    backoff_s: float = 2.0
    timeout_s: float = 5.0
    max_age_s: float = 24 * 3600  # older events are history, not news: never pushed


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def payload(row: tuple[Any, ...]) -> bytes:
    event_id, alert_id, tenant, use_case, signal, kind, at, detail = row[:8]
    return orjson.dumps(
        {
            "event_id": event_id,
            "alert_id": str(alert_id),
            "kind": kind,
            "tenant": tenant,
            "use_case": use_case,
            "signal": signal,
            "at": at.isoformat(),
            "message": detail.get("message"),
            "detail": detail,
        }
    )


def deliver_pending(engine: Engine, hook: Webhook, now: datetime | None = None) -> int:
    """Attempt every pending event whose backoff has passed; return how many were attempted."""
    now = now or datetime.now(UTC)
    with connection(engine) as raw:
        oldest = now - timedelta(seconds=hook.max_age_s)
        rows = raw.execute(_PENDING, {"oldest": oldest, "max": hook.max_attempts}).fetchall()
    attempted = 0
    with httpx.Client(timeout=hook.timeout_s) as client:
        for row in rows:
            attempts, last_at = int(row[8]), row[9]
            wait = min(hook.backoff_s * 2 ** (attempts - 1), 3600) if attempts else 0
            if last_at is not None and (now - last_at).total_seconds() < wait:
                continue
            body = payload(row)
            stamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "x-renderledger-event": str(row[0]),
                "x-renderledger-timestamp": stamp,
                "x-renderledger-signature": sign(hook.secret, stamp, body),
            }
            status, error = None, None
            started = time.perf_counter()
            try:
                status = client.post(hook.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            ms = (time.perf_counter() - started) * 1000
            with connection(engine, transaction=True) as raw:
                raw.execute(
                    "INSERT INTO webhook_attempts (event_id, attempt, url, status, error, ms) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (row[0], attempts + 1, hook.url, status, error, ms),
                )
            attempted += 1
    return attempted


def attempts(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT attempt, at, url, status, error, ms FROM webhook_attempts "
            "WHERE event_id = %s ORDER BY attempt",
            (event_id,),
        ).fetchall()
    keys = ("attempt", "at", "url", "status", "error", "ms")
    return [dict(zip(keys, r, strict=True)) for r in rows]

"""Pushing alert events to a webhook: signed with HMAC-SHA256, retried with backoff, every
attempt logged in ``webhook_attempts``.

The alert log is the outbox: an event is pending until one attempt got a 2xx, or it has
used up its attempts. Each call makes at most one attempt per pending event whose backoff
has passed, and at most ``max_per_tick`` in all, so the scheduler's tick is the retry loop
and nothing here sleeps. It runs as its own scheduled job, never on the rollup's thread.

An attempt is bounded as a whole (connect, send, the full answer) by ``timeout_s``: httpx's
timeouts are per read, which a receiver sending a byte a second never trips, so the request
runs under an asyncio deadline that cancels it. A receiver that times out or cannot be
reached ends the tick; the events behind it wait for the next one.

A receiver checks ``X-Renderledger-Signature: sha256=<hex>`` against
``HMAC-SHA256(secret, f"{X-Renderledger-Timestamp}.{body}")``, refuses stale timestamps,
and uses ``X-Renderledger-Event`` (the event id) to ignore a delivery it has seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
from sqlalchemy import Engine

from ledger.connections import connection, job_lock
from ledger.locks import WEBHOOKS

_PENDING = """
SELECT e.event_id, e.alert_id, e.tenant_id, e.use_case, e.signal, e.kind, e.at, e.detail,
       count(a.attempt_id) AS attempts, max(a.at) AS last_at, e.currency
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
    timeout_s: float = 5.0  # the whole attempt: connect, send and the full answer
    max_per_tick: int = 20
    max_age_s: float = 24 * 3600  # older events are history, not news: never pushed


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def payload(row: tuple[Any, ...]) -> bytes:
    event_id, alert_id, tenant, use_case, signal, kind, at, detail = row[:8]
    currency = row[10] if len(row) > 10 else detail.get("currency")
    return orjson.dumps(
        {
            "event_id": event_id,
            "alert_id": str(alert_id),
            "kind": kind,
            "tenant": tenant,
            "use_case": use_case,
            "currency": currency,  # of the money figures; null for pool and older alerts
            "signal": signal,
            "at": at.isoformat(),
            "message": detail.get("message"),
            "detail": detail,
        }
    )


def _due(raw: psycopg.Connection[Any], hook: Webhook, now: datetime) -> list[tuple[Any, ...]]:
    oldest = now - timedelta(seconds=hook.max_age_s)
    rows = raw.execute(_PENDING, {"oldest": oldest, "max": hook.max_attempts}).fetchall()
    due = []
    for row in rows:
        attempts, last_at = int(row[8]), row[9]
        wait = min(hook.backoff_s * 2 ** (attempts - 1), 3600) if attempts else 0
        if last_at is None or (now - last_at).total_seconds() >= wait:
            due.append(row)
    return due[: hook.max_per_tick]


async def _attempt(
    client: httpx.AsyncClient, hook: Webhook, row: tuple[Any, ...]
) -> tuple[int | None, str | None]:
    """(status, error) of one POST, cancelled once ``hook.timeout_s`` has passed."""
    body = payload(row)
    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-renderledger-event": str(row[0]),
        "x-renderledger-timestamp": stamp,
        "x-renderledger-signature": sign(hook.secret, stamp, body),
    }
    try:
        async with asyncio.timeout(hook.timeout_s):
            response = await client.post(hook.url, content=body, headers=headers)
    except TimeoutError:
        return None, f"no full answer within {hook.timeout_s:g}s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return response.status_code, None


async def _deliver(raw: psycopg.Connection[Any], hook: Webhook, rows: list[Any]) -> int:
    attempted = 0
    async with httpx.AsyncClient(timeout=hook.timeout_s) as client:
        for row in rows:
            started = time.perf_counter()
            status, error = await _attempt(client, hook, row)
            ms = (time.perf_counter() - started) * 1000
            raw.execute(
                "INSERT INTO webhook_attempts (event_id, attempt, url, status, error, ms) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (row[0], int(row[8]) + 1, hook.url, status, error, ms),
            )
            raw.commit()
            attempted += 1
            if status is None:  # unreachable or too slow: the next would be as well
                break
    return attempted


def deliver_pending(engine: Engine, hook: Webhook, now: datetime | None = None) -> int:
    """Attempt the pending events whose backoff has passed; return how many were attempted.

    Skips (0) while another process delivers, so no event is pushed twice at once.
    """
    now = now or datetime.now(UTC)
    with job_lock(engine, WEBHOOKS) as raw:
        if raw is None:
            return 0
        rows = _due(raw, hook, now)
        raw.commit()  # not idle in a transaction while waiting on the receiver
        if not rows:
            return 0
        return asyncio.run(_deliver(raw, hook, rows))


def attempts(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT attempt, at, url, status, error, ms FROM webhook_attempts "
            "WHERE event_id = %s ORDER BY attempt",
            (event_id,),
        ).fetchall()
    keys = ("attempt", "at", "url", "status", "error", "ms")
    return [dict(zip(keys, r, strict=True)) for r in rows]

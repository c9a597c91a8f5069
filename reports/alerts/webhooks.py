"""Pushing alert events to a webhook: signed with HMAC-SHA256, retried with backoff, every
attempt logged in ``webhook_attempts``.

The alert log is the outbox (reports/outbox.py: pending until one 2xx or its attempts are
used up, at most one attempt per event and ``max_per_tick`` in all per call, each attempt
bounded as a whole by ``timeout_s``). It runs as its own scheduled job, never on the
rollup's thread.

A receiver checks ``X-Renderledger-Signature: sha256=<hex>`` against
``HMAC-SHA256(secret, f"{X-Renderledger-Timestamp}.{body}")``, refuses stale timestamps,
and uses ``X-Renderledger-Event`` (the event id) to ignore a delivery it has seen.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine

from ledger.locks import WEBHOOKS
from reports.outbox import Outbox, Request

OUTBOX = Outbox(
    events="alert_events",
    attempts="webhook_attempts",
    lock=WEBHOOKS,
    columns=(
        "event_id",
        "alert_id",
        "tenant_id",
        "use_case",
        "signal",
        "kind",
        "at",
        "detail",
        "currency",
    ),
)


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
    """The body of an alert event, from a row of ``OUTBOX.columns``."""
    event_id, alert_id, tenant, use_case, signal, kind, at, detail, currency = row
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


def _request(hook: Webhook, row: tuple[Any, ...]) -> Request:
    body = payload(row)
    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-renderledger-event": str(row[0]),
        "x-renderledger-timestamp": stamp,
        "x-renderledger-signature": sign(hook.secret, stamp, body),
    }
    return body, headers


def deliver_pending(engine: Engine, hook: Webhook, now: datetime | None = None) -> int:
    """Attempt the pending events whose backoff has passed; return how many were attempted.

    Skips (0) while another process delivers, so no event is pushed twice at once.
    """
    return OUTBOX.deliver_pending(engine, hook, lambda row: _request(hook, row), now)


def attempts(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    return OUTBOX.attempts_of(engine, event_id)

"""Pushing alert events to a webhook, signed per Standard Webhooks, retried with backoff,
every attempt logged in ``webhook_attempts``.

The alert log is the outbox (reports/outbox.py: pending until one 2xx or its attempts are
used up, at most one attempt per event and ``max_per_tick`` in all per call, each attempt
bounded as a whole by ``timeout_s``). It runs as its own scheduled job, never on the
rollup's thread.

With a ``whsec_`` secret (as ``standardwebhooks`` and Svix make them) a delivery is a
Standard Webhooks message: ``webhook-id`` ``aev_<event id>``, ``webhook-timestamp``,
``webhook-signature`` (and the previous secret's beside it while rotating), and the body
``{"type": "alert.<kind>", "timestamp", "data": <the alert event>}``; a receiver verifies it
with the ``standardwebhooks`` library. A secret of another form keeps the first version's
contract for receivers built on it: the bare event, ``X-Renderledger-Signature: sha256=<hex>``
of ``HMAC-SHA256(secret, f"{X-Renderledger-Timestamp}.{body}")`` and ``X-Renderledger-Event``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine

from ledger.locks import WEBHOOKS
from reports.outbox import Outbox, Request, signed

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
    secret: str  # whsec_<base64>: Standard Webhooks; anything else: the legacy HMAC headers
    max_attempts: int = 8
    backoff_s: float = 2.0
    timeout_s: float = 5.0  # the whole attempt: connect, send and the full answer
    max_per_tick: int = 20
    max_age_s: float = 24 * 3600  # older events are history, not news: never pushed
    previous_secret: str | None = None  # while rotating a whsec_ secret: signs beside it

    @property
    def standard(self) -> bool:
        return self.secret.startswith("whsec_")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def payload(row: tuple[Any, ...]) -> bytes:
    """The body of an alert event, from a row of ``OUTBOX.columns``."""
    return orjson.dumps(_event(row))


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    event_id, alert_id, tenant, use_case, signal, kind, at, detail, currency = row
    return {
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


def _request(hook: Webhook, row: tuple[Any, ...]) -> Request:
    if hook.standard:
        stamp = row[6].astimezone(UTC).isoformat().replace("+00:00", "Z")
        body = orjson.dumps({"type": f"alert.{row[5]}", "timestamp": stamp, "data": _event(row)})
        secrets = (hook.secret, *([hook.previous_secret] if hook.previous_secret else []))
        return body, signed(secrets, f"aev_{row[0]}", body)
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

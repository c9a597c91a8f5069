"""Invoice finalized and credit note issued, as events for billing webhooks.

``record`` writes an event in the transaction that stores its document (an outbox): the
event exists exactly when the document does, and delivery is a job of its own
(``deliver_pending``, scheduled in the API process; the outbox rules are reports/outbox.py).

Deliveries follow Standard Webhooks: ``webhook-id`` (``bev_<event id>``, the same on every
retry, for de-duplication), ``webhook-timestamp`` and ``webhook-signature`` (``v1,<base64>``
of HMAC-SHA256 over ``id.timestamp.body``). While a secret is rotated the previous one signs
too, space-separated, so a receiver holding either verifies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal
from urllib.parse import quote

import orjson
import psycopg
from pydantic import BaseModel
from sqlalchemy import Engine

from ledger.locks import BILLING_WEBHOOKS
from reports.billing.months import month
from reports.outbox import Outbox, Request, check_secret, signed
from reports.settings import BillingSettings

EventType = Literal["invoice.finalized", "credit_note.issued"]

OUTBOX = Outbox(
    events="billing_events",
    attempts="billing_webhook_attempts",
    lock=BILLING_WEBHOOKS,
    columns=("event_id", "type", "tenant_id", "period", "number", "at", "data"),
)


def record(
    raw: psycopg.Connection[Any],
    type_: EventType,
    tenant: str,
    period: date,
    number: str,
    data: dict[str, Any],
) -> None:
    """Call inside the document's transaction; ``number`` is the document's (unique)."""
    raw.execute(
        "INSERT INTO billing_events (type, tenant_id, period, number, data) "
        "VALUES (%s, %s, %s, %s, %s)",
        (type_, tenant, period, number, orjson.dumps(data).decode()),
    )


@dataclass(frozen=True)
class BillingWebhook:
    url: str
    secret: str  # whsec_<base64>
    previous_secret: str | None = None  # while rotating: signs beside ``secret``
    max_attempts: int = 8
    backoff_s: float = 2.0  # doubled after every failed attempt
    timeout_s: float = 5.0  # the whole attempt: connect, send and the full answer
    max_per_tick: int = 20
    max_age_s: float = 7 * 24 * 3600  # a week: a finance system down for a weekend catches up
    public_url: str = "http://127.0.0.1:8000"  # where the links in the payload point

    def __post_init__(self) -> None:
        check_secret(self.secret, "secret")
        if self.previous_secret is not None:
            check_secret(self.previous_secret, "previous_secret")

    @property
    def secrets(self) -> tuple[str, ...]:
        previous = () if self.previous_secret is None else (self.previous_secret,)
        return (self.secret, *previous)


def billing_webhook(settings: BillingSettings) -> BillingWebhook | None:
    """The hook the settings describe, or None without a URL; a bad secret is a ValueError
    naming its variable, so the API refuses to start rather than send what cannot verify."""
    if not settings.webhook_url:
        return None
    variable = "RENDERLEDGER_BILLING__WEBHOOK_"
    previous = settings.webhook_previous_secret or None
    return BillingWebhook(
        settings.webhook_url,
        check_secret(settings.webhook_secret, f"{variable}SECRET"),
        None if previous is None else check_secret(previous, f"{variable}PREVIOUS_SECRET"),
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_s,
        public_url=settings.public_url,
    )


def links(public_url: str, type_: str, tenant: str, period: date, number: str) -> dict[str, str]:
    """Where the document is read; a credit note's point at its invoice, and at itself."""
    invoice = f"{public_url.rstrip('/')}/v1/tenants/{quote(tenant)}/invoices/{month(period)}"
    found = {"json": invoice, "pdf": f"{invoice}?format=pdf", "csv": f"{invoice}?format=csv"}
    if type_ == "credit_note.issued":
        found["credit_note"] = f"{invoice}/credit-notes/{quote(number)}"
    return found


def payload(hook: BillingWebhook, row: tuple[Any, ...]) -> bytes:
    """The Standard Webhooks body of an event, from a row of ``OUTBOX.columns``; the links
    are built now, from today's ``public_url``."""
    _event_id, type_, tenant, period, number, at, data = row
    stamp = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    data = {**data, "links": links(hook.public_url, type_, tenant, period, number)}
    return orjson.dumps({"type": type_, "timestamp": stamp, "data": data})


def _request(hook: BillingWebhook, row: tuple[Any, ...]) -> Request:
    body = payload(hook, row)
    return body, signed(hook.secrets, f"bev_{row[0]}", body)


def deliver_pending(engine: Engine, hook: BillingWebhook, now: datetime | None = None) -> int:
    """Attempt the pending events whose backoff has passed; return how many were attempted.

    Skips (0) while another process delivers, so no event is pushed twice at once.
    """
    return OUTBOX.deliver_pending(engine, hook, lambda row: _request(hook, row), now)


def attempts(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    return OUTBOX.attempts_of(engine, event_id)


def deliver_billing_webhooks(
    engine: Engine, settings: BillingSettings
) -> Callable[[], None] | None:
    """The scheduler's billing webhook job, or None without a webhook URL."""
    hook = billing_webhook(settings)
    if hook is None:
        return None

    def run() -> None:
        deliver_pending(engine, hook)

    return run


class BillingEvent(BaseModel):
    """An event and where its delivery stands."""

    event_id: int
    type: EventType
    tenant: str
    period: str  # YYYY-MM
    number: str
    at: datetime
    data: dict[str, Any]
    attempts: int
    delivered: bool  # one attempt got a 2xx
    last_status: int | None  # of the latest attempt; null: none yet, or no answer
    last_error: str | None  # why the latest attempt got no answer


def events(raw: psycopg.Connection[Any], after: int = 0, limit: int = 100) -> list[BillingEvent]:
    """Events after ``after`` (an event id), oldest first, with their delivery state."""
    rows = raw.execute(
        "SELECT e.event_id, e.type, e.tenant_id, e.period, e.number, e.at, e.data, "
        "count(a.attempt_id), coalesce(bool_or(a.status BETWEEN 200 AND 299), false), "
        "(array_agg(a.status ORDER BY a.attempt_id DESC))[1], "
        "(array_agg(a.error ORDER BY a.attempt_id DESC))[1] "
        "FROM billing_events e "
        "LEFT JOIN billing_webhook_attempts a ON a.event_id = e.event_id "
        "WHERE e.event_id > %s GROUP BY e.event_id ORDER BY e.event_id LIMIT %s",
        (after, limit),
    ).fetchall()
    return [
        BillingEvent(
            event_id=r[0],
            type=r[1],
            tenant=r[2],
            period=month(r[3]),
            number=r[4],
            at=r[5],
            data=r[6],
            attempts=r[7],
            delivered=r[8],
            last_status=r[9],
            last_error=r[10],
        )
        for r in rows
    ]

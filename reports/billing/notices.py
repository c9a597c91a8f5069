"""Invoice finalized and credit note issued, as events for billing webhooks.

``record`` writes an event in the transaction that stores its document (an outbox): the
event exists exactly when the document does, and delivery is a job of its own.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import orjson
import psycopg

EventType = Literal["invoice.finalized", "credit_note.issued"]


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

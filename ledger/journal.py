"""Reading the log back: in ``seq`` order, by render, as stored rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.store import COLUMNS

_SELECT = f"SELECT {COLUMNS}, recorded_at FROM cost_events"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the ledger holds it: the producer's fields plus position and price."""

    seq: int
    event_id: UUID
    tenant_id: str
    use_case: str
    render_id: UUID
    stage: str
    sku: str
    quantity: Decimal
    occurred_at: datetime
    cache: str | None
    baseline_quantity: Decimal | None
    outcome: str | None
    reverses: UUID | None
    attributes: dict[str, Any]
    price_version: int
    unit_price_nanos: Decimal
    cost_nanos: int
    baseline_cost_nanos: int | None
    currency: str
    content_hash: bytes
    block_id: int
    recorded_at: datetime


def _fetch(engine: Engine, sql: str, params: tuple[Any, ...]) -> list[StoredEvent]:
    with connection(engine) as raw, raw.cursor(row_factory=class_row(StoredEvent)) as cur:
        rows: list[StoredEvent] = cur.execute(sql, params).fetchall()
        return rows


def read_after(
    engine: Engine, after_seq: int, limit: int, tenant_id: str | None = None
) -> list[StoredEvent]:
    """The next ``limit`` events after a position; a follower that repeats this misses nothing,
    because appends are serialized and ``seq`` is assigned in commit order."""
    if tenant_id is None:
        return _fetch(engine, f"{_SELECT} WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit))
    return _fetch(
        engine,
        f"{_SELECT} WHERE seq > %s AND tenant_id = %s ORDER BY seq LIMIT %s",
        (after_seq, tenant_id, limit),
    )


def read_render(engine: Engine, render_id: UUID) -> list[StoredEvent]:
    return _fetch(engine, f"{_SELECT} WHERE render_id = %s ORDER BY seq", (render_id,))


def head(raw: psycopg.Connection[Any]) -> int:
    """The last position in the ledger: every event at or below it is committed."""
    row = raw.execute("SELECT coalesce(max(last_seq), 0) FROM blocks").fetchone()
    return int(row[0]) if row else 0


def last_seq(engine: Engine) -> int:
    with connection(engine) as raw:
        return head(raw)


def render_owners(engine: Engine, render_ids: list[UUID]) -> dict[UUID, tuple[str, str]]:
    """(tenant, use case) of each known render, for producers that only know the render id."""
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT DISTINCT ON (render_id) render_id, tenant_id, use_case FROM cost_events "
            "WHERE render_id = ANY(%s) ORDER BY render_id, seq",
            (render_ids,),
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}

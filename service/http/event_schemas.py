"""What the events API answers; kept apart from the stored events it describes."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from ledger.journal import StoredEvent
from ledger.money import canonical_decimal, format_nanos
from ledger.store import Receipt


class ReceiptOut(BaseModel):
    accepted: int
    duplicates: int
    first_seq: int | None
    last_seq: int | None
    block_id: int | None

    @classmethod
    def of(cls, r: Receipt) -> ReceiptOut:
        return cls.model_validate(r, from_attributes=True)


class EventOut(BaseModel):
    seq: int
    event_id: UUID
    tenant_id: str
    use_case: str
    render_id: UUID
    stage: str
    sku: str
    quantity: str
    occurred_at: datetime
    recorded_at: datetime
    cache: str | None
    baseline_quantity: str | None
    outcome: str | None
    reverses: UUID | None
    attributes: dict[str, Any]
    price_version: int
    unit_price_nanos: str
    cost_nanos: int
    cost: str
    baseline_cost_nanos: int | None
    currency: str
    content_hash: str
    block_id: int

    @classmethod
    def of(cls, e: StoredEvent) -> EventOut:
        return cls(
            seq=e.seq,
            event_id=e.event_id,
            tenant_id=e.tenant_id,
            use_case=e.use_case,
            render_id=e.render_id,
            stage=e.stage,
            sku=e.sku,
            quantity=canonical_decimal(e.quantity),
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            cache=e.cache,
            baseline_quantity=None
            if e.baseline_quantity is None
            else canonical_decimal(e.baseline_quantity),
            outcome=e.outcome,
            reverses=e.reverses,
            attributes=e.attributes,
            price_version=e.price_version,
            unit_price_nanos=canonical_decimal(e.unit_price_nanos),
            cost_nanos=e.cost_nanos,
            cost=format_nanos(e.cost_nanos),
            baseline_cost_nanos=e.baseline_cost_nanos,
            currency=e.currency,
            content_hash=e.content_hash.hex(),
            block_id=e.block_id,
        )


class EventPage(BaseModel):
    events: list[EventOut]
    next_after_seq: int | None


class StageCost(BaseModel):
    stage: str
    cost_nanos: int
    cost: str
    share: float
    wall_s: float | None
    events: int


class RenderTrace(BaseModel):
    render_id: UUID
    tenant_id: str
    use_case: str
    outcome: str | None
    total_cost_nanos: int
    total_cost: str
    currency: str
    stages: list[StageCost]
    events: list[EventOut]

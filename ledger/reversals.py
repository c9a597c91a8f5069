"""Reversals: the only correction; each carries the negated cost of the event it cancels."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import psycopg

from ledger.errors import BatchInvalid, FieldError
from ledger.events import CostEvent
from ledger.rating import Rated


class _Target(NamedTuple):
    """What a reversal must repeat, and the price it is undone at."""

    event_id: UUID
    tenant_id: str
    use_case: str
    render_id: UUID
    stage: str
    sku: str
    quantity: Decimal
    reverses: UUID | None
    price_version: int
    unit_price_nanos: Decimal
    cost_nanos: int
    baseline_cost_nanos: int | None
    currency: str
    reversed: bool


_REVERSAL_TARGET_SQL = """
SELECT t.event_id, t.tenant_id, t.use_case, t.render_id, t.stage, t.sku, t.quantity, t.reverses,
       t.price_version, t.unit_price_nanos, t.cost_nanos, t.baseline_cost_nanos, t.currency,
       EXISTS (SELECT 1 FROM cost_events r
               WHERE r.tenant_id = t.tenant_id AND r.reverses = t.event_id)
FROM cost_events t
WHERE (t.tenant_id, t.event_id) IN (SELECT * FROM unnest(%s::text[], %s::uuid[]))
"""


def price_reversals(raw: psycopg.Connection[Any], fresh: list[Rated]) -> None:
    """A reversal carries the negated cost of the event it cancels, at that event's price."""
    reversals = [r for r in fresh if r.event.reverses is not None]
    if not reversals:
        return
    # Looked up within the reversal's own tenant: another tenant's event id answers exactly
    # as an unknown one does.
    rows = raw.execute(
        _REVERSAL_TARGET_SQL,
        ([r.event.tenant_id for r in reversals], [r.event.reverses for r in reversals]),
    ).fetchall()
    targets = {(t.tenant_id, t.event_id): t for t in (_Target(*row) for row in rows)}
    in_batch = {(r.event.tenant_id, r.event.event_id): r for r in fresh}
    reversed_here: set[tuple[str, UUID]] = set()
    errors: list[FieldError] = []
    for r in reversals:
        e = r.event
        assert e.reverses is not None
        key = (e.tenant_id, e.reverses)
        target = targets.get(key)
        if target is None and key in in_batch and in_batch[key].index < r.index:
            target = _in_batch_target(in_batch[key])
        problem = _reversal_problem(e, target, key in reversed_here)
        if problem:
            errors.append(FieldError(r.index, "reverses", problem))
            continue
        assert target is not None
        reversed_here.add(key)
        r.price_version, r.unit_price_nanos, r.currency = (
            target.price_version,
            target.unit_price_nanos,
            target.currency,
        )
        r.cost_nanos = -target.cost_nanos
        b = target.baseline_cost_nanos
        r.baseline_cost_nanos = None if b is None else -b
    if errors:
        raise BatchInvalid(errors)


def _in_batch_target(t: Rated) -> _Target:
    e = t.event
    return _Target(
        e.event_id,
        e.tenant_id,
        e.use_case,
        e.render_id,
        e.stage.value,
        e.sku,
        e.quantity,
        e.reverses,
        t.price_version,
        t.unit_price_nanos,
        t.cost_nanos,
        t.baseline_cost_nanos,
        t.currency,
        False,
    )


def _reversal_problem(e: CostEvent, target: _Target | None, twice: bool) -> str | None:
    if target is None:
        return f"event {e.reverses} is not in the ledger"
    if target.reverses is not None:
        return f"event {e.reverses} is itself a reversal; send a new event instead"
    if target.reversed or twice:
        return f"event {e.reverses} is already reversed"
    mismatched = [
        name
        for name, mine, theirs in (
            ("use_case", e.use_case, target.use_case),
            ("render_id", e.render_id, target.render_id),
            ("stage", e.stage.value, target.stage),
            ("sku", e.sku, target.sku),
            ("quantity", e.quantity, target.quantity),
        )
        if mine != theirs
    ]
    if mismatched:
        return f"a reversal must repeat the reversed event's {', '.join(mismatched)}"
    return None

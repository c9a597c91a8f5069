"""Reversals: the only correction; each carries the negated cost of the event it cancels."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg

from ledger.errors import BatchInvalid, FieldError
from ledger.events import CostEvent
from ledger.rating import Rated

_REVERSAL_TARGET_SQL = """
SELECT t.event_id, t.tenant_id, t.render_id, t.stage, t.sku, t.quantity, t.reverses,
       t.price_version, t.unit_price_nanos, t.cost_nanos, t.baseline_cost_nanos, t.currency,
       EXISTS (SELECT 1 FROM cost_events r WHERE r.reverses = t.event_id)
FROM cost_events t WHERE t.event_id = ANY(%s)
"""


def price_reversals(raw: psycopg.Connection[Any], fresh: list[Rated]) -> None:
    """A reversal carries the negated cost of the event it cancels, at that event's price."""
    reversals = [r for r in fresh if r.event.reverses is not None]
    if not reversals:
        return
    targets: dict[UUID, tuple[Any, ...]] = {
        row[0]: row
        for row in raw.execute(
            _REVERSAL_TARGET_SQL, ([r.event.reverses for r in reversals],)
        ).fetchall()
    }
    in_batch = {r.event.event_id: r for r in fresh}
    reversed_here: set[UUID] = set()
    errors: list[FieldError] = []
    for r in reversals:
        e = r.event
        assert e.reverses is not None
        target = targets.get(e.reverses)
        if target is None and e.reverses in in_batch and in_batch[e.reverses].index < r.index:
            t = in_batch[e.reverses]
            te = t.event
            target = (
                te.event_id,
                te.tenant_id,
                te.render_id,
                te.stage.value,
                te.sku,
                te.quantity,
                te.reverses,
                t.price_version,
                t.unit_price_nanos,
                t.cost_nanos,
                t.baseline_cost_nanos,
                t.currency,
                False,
            )
        problem = _reversal_problem(e, target, e.reverses in reversed_here)
        if problem:
            errors.append(FieldError(r.index, "reverses", problem))
            continue
        assert target is not None
        reversed_here.add(e.reverses)
        r.price_version, r.unit_price_nanos, r.currency = target[7], target[8], target[11]
        r.cost_nanos = -target[9]
        r.baseline_cost_nanos = None if target[10] is None else -target[10]
    if errors:
        raise BatchInvalid(errors)


def _reversal_problem(e: CostEvent, target: tuple[Any, ...] | None, twice: bool) -> str | None:
    if target is None:
        return f"event {e.reverses} is not in the ledger"
    if target[6] is not None:
        return f"event {e.reverses} is itself a reversal; send a new event instead"
    if target[12] or twice:
        return f"event {e.reverses} is already reversed"
    mismatched = [
        name
        for name, mine, theirs in (
            ("tenant_id", e.tenant_id, target[1]),
            ("render_id", e.render_id, target[2]),
            ("stage", e.stage.value, target[3]),
            ("sku", e.sku, target[4]),
            ("quantity", e.quantity, target[5]),
        )
        if mine != theirs
    ]
    if mismatched:
        return f"a reversal must repeat the reversed event's {', '.join(mismatched)}"
    return None

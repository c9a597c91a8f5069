"""Reversals: the only correction; each carries the negated cost of the event it cancels."""

from __future__ import annotations

from typing import Any, NamedTuple

import psycopg

from ledger.errors import BatchInvalid, FieldError
from ledger.events import CostEvent
from ledger.journal import EventKey, StoredEvent, events_by_key, known_keys, reversed_events
from ledger.rating import Rated

PRUNED = (
    "this event is older than the ledger keeps in PostgreSQL (`archive prune` moved it to the "
    "archive); it can no longer be reversed"
)


class _Target(NamedTuple):
    """The event a reversal cancels: what the reversal must repeat, the price it is undone
    at, and whether it already is."""

    event: StoredEvent | CostEvent
    priced: StoredEvent | Rated
    reversed: bool


# What a reversal must repeat of the event it cancels: it undoes that very usage.
_REPEATED = (
    "use_case",
    "render_id",
    "stage",
    "sku",
    "quantity",
    "baseline_quantity",
    "cache",
    "outcome",
)


def price_reversals(raw: psycopg.Connection[Any], fresh: list[Rated]) -> None:
    """A reversal carries the negated cost of the event it cancels, at that event's price."""
    reversals = [r for r in fresh if r.event.reverses is not None]
    if not reversals:
        return
    # Looked up within the reversal's own tenant: another tenant's event id answers exactly
    # as an unknown one does.
    keys = [
        (r.event.tenant_id, r.event.reverses) for r in reversals if r.event.reverses is not None
    ]
    already = reversed_events(raw, keys)
    targets = {k: _Target(e, e, k in already) for k, e in events_by_key(raw, keys).items()}
    # A target whose key is known but whose row is not was pruned to the archive.
    pruned = (
        known_keys(raw, [k for k in keys if k not in targets])
        if len(targets) < len(keys)
        else set()
    )
    in_batch = {(r.event.tenant_id, r.event.event_id): r for r in fresh}
    reversed_here: set[EventKey] = set()
    errors: list[FieldError] = []
    for r in reversals:
        e = r.event
        assert e.reverses is not None
        key = (e.tenant_id, e.reverses)
        target = targets.get(key)
        if target is None and key in in_batch and in_batch[key].index < r.index:
            target = _Target(in_batch[key].event, in_batch[key], False)
        problem = (
            _reversal_problem(e, target, key in reversed_here) if key not in pruned else PRUNED
        )
        if problem:
            errors.append(FieldError(r.index, "reverses", problem))
            continue
        assert target is not None
        reversed_here.add(key)
        priced = target.priced
        r.price_version, r.unit_price_nanos, r.currency = (
            priced.price_version,
            priced.unit_price_nanos,
            priced.currency,
        )
        r.cost_nanos = -priced.cost_nanos
        b = priced.baseline_cost_nanos
        r.baseline_cost_nanos = None if b is None else -b
    if errors:
        raise BatchInvalid(errors)


def _reversal_problem(e: CostEvent, target: _Target | None, twice: bool) -> str | None:
    if target is None:
        return f"event {e.reverses} is not in the ledger"
    if target.event.reverses is not None:
        return f"event {e.reverses} is itself a reversal; send a new event instead"
    if target.reversed or twice:
        return f"event {e.reverses} is already reversed"
    mismatched = [n for n in _REPEATED if getattr(e, n) != getattr(target.event, n)]
    if mismatched:
        return f"a reversal must repeat the reversed event's {', '.join(mismatched)}"
    return None

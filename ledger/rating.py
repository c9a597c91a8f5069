"""Pricing events: the version in force at each event's time, one half-even rounding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

from ledger.errors import BatchInvalid, FieldError
from ledger.events import CostEvent
from ledger.money import MAX_EVENT_COST_NANOS, cost_nanos, format_nanos
from ledger.prices import PriceBook, UnpricedSku


class Unrateable(ValueError):
    """An event the book prices, but at a cost no sum downstream should have to carry."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(slots=True)
class Rated:
    index: int
    event: CostEvent
    content: bytes
    price_version: int
    unit_price_nanos: Decimal
    currency: str
    cost_nanos: int
    baseline_cost_nanos: int | None

    @property
    def price_key(self) -> tuple[int, str]:
        return (self.price_version, self.event.sku)


def bounded(field: str, nanos: int, currency: str) -> int:
    """A cost an event may carry, or ``Unrateable`` naming the quantity that set it."""
    if nanos > MAX_EVENT_COST_NANOS:
        raise Unrateable(
            field,
            f"costs {format_nanos(nanos)} {currency}, above the limit of "
            f"{format_nanos(MAX_EVENT_COST_NANOS)} for one event; split it",
        )
    return nanos


def rate(i: int, e: CostEvent, book: PriceBook) -> Rated:
    """One event priced: the definition. ``ledger.copy_rows`` does the same for a batch in
    one pass with its repeats computed once (tests/test_fast_ingest.py holds the two)."""
    version, price = book.price(e.sku, e.occurred_at)
    unit = price.unit_price_nanos
    cost = bounded("quantity", cost_nanos(e.quantity, unit), version.currency)
    baseline = (
        None
        if e.baseline_quantity is None
        else bounded("baseline_quantity", cost_nanos(e.baseline_quantity, unit), version.currency)
    )
    return Rated(i, e, e.content_hash(), version.version, unit, version.currency, cost, baseline)


def rate_each(events: Sequence[CostEvent], book: PriceBook) -> Iterator[Rated]:
    """Price lazily; the first unpriced event raises ``UnpricedSku`` (or ``Unrateable``)."""
    for i, e in enumerate(events):
        yield rate(i, e, book)


def rate_all(events: Sequence[CostEvent], book: PriceBook) -> list[Rated]:
    """Price every event with the version in force at its time; collect every failure."""
    out: list[Rated] = []
    errors: list[FieldError] = []
    for i, e in enumerate(events):
        try:
            out.append(rate(i, e, book))
        except UnpricedSku as exc:
            errors.append(FieldError(i, "sku", str(exc)))
        except Unrateable as exc:
            errors.append(FieldError(i, exc.field, str(exc)))
    if errors:
        raise BatchInvalid(errors)
    return out

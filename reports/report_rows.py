"""What a report row says, as typed documents; the figures made from exact sums, rounded once."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from ledger.fx import FxTable
from ledger.money import EXACT, format_nanos, round_nanos


class Money(BaseModel):
    """An amount of the row's currency: exact integer nanos, and the same as decimal text."""

    nanos: int
    amount: str = Field(examples=["0.007722000"])


class WhatIf(BaseModel):
    """The same work priced with another price book (the ``what_if`` query parameter)."""

    cost: Money
    cost_per_delivered_render: Money | None
    difference_per_delivered_render: Money | None


class Previous(BaseModel):
    """The same row over the period of equal length just before; changes are fractions
    (0.25 is +25 %), absent when the previous figure is zero or absent."""

    cost: Money
    cost_per_delivered_render: Money | None
    cost_change: float | None
    cost_per_delivered_render_change: float | None


class FullyLoaded(BaseModel):
    """Direct cost plus the tenant's share of idle GPU capacity and of overheads (the
    allocation job's hourly rows), and that per delivered render."""

    idle: Money
    overhead: Money
    cost: Money
    cost_per_delivered_render: Money | None


class ReportRow(BaseModel):
    """One group of the report: the keys it is grouped by (``group_by``) and its currency;
    ``share_of_cost``/``wall_share`` when grouped by stage, else ``stage_share``/
    ``stage_wall_share``; ``what_if`` and ``previous`` when asked. The always-present figures
    come last, so no CSV line ends with an empty cell."""

    # Only the fields given are set, and a row is served with ``exclude_unset``.
    use_case: str | None = None
    stage: str | None = None
    day: date | None = None
    # Pipeline attributes a report may be grouped by (reports.report_attributes).
    model: str | None = None
    precision: str | None = None
    gpu_type: str | None = None
    pipeline_version: str | None = None
    currency: str
    renders_delivered: int
    renders_failed: int
    renders_cancelled: int
    failed_rate: float | None = Field(description="failed / (delivered + failed + cancelled)")
    cost_per_delivered_render: Money | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cache_hit_rate: float | None = Field(description="Hits per render-stage looked up")
    share_of_cost: float | None = Field(default=None, description="The stage's part of its group")
    wall_share: float | None = Field(default=None, description="The stage's part of wall time")
    stage_share: dict[str, float] | None = Field(default=None, description="Cost parts by stage")
    stage_wall_share: dict[str, float] | None = Field(
        default=None, description="Wall-time (``wall_s``) parts by stage"
    )
    utilisation: float | None = Field(
        default=None,
        description="Busy share of the pools the group's renders ran on, weighted by its "
        "busy GPU-seconds (not when grouped by stage)",
    )
    fully_loaded: FullyLoaded | None = Field(
        default=None, description="With allocated idle and overhead (not when grouped by stage)"
    )
    what_if: WhatIf | None = None
    previous: Previous | None = None
    cache_savings: Money
    waste: Money = Field(description="Cost of failed and cancelled renders")
    cost: Money


def earlier(day: date, by: timedelta) -> date:
    """``day - by``, or the first representable day when that is before it (a period of
    centuries asked for, whose period before would start before year 1)."""
    try:
        return day - by
    except OverflowError:
        return date.min


def money(nanos: int | Decimal | None) -> Money:
    n = round_nanos(Decimal(nanos or 0))
    return Money(nanos=n, amount=format_nanos(n))


def per(amount: int | Decimal, count: int) -> Money | None:
    """``amount`` shared over ``count``, rounded once (None for no count)."""
    if not count:
        return None
    return money(EXACT.divide(Decimal(amount), count))


def fraction(part: int | Decimal, whole: int | Decimal) -> float | None:
    return round(float(EXACT.divide(Decimal(part), Decimal(whole))), 6) if whole else None


def change(now: Money | None, before: Money | None) -> float | None:
    """(now − before) / before, or None when either is absent or before is zero."""
    if now is None or before is None or not before.nanos:
        return None
    return fraction(now.nanos - before.nanos, before.nanos)


def shares(parts: dict[str, Decimal], names: list[str]) -> dict[str, float]:
    """Each name's part of the whole, every name present (0.0 if it had none), in order."""
    whole = sum(parts.values(), Decimal(0))
    if not whole:
        return {}
    return {n: fraction(parts.get(n, Decimal(0)), whole) or 0.0 for n in names}


class Converter:
    """Amounts read per (group, currency, day), converted to the row's currency and summed
    exactly; the row's currency is the target, or the amount's own."""

    def __init__(self, target: str | None, fx: FxTable | None) -> None:
        self.target, self.fx = target, fx

    def row_currency(self, currency: str) -> str:
        return self.target or currency

    def amount(self, nanos: Any, currency: str, day: date | None) -> Decimal:
        if self.target is None or currency == self.target:
            return Decimal(nanos or 0)
        assert self.fx is not None
        assert day is not None
        return self.fx.convert(Decimal(nanos or 0), currency, self.target, day)

    def day_column(self) -> str:
        """The day each amount is converted at: needed only when converting."""
        return "day" if self.target else "NULL::date"

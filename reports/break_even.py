"""Self-hosting against a per-image API: the monthly volume where the two cost the same.

With a pool's monthly fixed cost F (its GPUs for a 730-hour month, from its definition),
the variable cost v of a render besides the GPU (caption LLM, storage, egress: what it
pays whoever renders) and an API's price p per image, self-hosting pays from
``V* = F / (p − v)`` renders a month. SDXL through an API at $0.004 against an A100 rented
at $1,100 a month: V* = 1,100 / 0.004 = 275,000 images.

The observed period says where the pool stands: its throughput (busy GPU-seconds per
delivered render) and utilisation give the volume its GPUs can carry at each utilisation,
and so whether V* is reachable at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, Decimal
from typing import Any

import psycopg

from ledger.capacity import read_pools
from ledger.money import EXACT, NANOS_PER_UNIT
from ledger.pools import HOURS_PER_MONTH, PoolDefinition
from ledger.prices import PriceVersion
from reports.capacity_report import hour_range

UTILISATIONS = (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"), Decimal(1))


def break_even_volume(fixed_monthly: Decimal, api_price: Decimal, variable: Decimal) -> int | None:
    """Renders a month from which self-hosting is cheaper; None if it never is (p ≤ v)."""
    margin = api_price - variable
    if margin <= 0:
        return None
    return int(EXACT.divide(fixed_monthly, margin).to_integral_value(ROUND_CEILING))


@dataclass(frozen=True)
class Scenario:
    utilisation: Decimal
    max_renders_per_month: int | None
    fully_loaded_per_render: Decimal | None
    breaks_even: bool | None


@dataclass(frozen=True)
class BreakEven:
    pool: str
    currency: str
    fixed_monthly: Decimal
    api_price: Decimal
    variable_per_render: Decimal
    break_even_renders_per_month: int | None
    renders_in_period: int
    renders_per_month_now: int | None
    gpu_seconds_per_render: Decimal | None
    utilisation: Decimal | None
    utilisation_needed: Decimal | None
    self_hosting_pays: bool | None
    scenarios: list[Scenario]


def observed(
    raw: psycopg.Connection[Any], pool: str, currency: str, start: date, end: date
) -> tuple[int, Decimal, Decimal, Decimal, Decimal]:
    """Delivered renders, busy seconds, non-GPU cost (nanos), held seconds, and the hours,
    of the usage on ``pool`` priced in ``currency`` (the pool's): nothing of two currencies
    is added, so renders priced in another are left out (``other_currencies`` names them)."""
    params = hour_range(start, end, pool=pool, currency=currency)
    renders, busy, other = raw.execute(
        "SELECT coalesce(sum(renders), 0), coalesce(sum(busy_seconds), 0), "
        "coalesce(sum(cost_nanos - standard_nanos), 0) FROM usage_hourly "
        "WHERE hour >= %(start)s AND hour < %(end)s AND pool = %(pool)s "
        "AND currency = %(currency)s",
        params,
    ).fetchone() or (0, 0, 0)
    (held,) = raw.execute(
        "SELECT coalesce(sum(held_seconds), 0) FROM pool_hourly "
        "WHERE hour >= %(start)s AND hour < %(end)s AND pool = %(pool)s",
        params,
    ).fetchone() or (0,)
    hours = Decimal((params["end"] - params["start"]).total_seconds()) / 3600
    return int(renders), Decimal(busy), Decimal(other), Decimal(held), hours


def analyse(
    definition: PoolDefinition,
    api_price: Decimal,
    renders: int,
    busy_seconds: Decimal,
    other_nanos: Decimal,
    held_seconds: Decimal,
    hours: Decimal,
) -> BreakEven:
    fixed = definition.monthly_cost()
    variable = EXACT.divide(other_nanos, renders * NANOS_PER_UNIT) if renders else Decimal(0)
    volume = break_even_volume(fixed, api_price, variable)
    per_render = EXACT.divide(busy_seconds, renders) if renders and busy_seconds > 0 else None
    month_seconds = HOURS_PER_MONTH * 3600 * definition.gpus
    scenarios = []
    for u in UTILISATIONS:
        cap = int(month_seconds * u / per_render) if per_render else None
        scenarios.append(
            Scenario(
                utilisation=u,
                max_renders_per_month=cap,
                fully_loaded_per_render=(EXACT.divide(fixed, cap) + variable) if cap else None,
                breaks_even=None if cap is None or volume is None else cap >= volume,
            )
        )
    now = int(EXACT.divide(renders * HOURS_PER_MONTH, hours)) if hours > 0 else None
    return BreakEven(
        pool=definition.name,
        currency=definition.currency,
        fixed_monthly=fixed,
        api_price=api_price,
        variable_per_render=variable,
        break_even_renders_per_month=volume,
        renders_in_period=renders,
        renders_per_month_now=now,
        gpu_seconds_per_render=per_render,
        utilisation=(busy_seconds / held_seconds).quantize(Decimal("0.000001"))
        if held_seconds > 0
        else None,
        utilisation_needed=(volume * per_render / month_seconds).quantize(Decimal("0.000001"))
        if volume is not None and per_render
        else None,
        self_hosting_pays=None if volume is None or now is None else now >= volume,
        scenarios=scenarios,
    )


def other_currencies(
    raw: psycopg.Connection[Any], pool: str, currency: str, start: date, end: date
) -> list[str]:
    """Currencies other than the pool's that usage on it was priced in, in the period."""
    rows = raw.execute(
        "SELECT DISTINCT currency FROM usage_hourly WHERE hour >= %(start)s AND hour < %(end)s "
        "AND pool = %(pool)s AND currency <> %(currency)s ORDER BY 1",
        hour_range(start, end, pool=pool, currency=currency),
    ).fetchall()
    return [r[0] for r in rows]


class BreakEvenRefused(LookupError):
    """No assessment: an unknown pool or book (``missing``), or two currencies compared."""

    def __init__(self, field: str, message: str, *, missing: bool) -> None:
        super().__init__(message)
        self.field = field
        self.missing = missing


def assess(
    raw: psycopg.Connection[Any],
    book: PriceVersion | None,
    pool: str,
    api_book: str,
    api_sku: str,
    start: date,
    end: date,
) -> tuple[BreakEven, list[str]]:
    """The break-even of ``pool`` against ``book``'s ``api_sku`` price over the period, and
    the currencies of renders on the pool it left out; what the API and the CLI both answer."""
    definition = read_pools(raw).latest(pool)
    if definition is None:
        raise BreakEvenRefused("pool", f"no pool named {pool!r}", missing=True)
    if book is None or api_sku not in book.prices:
        raise BreakEvenRefused(
            "api_book", f"no price book {api_book!r} with a {api_sku!r} price", missing=True
        )
    if book.currency != definition.currency:
        raise BreakEvenRefused(
            "api_book",
            f"prices in {book.currency}, the pool is paid in {definition.currency}; nothing "
            "of two currencies is compared",
            missing=False,
        )
    facts = observed(raw, pool, definition.currency, start, end)
    others = other_currencies(raw, pool, definition.currency, start, end)
    price = book.prices[api_sku].unit_price_nanos / Decimal(NANOS_PER_UNIT)
    return analyse(definition, price, *facts), others

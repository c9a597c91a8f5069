"""Money is integer nano-units of a currency; ``Decimal`` only at the edges, rounded once."""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_UNIT = 10**9
_NANO = Decimal(1).scaleb(-9)
# One event may cost at most a million units of its currency. Stored costs stay far inside
# 64 bits, and every sum over them is taken in NUMERIC (SQL) or Int128 (Polars), never int64.
MAX_EVENT_COST_NANOS = 10**6 * NANOS_PER_UNIT

# Quantities and fractional nano prices multiply far past the default 28 digits; this
# context keeps every product exact so the single rounding is the only one.
EXACT = decimal.Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[decimal.InvalidOperation])


def to_nanos(amount: Decimal) -> Decimal:
    """An amount of currency as (possibly fractional) nanos, exactly."""
    return EXACT.multiply(amount, NANOS_PER_UNIT)


def round_nanos(value: Decimal) -> int:
    """The one rounding money goes through: half-even to a whole nano."""
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN, context=EXACT))


def cost_nanos(quantity: Decimal, unit_price_nanos: Decimal) -> int:
    return round_nanos(EXACT.multiply(quantity, unit_price_nanos))


def format_nanos(nanos: int) -> str:
    """Nanos as a decimal string of the currency with all nine places, never a float."""
    return format(Decimal(nanos).scaleb(-9, context=EXACT).quantize(_NANO, context=EXACT), "f")


def canonical_decimal(value: Decimal) -> str:
    """One spelling per number, so 1.50 and 1.5 hash alike."""
    text = str(value)
    if "E" in text or "e" in text:
        text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        return "0"
    return text

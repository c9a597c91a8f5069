"""How the dashboard writes the report API's figures: one formatter for every page and chart.

The pages read the same ``ReportRow``/``TenantSpend`` objects the API serves, so a money
figure starts as the API's own text (``Money.amount``, ``ledger.money.format_nanos``): it is
only grouped in thousands and stripped of trailing zeros, never rounded, so the page and
the JSON cannot disagree. Fractions (shares, rates, changes) are the API's floats shown in
percent with one decimal.
"""

from __future__ import annotations

from decimal import Decimal

from ledger.money import format_nanos
from reports.billing.document import money as minor_text
from reports.billing.plans import MINOR_DIGITS
from reports.report_rows import Money

DASH = "—"


def amount(text: str) -> str:
    """``"1234.567800000"`` → ``"1,234.5678"``: the exact decimal, grouped, no trailing 0s."""
    sign = "−" if text.startswith("-") else ""
    whole, _, part = text.lstrip("-").partition(".")
    part = part.rstrip("0")
    grouped = f"{int(whole):,}"
    return f"{sign}{grouped}.{part}" if part else f"{sign}{grouped}"


def money(value: Money | None, currency: str | None = None) -> str:
    if value is None:
        return DASH
    text = amount(value.amount)
    return f"{text} {currency}" if currency else text


def nanos(value: int | None, currency: str | None = None) -> str:
    """Integer nanos (the capacity report's fields) through the same path as ``money``."""
    if value is None:
        return DASH
    return money(Money(nanos=value, amount=format_nanos(value)), currency)


def decimal(value: Decimal | None, currency: str | None = None) -> str:
    """An exact Decimal (break-even figures), as the API prints it, grouped."""
    if value is None:
        return DASH
    text = amount(format(value.normalize(), "f"))
    return f"{text} {currency}" if currency else text


def percent(fraction: float | None) -> str:
    """A share or rate: ``0.8123`` → ``"81.2 %"``."""
    return DASH if fraction is None else f"{fraction * 100:.1f} %"


def change(fraction: float | None) -> str:
    """A relative change: ``0.25`` → ``"+25.0 %"``; none when the figure before was zero."""
    if fraction is None:
        return DASH
    return f"{'+' if fraction >= 0 else '−'}{abs(fraction) * 100:.1f} %"


def points(now: float | None, before: float | None) -> str:
    """The change of a rate, in percentage points: ``0.8`` after ``0.75`` → ``"+5.0 pt"``."""
    if now is None or before is None:
        return DASH
    delta = (now - before) * 100
    return f"{'+' if delta >= 0 else '−'}{abs(delta):.1f} pt"


def relative(now: float | None, before: float | None) -> float | None:
    """(now − before) / before for plain numbers (latency); None when before is zero."""
    if now is None or before is None or not before:
        return None
    return round((now - before) / before, 6)


def milliseconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value / 1000:,.2f} s" if value >= 10_000 else f"{value:,.0f} ms"


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def minor(value: int | None, currency: str) -> str:
    """An invoice amount in minor units, in its currency's digits, as the invoice prints it
    (``1250`` → ``"12.50 USD"``): trailing zeros kept, since cents are part of an amount due."""
    if value is None:
        return DASH
    text = minor_text(value, MINOR_DIGITS.get(currency, 2))
    whole, dot, part = text.lstrip("-").partition(".")
    sign = "−" if text.startswith("-") else ""
    return f"{sign}{int(whole):,}{dot}{part} {currency}"


def api_value(value: Money | float | int | None) -> str:
    """A figure as the report API's JSON holds it (a Money's ``amount``): what a page's
    ``data-value`` carries, so a reader (or a test) can hold the page to the API."""
    if value is None:
        return ""
    if isinstance(value, Money):
        return value.amount
    return repr(value)

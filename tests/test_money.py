"""Money arithmetic: exact products, one half-even rounding, one spelling per number."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.money import canonical_decimal, cost_nanos, format_nanos, round_nanos, to_nanos


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.5", 0), ("1.5", 2), ("2.5", 2), ("-2.5", -2), ("2.5000001", 3), ("7", 7)],
)
def test_round_half_even(value: str, expected: int) -> None:
    assert round_nanos(Decimal(value)) == expected


def test_products_are_exact_past_28_digits() -> None:
    quantity = Decimal("123456789012.123456789")
    price = Decimal("830555.555555555555555555")
    exact = Fraction(quantity) * Fraction(price)
    assert cost_nanos(quantity, price) == round(exact)
    # The default 28-digit context would have rounded the product before our rounding.
    assert Fraction(quantity * price) != exact


def test_to_nanos_and_format() -> None:
    assert to_nanos(Decimal("0.0011")) == 1_100_000
    assert format_nanos(2_750_000) == "0.002750000"
    assert format_nanos(-1) == "-0.000000001"
    assert format_nanos(12_345_678_901_234) == "12345.678901234"


decimals = st.decimals(
    allow_nan=False, allow_infinity=False, places=None, min_value=-1e15, max_value=1e15
)


@given(decimals)
def test_canonical_decimal_is_one_spelling_of_the_same_number(value: Decimal) -> None:
    text = canonical_decimal(value)
    assert Decimal(text) == value
    assert canonical_decimal(Decimal(text)) == text
    assert canonical_decimal(value * 1) == canonical_decimal(value.normalize())
    assert "E" not in text
    assert not (("." in text) and text.endswith("0"))

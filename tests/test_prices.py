"""Price book files and the version in force at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from ledger.prices import (
    PriceBook,
    PriceBookError,
    PriceVersion,
    UnpricedSku,
    load_price_book_file,
    parse_price_book,
)
from service.cli.main import DEFAULT_PRICES


def test_default_book_has_the_public_figures() -> None:
    book = load_price_book_file(DEFAULT_PRICES)
    prices = {p.sku: p.unit_price_nanos for p in book.prices}
    assert prices["s3.standard.gb_month"] == Decimal("23000000")  # $0.023 per GB-month
    assert prices["cdn.egress.gb"] == Decimal("85000000")  # $0.085 per GB
    assert prices["gpu.h100.second"] == Decimal("1100000")
    assert prices["llm.gpt-4o-mini.input_token"] == Decimal("150")
    assert {"gpu.a100.second", "gpu.rtx4090.second", "s3.put_request", "image.transform"} <= set(
        prices
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name = ", "not valid TOML"),
        ('effective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"', "name"),
        ('name = "x"\neffective_from = 2026-01-01T00:00:00\ncurrency = "USD"', "time zone"),
        ('name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "usd"', "ISO 4217"),
        (
            'name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"\n'
            '[prices."a"]\nunit = "s"\nprice = "-1"',
            "finite amount >= 0",
        ),
        (
            'name = "x"\neffective_from = 2026-01-01T00:00:00Z\ncurrency = "USD"\n'
            '[prices."a"]\nprice = "1"',
            "prices.a.unit",
        ),
    ],
)
def test_bad_books_say_why(text: str, words: str) -> None:
    with pytest.raises(PriceBookError, match=words):
        parse_price_book(text)


def _version(n: int, start: datetime, price: str) -> PriceVersion:
    from ledger.prices import Price

    return PriceVersion(n, f"v{n}", start, "USD", {"x": Price("x", "s", Decimal(price))})


def test_in_force_picks_the_latest_start_at_or_before_the_time() -> None:
    jan, jun = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    book = PriceBook((_version(2, jun, "2"), _version(1, jan, "1")))
    assert book.price("x", datetime(2026, 5, 31, tzinfo=UTC))[0].version == 1
    assert book.price("x", jun)[0].version == 2
    with pytest.raises(UnpricedSku):
        book.price("x", datetime(2025, 12, 31, tzinfo=UTC))
    with pytest.raises(UnpricedSku):
        book.price("y", jun)

"""The cost price book: versions with effective dates, and rating an event against them."""

from __future__ import annotations

import bisect
import hashlib
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ledger.money import to_nanos


class PriceBookError(ValueError):
    """A price book file that cannot be loaded, with the reason."""


class UnpricedSku(LookupError):
    def __init__(self, sku: str, at: datetime) -> None:
        super().__init__(f"no price for SKU {sku!r} at {at.isoformat()}")
        self.sku = sku
        self.at = at


@dataclass(frozen=True, slots=True)
class Price:
    sku: str
    unit: str
    unit_price_nanos: Decimal
    description: str = ""


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """One complete book: every SKU it prices, from ``effective_from`` until the next version."""

    version: int
    name: str
    effective_from: datetime
    currency: str
    prices: dict[str, Price]
    source_sha256: str = ""


@dataclass(frozen=True)
class PriceBook:
    """All versions, ordered so the one in force at a time is a binary search away."""

    versions: tuple[PriceVersion, ...]
    _starts: list[datetime] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.versions, key=lambda v: (v.effective_from, v.version)))
        object.__setattr__(self, "versions", ordered)
        object.__setattr__(self, "_starts", [v.effective_from for v in ordered])

    @property
    def latest_version(self) -> int:
        return max((v.version for v in self.versions), default=0)

    def in_force(self, at: datetime) -> PriceVersion | None:
        if self._starts and at >= self._starts[-1]:
            return self.versions[-1]  # nearly every event is priced by the newest book
        i = bisect.bisect_right(self._starts, at)
        return self.versions[i - 1] if i else None

    def price(self, sku: str, at: datetime) -> tuple[PriceVersion, Price]:
        version = self.in_force(at)
        if version is None or sku not in version.prices:
            raise UnpricedSku(sku, at)
        return version, version.prices[sku]


@dataclass(frozen=True, slots=True)
class PriceBookFile:
    """A parsed, not yet stored, price book file."""

    name: str
    effective_from: datetime
    currency: str
    prices: tuple[Price, ...]
    source_sha256: str
    kind: str = "cost"  # or "what_if": priced for comparison, never used to rate events


def parse_price_book(text: str) -> PriceBookFile:
    """Parse the TOML format documented in ``service/books/default_prices.toml``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceBookError(f"not valid TOML: {exc}") from exc
    name = _required(doc, "name", str)
    effective_from = _required(doc, "effective_from", datetime)
    if effective_from.tzinfo is None:
        raise PriceBookError("effective_from needs a time zone, e.g. 2026-01-01T00:00:00Z")
    currency = _required(doc, "currency", str)
    if len(currency) != 3 or not currency.isupper():
        raise PriceBookError(f"currency {currency!r} is not an ISO 4217 code like USD")
    table = _required(doc, "prices", dict)
    if not table:
        raise PriceBookError("the book prices no SKU")
    prices = tuple(_parse_price(sku, entry) for sku, entry in sorted(table.items()))
    kind = str(doc.get("kind", "cost")).replace("-", "_")
    if kind not in ("cost", "what_if"):
        raise PriceBookError(f"kind {kind!r}: either cost (the default) or what-if")
    return PriceBookFile(
        name=name,
        effective_from=effective_from,
        currency=currency,
        prices=prices,
        source_sha256=hashlib.sha256(text.encode()).hexdigest(),
        kind=kind,
    )


def load_price_book_file(path: Path) -> PriceBookFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceBookError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_price_book(text)


def _parse_price(sku: str, entry: Any) -> Price:
    if not isinstance(entry, dict):
        raise PriceBookError(f"prices.{sku}: expected a table with unit and price")
    unit = entry.get("unit")
    raw = entry.get("price")
    if not isinstance(unit, str) or not unit:
        raise PriceBookError(f"prices.{sku}.unit: missing")
    if not isinstance(raw, str):
        # A TOML float would already have lost digits; prices are written as strings.
        raise PriceBookError(f'prices.{sku}.price: write the price as a string, e.g. "0.0011"')
    try:
        amount = Decimal(raw)
    except InvalidOperation as exc:
        raise PriceBookError(f"prices.{sku}.price: {raw!r} is not a decimal number") from exc
    if not amount.is_finite() or amount < 0:
        raise PriceBookError(f"prices.{sku}.price: must be a finite amount >= 0")
    return Price(sku, unit, to_nanos(amount), str(entry.get("description", "")))


def _required(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise PriceBookError(f"{key}: missing or not a {kind.__name__}")
    return value

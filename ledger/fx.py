"""Exchange rates: parsed from a CSV, stored as append-only versions, applied per day.

Rates are units of a currency per one unit of the base (EUR, as the ECB publishes them). A
day without a published rate (weekends, TARGET holidays) takes the last rate published at
or before it, at most ``WINDOW_DAYS`` before; past that the conversion is refused with the
day and the currency, never guessed. Conversion is Decimal with 80 digits (ledger.money's
EXACT), and the caller rounds its sum once, half-even, to the nano.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.money import EXACT

BASE = "EUR"
WINDOW_DAYS = 7
CURRENCY_RE = re.compile(r"[A-Z]{3}\Z")


class FxError(ValueError):
    """A rate file that cannot be loaded, or a conversion that cannot be made."""


class MissingRate(FxError):
    def __init__(self, currency: str, day: date, version: int) -> None:
        super().__init__(
            f"no {currency} rate on {day} or in the {WINDOW_DAYS} days before it "
            f"(FX version {version}); load rates that cover it with `renderledger fx load`"
        )
        self.currency = currency
        self.day = day


@dataclass(frozen=True)
class FxFile:
    """Parsed rates: (day, currency) → units of currency per one ``BASE``."""

    rates: dict[tuple[date, str], Decimal]

    @property
    def sha256(self) -> str:
        lines = (f"{d},{c},{r.normalize()}" for (d, c), r in sorted(self.rates.items()))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _day(text: str) -> date:
    text = text.strip()
    for fmt in ("%Y-%m-%d", "%d %B %Y"):  # ISO; the ECB's daily file says "05 January 2024"
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).date()
        except ValueError:
            continue
    raise FxError(f"date {text!r}: use YYYY-MM-DD")


def _rate(text: str) -> Decimal:
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise FxError(f"rate {text.strip()!r} is not a decimal number") from None
    if not rate.is_finite() or rate <= 0:
        raise FxError(f"rate {text.strip()!r} must be a positive number")
    return rate


def _currency(text: str) -> str:
    code = text.strip()
    if not CURRENCY_RE.match(code):
        raise FxError(f"currency {code!r}: three capital letters (ISO 4217)")
    return code


def parse_rates(text: str) -> FxFile:
    """Either ``date,currency,rate`` rows, or the ECB's shape (``Date,USD,JPY,…`` with a
    column per currency, ``N/A`` for none, a trailing comma). ``FxError`` names the line."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "date":
        raise FxError("line 1: the header must start with 'date' (date,currency,rate or ECB)")
    header = [h.strip().lower() for h in rows[0]]
    long = header[:3] == ["date", "currency", "rate"]
    codes = [] if long else [h.strip() for h in rows[0][1:]]
    rates: dict[tuple[date, str], Decimal] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            for key, rate in _row(row, long, codes):
                if key in rates:
                    raise FxError(f"{key[1]} on {key[0]} is given twice")
                if key[1] == BASE and rate != 1:
                    raise FxError(f"{BASE} is the base: its rate is 1, got {rate}")
                rates[key] = rate
        except FxError as exc:
            raise FxError(f"line {number}: {exc}") from None
    if not rates:
        raise FxError("no rates in the file")
    return FxFile(rates)


def _row(
    row: list[str], long: bool, codes: list[str]
) -> Iterable[tuple[tuple[date, str], Decimal]]:
    if long:
        if len(row) < 3:
            raise FxError("expected date,currency,rate")
        yield (_day(row[0]), _currency(row[1])), _rate(row[2])
        return
    day = _day(row[0])
    for code, cell in zip(codes, row[1:], strict=False):
        if not code and not cell.strip():
            continue  # the ECB's trailing comma
        if cell.strip() in ("", "N/A"):
            continue
        yield (day, _currency(code)), _rate(cell)


def load_rates(engine: Engine, fx: FxFile, name: str) -> tuple[int, bool]:
    """Store ``fx`` as a new version; the same rates again return their version, unchanged."""
    with connection(engine, transaction=True) as raw:
        # The unique hash decides between two loads of the same rates at once.
        created = raw.execute(
            "INSERT INTO fx_versions (name, base, source_sha256, rates) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (source_sha256) DO NOTHING RETURNING version",
            (name, BASE, fx.sha256, len(fx.rates)),
        ).fetchone()
        if created is None:
            row = raw.execute(
                "SELECT version FROM fx_versions WHERE source_sha256 = %s", (fx.sha256,)
            ).fetchone()
            assert row is not None
            return int(row[0]), False
        version = int(created[0])
        with (
            raw.cursor() as cur,
            cur.copy("COPY fx_rates (version, currency, day, rate) FROM STDIN") as copy,
        ):
            for (day, code), rate in sorted(fx.rates.items()):
                copy.write_row((version, code, day, rate))
    return version, True


def load_rates_file(engine: Engine, path: Path) -> tuple[int, bool]:
    return load_rates(engine, parse_rates(path.read_text(encoding="utf-8-sig")), path.name)


def versions(raw: psycopg.Connection[Any]) -> list[tuple[int, str, str, int, datetime]]:
    """Every version: number, name, base, rate count, when loaded."""
    rows = raw.execute(
        "SELECT version, name, base, rates, loaded_at FROM fx_versions ORDER BY version"
    ).fetchall()
    return [(int(v), n, b, int(c), t) for v, n, b, c, t in rows]


@dataclass(frozen=True)
class FxTable:
    """One version's rates for some currencies and days, ready to convert with."""

    version: int
    base: str = BASE
    series: dict[str, tuple[list[date], list[Decimal]]] = field(default_factory=dict)

    def rate(self, currency: str, day: date) -> Decimal:
        """Units of ``currency`` per one base on ``day`` (the last published, in the window)."""
        if currency == self.base:
            return Decimal(1)
        days, rates = self.series.get(currency, ([], []))
        i = bisect_right(days, day) - 1
        if i < 0 or (day - days[i]).days > WINDOW_DAYS:
            raise MissingRate(currency, day, self.version)
        return rates[i]

    def factor(self, source: str, target: str, day: date) -> Decimal:
        """What one unit of ``source`` is in ``target`` on ``day``."""
        if source == target:
            return Decimal(1)
        return EXACT.divide(self.rate(target, day), self.rate(source, day))

    def convert(self, amount: Decimal | int, source: str, target: str, day: date) -> Decimal:
        """``amount`` of ``source`` in ``target``, exactly to 80 digits: round the sum once."""
        return EXACT.multiply(Decimal(amount), self.factor(source, target, day))


def fx_table(
    raw: psycopg.Connection[Any],
    version: int | None,
    start: date,
    end: date,
    currencies: Iterable[str] | None = None,
) -> FxTable:
    """Version ``version`` (the newest when None) from ``start`` (with the window before it)
    to ``end`` inclusive, for ``currencies`` (all when None). ``FxError`` if no such version."""
    if version is None:
        row = raw.execute("SELECT max(version) FROM fx_versions").fetchone()
        if row is None or row[0] is None:
            raise FxError("no FX rates are loaded: `renderledger fx load rates.csv` first")
        version = int(row[0])
    found = raw.execute("SELECT base FROM fx_versions WHERE version = %s", (version,)).fetchone()
    if found is None:
        raise FxError(f"no FX version {version}")
    wanted = None if currencies is None else sorted(set(currencies))
    rows = raw.execute(
        "SELECT currency, day, rate FROM fx_rates WHERE version = %s "
        "AND (%s::text[] IS NULL OR currency = ANY(%s::text[])) "
        "AND day BETWEEN %s AND %s ORDER BY currency, day",
        (
            version,
            wanted,
            wanted,
            max(start, date.min + timedelta(WINDOW_DAYS)) - timedelta(WINDOW_DAYS),
            end,
        ),
    ).fetchall()
    series: dict[str, tuple[list[date], list[Decimal]]] = {}
    for code, day, rate in rows:
        days, rates = series.setdefault(code, ([], []))
        days.append(day)
        rates.append(Decimal(rate))
    return FxTable(version, found[0], series)

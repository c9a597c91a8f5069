"""The append's rows: each event rated, hashed and encoded for binary COPY in one pass.

Written as bytes rather than through psycopg's ``copy.write_row``: the per-row formatting
(two UUID and one JSONB dumper in Python) was a third of the append's CPU. Each row is
``store._copy_row`` in PostgreSQL's binary COPY format; everything but ``seq`` and
``block_id`` is encoded before the append knows them (``Prepared``), so a batch waiting for
the lock does that work while it waits. tests/test_fast_ingest.py holds these bytes to
psycopg's own formatting of ``_copy_row`` with ``journal.COPY_TYPES``.

Rating, the content hash and the encoding run in one pass over a batch, and what a batch
repeats is worked out once: a SKU's price and price fields per price version, a time's
version and encoding, a quantity's canonical spelling, encoding and cost at each price. A
render's nine events share most of these; events the HTTP fast path decodes share the very
objects (one ``Decimal`` per quantity text, one ``datetime`` per time text), found by
identity. ``rating.rate`` and ``events.content_hash`` stay the definitions: the same tests
hold the one pass to them.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import orjson
import psycopg
from psycopg.adapt import PyFormat

from ledger.chain import price_tag
from ledger.events import CONTENT_VERSION, CostEvent
from ledger.journal import WRITTEN
from ledger.money import canonical_decimal, cost_nanos
from ledger.prices import PriceBook
from ledger.rating import Rated, bounded

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # the header, no flags, no extension
TRAILER = b"\xff\xff"
FIELDS = len(WRITTEN)
CHUNK = 1 << 17
_NULL = b"\xff\xff\xff\xff"
_UUID = struct.pack(">i", 16)
_TIMESTAMPTZ = struct.pack(">i", 8)
_SHA256 = struct.pack(">i", 32)
head = struct.Struct(">hiq").pack  # field count, then seq as int8
int8 = struct.Struct(">iq").pack
_int4 = struct.Struct(">ii").pack
_size = struct.Struct(">i").pack
_jsonb = struct.Struct(">ib").pack  # jsonb's binary form: its size, version 1, then the text
# psycopg's own (C) dumpers for the two encodings worth not writing again; never None here.
_numeric = cast(
    Callable[[Decimal], bytes], psycopg.adapters.get_dumper(Decimal, PyFormat.BINARY)(Decimal).dump
)
_timestamptz = cast(
    Callable[[datetime], bytes],
    psycopg.adapters.get_dumper(datetime, PyFormat.BINARY)(datetime).dump,
)
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
_Fragment = orjson.Fragment
_sha256 = hashlib.sha256


def _field(data: bytes | bytearray | memoryview) -> bytes:
    return _size(len(data)) + bytes(data)


class _Texts(dict[str, bytes]):
    """Text fields as COPY fields, each spelling encoded once (tenants, SKUs and stages
    repeat across a batch)."""

    def __missing__(self, text: str) -> bytes:
        field = self[text] = _field(text.encode())
        return field


@dataclass(slots=True)
class _Price:
    """One SKU at one price version: its price columns, and its cost of each quantity."""

    version: int
    unit: Decimal
    currency: str
    tag: bytes  # the row digest's pricing part
    version_and_unit: bytes  # price_version, unit_price_nanos
    no_baseline: bytes  # baseline_cost_nanos (NULL), currency
    currency_field: bytes
    costs: dict[int, int]  # by id() of a quantity that _Amounts holds


@dataclass(slots=True)
class _Time:
    """One instant: its UTC form as the hash spells it, its COPY field, and the prices of
    the version in force then (shared by every instant of that version)."""

    utc: orjson.Fragment
    field: bytes
    prices: dict[str, _Price]


Row = tuple[Rated, bytes, bytes]
"""A rated event, its price tag for the row digest, its COPY fields but seq and block_id."""


class Prepared:
    """A batch's rows: each event rated, with its COPY fields from ``event_id`` through
    ``content_hash`` encoded; ``seq`` and ``block_id`` are added when the block is written.

    ``Prepared(rated)`` encodes events rated already (the append's slow path, where the
    hashes may be of an older canonical form); ``rate_now`` and ``lazily`` rate too."""

    def __init__(self, rated: Iterable[Rated] | None = None, book: PriceBook | None = None):
        self.book = book
        self._texts = _Texts()
        self._prices: dict[tuple[int, str], _Price] = {}
        self._versions: dict[int, dict[str, _Price]] = {}  # a version's prices by SKU
        self._times: dict[datetime, _Time] = {}
        # id() of a quantity -> (the quantity, kept alive so the id stays its own; its
        # canonical text; its COPY field).
        self._amounts: dict[int, tuple[Decimal, str, bytes]] = {}
        self._rows: list[Row] | None = None
        self._pending: Iterator[Row] | None = None
        if rated is not None:
            self._rows = [self._encode(r) for r in rated]

    @classmethod
    def rate_now(cls, events: Sequence[CostEvent], book: PriceBook) -> Prepared:
        """Every event rated and encoded now; ``UnpricedSku`` or ``Unrateable`` on the first
        that cannot be (``rating.rate_all`` names them all)."""
        prepared = cls(book=book)
        rate = prepared._rate
        prepared._rows = [rate(i, e) for i, e in enumerate(events)]
        return prepared

    @classmethod
    def lazily(cls, events: Sequence[CostEvent], book: PriceBook) -> Prepared:
        """Rated and encoded as the COPY asks for each row (``UnpricedSku`` on the first)."""
        prepared = cls(book=book)
        prepared._pending = map(prepared._rate, range(len(events)), events)
        return prepared

    @property
    def rated(self) -> list[Rated]:
        assert self._rows is not None
        return [r for r, _, _ in self._rows]

    def __iter__(self) -> Iterator[Row]:
        if self._rows is not None:
            return iter(self._rows)
        assert self._pending is not None
        return self._pending

    # -- one event ----------------------------------------------------------------------

    def _time(self, at: datetime) -> _Time:
        version = None if self.book is None else self.book.in_force(at)
        # Instants of one version share its prices; one before every version has none.
        prices = {} if version is None else self._versions.setdefault(version.version, {})
        time = self._times[at] = _Time(
            _Fragment(_dumps(at.astimezone(UTC))), _TIMESTAMPTZ + _timestamptz(at), prices
        )
        return time

    def _price(self, time: _Time, e: CostEvent) -> _Price:
        assert self.book is not None
        version, price = self.book.price(e.sku, e.occurred_at)  # UnpricedSku
        key = (version.version, e.sku)
        found = self._prices.get(key)
        if found is None:
            unit, currency = price.unit_price_nanos, version.currency
            currency_field = self._texts[currency]
            found = self._prices[key] = _Price(
                version.version,
                unit,
                currency,
                price_tag(version.version, unit, currency),
                _int4(4, version.version) + _field(_numeric(unit)),
                _NULL + currency_field,
                currency_field,
                {},
            )
        time.prices[e.sku] = found
        return found

    def _amount(self, quantity: Decimal) -> tuple[Decimal, str, bytes]:
        numeric = _numeric(quantity)
        amount = self._amounts[id(quantity)] = (
            quantity,
            canonical_decimal(quantity),
            _size(len(numeric)) + numeric,
        )
        return amount

    def _rate(self, i: int, e: CostEvent) -> Row:
        """``rating.rate`` and ``_encode`` in one: the same ``Rated``, the same bytes."""
        at = e.occurred_at
        time = self._times.get(at)
        if time is None:
            time = self._time(at)
        price = time.prices.get(e.sku)
        if price is None:
            price = self._price(time, e)
        quantity = e.quantity
        amount = self._amounts.get(id(quantity))
        if amount is None:
            amount = self._amount(quantity)
        cost = price.costs.get(id(quantity))
        if cost is None:
            cost = bounded("quantity", cost_nanos(quantity, price.unit), price.currency)
            price.costs[id(quantity)] = cost
        base = e.baseline_quantity
        cache, outcome, reverses = e.cache, e.outcome, e.reverses
        texts = self._texts
        if base is None:
            base_text = base_cost = None
            money = price.no_baseline
            if cache is None and outcome is None and reverses is None:
                optional = _NULLS
            else:
                optional = _optional(texts, cache, _NULL, outcome, reverses)
        else:
            based = self._amounts.get(id(base))
            if based is None:
                based = self._amount(base)
            base_text = based[1]
            base_cost = bounded("baseline_quantity", cost_nanos(base, price.unit), price.currency)
            money = int8(8, base_cost) + price.currency_field
            optional = _optional(texts, cache, based[2], outcome, reverses)
        attributes = _dumps(e.attributes, option=_SORTED)
        if _HASHED_HERE:
            content = _sha256(
                _dumps(
                    (
                        e.event_id,
                        e.tenant_id,
                        e.use_case,
                        e.render_id,
                        e.stage,
                        e.sku,
                        amount[1],
                        time.utc,
                        cache,
                        base_text,
                        outcome,
                        reverses,
                        _Fragment(attributes),
                    )
                )
            ).digest()
        else:
            content = e.content_hash()
        middle = b"".join(
            (
                _UUID,
                e.event_id.int.to_bytes(16, "big"),  # UUID.bytes, without the property call
                texts[e.tenant_id],
                texts[e.use_case],
                _UUID,
                e.render_id.int.to_bytes(16, "big"),
                texts[e.stage],
                texts[e.sku],
                amount[2],
                time.field,
                optional,
                _jsonb(len(attributes) + 1, 1),
                attributes,
                price.version_and_unit,
                int8(8, cost),
                money,
                _SHA256,
                content,
            )
        )
        rated = Rated(i, e, content, price.version, price.unit, price.currency, cost, base_cost)
        return rated, price.tag, middle

    def _encode(self, r: Rated) -> Row:
        """The row of an event rated already (its hash kept as given)."""
        e = r.event
        texts = self._texts
        key = (r.price_version, e.sku)
        price = self._prices.get(key)
        if price is None:
            currency_field = texts[r.currency]
            price = self._prices[key] = _Price(
                r.price_version,
                r.unit_price_nanos,
                r.currency,
                price_tag(r.price_version, r.unit_price_nanos, r.currency),
                _int4(4, r.price_version) + _field(_numeric(r.unit_price_nanos)),
                _NULL + currency_field,
                currency_field,
                {},
            )
        at = e.occurred_at
        time = self._times.get(at)
        if time is None:
            time = self._time(at)
        base = e.baseline_quantity
        attributes = _dumps(e.attributes, option=_SORTED)
        middle = b"".join(
            (
                _UUID,
                e.event_id.int.to_bytes(16, "big"),
                texts[e.tenant_id],
                texts[e.use_case],
                _UUID,
                e.render_id.int.to_bytes(16, "big"),
                texts[e.stage],
                texts[e.sku],
                _field(_numeric(e.quantity)),
                time.field,
                _optional(
                    texts,
                    e.cache,
                    _NULL if base is None else _field(_numeric(base)),
                    e.outcome,
                    e.reverses,
                ),
                _jsonb(len(attributes) + 1, 1),
                attributes,
                price.version_and_unit,
                int8(8, r.cost_nanos),
                price.no_baseline
                if r.baseline_cost_nanos is None
                else int8(8, r.baseline_cost_nanos) + price.currency_field,
                _size(len(r.content)),
                r.content,
            )
        )
        return r, price.tag, middle


_NULLS = _NULL * 4  # cache, baseline_quantity, outcome, reverses: the usual event's


def _optional(texts: _Texts, cache: Any, baseline: bytes, outcome: Any, reverses: Any) -> bytes:
    return b"".join(
        (
            _NULL if cache is None else texts[cache],
            baseline,
            _NULL if outcome is None else texts[outcome],
            _NULL if reverses is None else _UUID + reverses.bytes,
        )
    )


# The hash above is ``events.content_hash`` in form 1, spelled with what the pass has at
# hand: the same JSON document (orjson's spelling of each value, the attributes with sorted
# keys), so the same bytes. Under any other form the event's own method computes it.
_HASHED_HERE = CONTENT_VERSION == 1

"""The ingest hot path changes nothing a producer can see: the msgspec decoder gives the very
events pydantic gives, or steps aside; the hand-encoded COPY rows are psycopg's bytes."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg._copy_base import BinaryFormatter
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.types.json import set_json_dumps

from ingest.fast_json import decode_array, decode_ndjson
from ingest.parsing import parse_body
from ingest.sample import sample_events
from ledger.copy_rows import Prepared, int8
from ledger.errors import LedgerError
from ledger.events import Cache, CostEvent
from ledger.journal import COPY_TYPES
from ledger.prices import PriceBook, PriceVersion, UnpricedSku, load_price_book_file
from ledger.rating import Unrateable, rate
from ledger.store import _copy_row
from service.cli.main import DEFAULT_PRICES

SAMPLE = [e.model_dump(mode="json") for e in itertools.islice(sample_events(40, seed=3), 300)]


def _same(fast: list[CostEvent], slow: list[CostEvent]) -> None:
    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f == s
        assert f.model_fields_set == s.model_fields_set
        assert f.model_dump() == s.model_dump()
        assert f.model_dump_json() == s.model_dump_json()
        assert f.content_hash() == s.content_hash()
        for name in CostEvent.model_fields:
            assert type(getattr(f, name)) is type(getattr(s, name)), name


def _dumps(value: Any) -> bytes:
    """JSON as a producer may send it: stdlib json, which spells integers past 64 bits."""
    return json.dumps(value, default=str).encode()


def _check(body: bytes, ndjson: bool = False) -> None:
    """Fast either agrees with pydantic or answers None; never accepts what pydantic refuses."""
    ctype = "application/x-ndjson" if ndjson else "application/json"
    fast = (decode_ndjson if ndjson else decode_array)(body, 10_000)
    try:
        slow = parse_body(body, ctype, 10_000)
    except (LedgerError, ValueError):
        assert fast is None
        return
    if fast is not None:
        _same(fast, slow)


def test_the_usual_body_takes_the_fast_path_and_gives_the_same_events() -> None:
    body = orjson.dumps(SAMPLE)
    fast = decode_array(body, 10_000)
    assert fast is not None
    _same(fast, parse_body(body, "application/json"))
    lines = b"\n".join(orjson.dumps(e) for e in SAMPLE) + b"\n\n"
    fast = decode_ndjson(lines, 10_000)
    assert fast is not None
    _same(fast, parse_body(lines, "application/x-ndjson"))


ODD = [
    ("tenant_id", "acme\n"),
    ("tenant_id", "ACME"),
    ("use_case", ""),
    ("sku", "gpu.h100.second\n"),
    ("quantity", "1e3"),
    ("quantity", " 2.5"),
    ("quantity", "-0"),
    ("quantity", "0.000"),
    ("quantity", "1234567890123.5"),
    ("quantity", "1." + "1" * 19),
    ("quantity", 2.5),
    ("quantity", 3),
    ("quantity", "NaN"),
    ("baseline_quantity", None),
    ("baseline_quantity", "000012.50"),
    ("occurred_at", "2026-10-01T10:00:00"),
    ("occurred_at", "2026-10-01 10:00:00Z"),
    ("occurred_at", "2026-10-01T10:00:00.1234567Z"),
    ("occurred_at", "2026-10-01T10:00:00+23:59"),
    ("occurred_at", "2026-02-30T10:00:00Z"),
    ("occurred_at", "1999-12-31T23:59:59Z"),
    ("occurred_at", (datetime.now(UTC) + timedelta(days=2)).isoformat()),
    ("event_id", "0B6F3A526A0E4F559A1C3D1C8F0E7A01"),
    ("event_id", "urn:uuid:0b6f3a52-6a0e-4f55-9a1c-3d1c8f0e7a01"),
    ("event_id", "{0b6f3a52-6a0e-4f55-9a1c-3d1c8f0e7a01}"),
    ("render_id", 12),
    ("stage", "UNET"),
    ("stage", "render"),
    ("cache", "HIT"),
    ("outcome", "delivered"),
    ("outcome", None),
    ("reverses", str(uuid.uuid4())),
    ("attributes", None),
    ("attributes", {}),
    ("attributes", {"wall_s": -1}),
    ("attributes", {"model": ""}),
    ("attributes", {"x": 2**64}),
    ("attributes", {"x": 1e16, "y": -0.0, "z": [1.5, {"a": 1e-7}]}),
    ("attributes", {"x": "\u0000"}),
    ("attributes", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
    ("extra", 1),
]


@pytest.mark.parametrize(("field", "value"), ODD)
def test_odd_spellings_agree_or_step_aside(field: str, value: Any) -> None:
    events = [dict(e) for e in SAMPLE[:12]]
    events[5][field] = value
    _check(_dumps(events))
    _check(b"\n".join(_dumps(e) for e in events), ndjson=True)
    events[5].pop(field)
    _check(_dumps(events))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{}",
        b"[1]",
        b"[{}]",
        b"[" + b"{}," * 10_001 + b"{}]",
        b'[{"event_id": "x", "event_id": "y"}]',
        orjson.dumps(SAMPLE)[:-3],
        orjson.dumps(SAMPLE).replace(b'"tenant_id":', b'"tenant_id":"a","tenant_id":', 1),
        orjson.dumps(SAMPLE).replace(b'"quantity":"', b'"quantity":"1', 1),
        b'[{"a": NaN}]',
        b'[{"attributes": {"x": "\\ud800"}}]',
        _dumps([SAMPLE[0] | {"attributes": {"x": "\ud800"}}]),
    ],
)
def test_hostile_bodies_agree_or_step_aside(body: bytes) -> None:
    _check(body)
    _check(body.replace(b"},", b"}\n"), ndjson=True)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    index=st.integers(0, len(SAMPLE) - 1),
    field=st.sampled_from([*CostEvent.model_fields, "other"]),
    value=_VALUES | st.dictionaries(st.text(max_size=4), _VALUES, max_size=3),
)
def test_generated_changes_agree_or_step_aside(index: int, field: str, value: Any) -> None:
    event = dict(SAMPLE[index])
    event[field] = value
    _check(_dumps([event]))


# -- the COPY rows ----------------------------------------------------------------------


def _book() -> PriceBook:
    f = load_price_book_file(DEFAULT_PRICES)
    prices = {p.sku: p for p in f.prices}
    return PriceBook((PriceVersion(1, f.name, f.effective_from, f.currency, prices),))


class _Context:
    """psycopg's adapters as the append used them: binary COPY types, JSONB by orjson (keys
    sorted: the one pass writes the text it hashes; JSONB stores either spelling alike)."""

    connection = None

    def __init__(self) -> None:
        self.adapters = AdaptersMap(psycopg.adapters)
        set_json_dumps(
            lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode(), self.adapters
        )


def test_copy_rows_are_the_bytes_psycopg_would_send() -> None:
    tx = Transformer(_Context())
    oids = [psycopg.postgres.types[t].oid for t in COPY_TYPES]
    tx.set_dumper_types(oids, psycopg.pq.Format.BINARY)
    formatter = BinaryFormatter(tx)
    book = _book()
    events = [CostEvent.model_validate(e) for e in SAMPLE]
    events.append(
        events[0].model_copy(
            update={"reverses": uuid.uuid4(), "attributes": {"é": "ü", "n": [1, 2.5, None]}}
        )
    )
    rated = [rate(i, e, book) for i, e in enumerate(events)]
    rated[-1].cost_nanos = -rated[-1].cost_nanos  # reversals are stored negated
    expected = bytearray()
    for seq, r in enumerate(rated, start=7):
        expected += formatter.write_row(_copy_row(seq, r, 3))
    expected += formatter.end()
    ours = bytearray(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
    for seq, (_, _, middle) in enumerate(Prepared(rated), start=7):
        ours += len(_copy_row(seq, rated[0], 3)).to_bytes(2, "big")
        ours += int8(8, seq) + middle + int8(8, 3)
    ours += b"\xff\xff"
    assert bytes(ours) == bytes(expected)


def test_quantities_keep_their_digits() -> None:
    event = dict(SAMPLE[0]) | {"quantity": "000012.500", "baseline_quantity": "0.000"}
    (fast,) = decode_array(orjson.dumps([event]), 10) or []
    assert str(fast.quantity) == "12.500"
    assert fast.baseline_quantity == Decimal(0)
    assert str(fast.baseline_quantity) == "0"


# -- rating, hashing and encoding in one pass ---------------------------------------------


def _variants() -> list[CostEvent]:
    """The sample, and events that take each branch of the one pass: a baseline, a cache,
    a reversal, nested and float attributes, another UTC offset, quantities equal in value
    but spelled apart, and one ``Decimal`` shared by several events (as the fast path does)."""
    events = [CostEvent.model_validate(e) for e in SAMPLE]
    first = events[0]
    shared = Decimal("2.500")
    east = timezone(timedelta(hours=5, minutes=30))
    changes: list[dict[str, Any]] = [
        {"baseline_quantity": Decimal("1.25"), "cache": Cache.MISS},
        {"baseline_quantity": Decimal("0"), "cache": Cache.HIT, "quantity": Decimal("0")},
        {"reverses": uuid.uuid4()},
        {"attributes": {"z": [1.5, {"a": None}], "b": "é", "a": 2**40}},
        {"occurred_at": first.occurred_at.astimezone(east)},
        {"quantity": Decimal("1")},
        {"quantity": Decimal("1.0")},
        {"quantity": Decimal("1E+1")},
        {"quantity": shared},
        {"quantity": shared, "baseline_quantity": shared},
        {"quantity": shared, "occurred_at": first.occurred_at.astimezone(east)},
    ]
    events += [first.model_copy(update=c | {"event_id": uuid.uuid4()}) for c in changes]
    events += [e.model_copy(update={"quantity": shared}) for e in events[:20]]
    return events


def _same_rows(events: list[CostEvent], book: PriceBook) -> None:
    reference = list(Prepared([rate(i, e, book) for i, e in enumerate(events)]))
    assert list(Prepared.rate_now(events, book)) == reference
    assert list(Prepared.lazily(events, book)) == reference
    for (r, _, _), e in zip(reference, events, strict=True):
        assert r.content == e.content_hash()


def test_one_pass_rates_hashes_and_encodes_as_rate_does() -> None:
    _same_rows(_variants(), _book())


def test_one_pass_on_fast_decoded_events_shares_work_and_not_results() -> None:
    fast = decode_array(orjson.dumps(SAMPLE * 2), 10_000)
    assert fast is not None
    _same_rows(fast, _book())


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    index=st.integers(0, len(SAMPLE) - 1),
    quantity=st.decimals(min_value=0, max_value=10**6, places=6),
    baseline=st.none() | st.decimals(min_value=0, max_value=10**3, places=9),
    offset=st.integers(-14 * 60, 14 * 60),
    attributes=st.dictionaries(
        st.text(max_size=4),
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
        max_size=4,
    ),
)
def test_generated_events_rate_alike_in_one_pass(
    index: int,
    quantity: Decimal,
    baseline: Decimal | None,
    offset: int,
    attributes: dict[str, Any],
) -> None:
    base = CostEvent.model_validate(SAMPLE[index])
    try:
        event = CostEvent.model_validate(
            base.model_dump()
            | {
                "quantity": quantity,
                "baseline_quantity": baseline,
                "attributes": attributes,
                "occurred_at": base.occurred_at.astimezone(timezone(timedelta(minutes=offset))),
            }
        )
    except ValueError:
        return  # not an event; the one pass never sees it
    book = _book()
    try:
        expected = rate(0, event, book)
    except Unrateable as exc:
        refused = (exc.field, str(exc))
    else:
        refused = None
    if refused is not None:
        with pytest.raises(Unrateable) as raised:
            Prepared.rate_now([event], book)
        assert (raised.value.field, str(raised.value)) == refused
        return
    _same_rows([event, event.model_copy(update={"event_id": uuid.uuid4()})], book)
    assert Prepared.rate_now([event], book).rated == [expected]


def test_one_pass_refuses_what_rate_refuses() -> None:
    book = _book()
    event = CostEvent.model_validate(SAMPLE[3])
    unpriced = event.model_copy(update={"sku": "no.such.sku"})
    with pytest.raises(UnpricedSku):
        Prepared.rate_now([event, unpriced], book)
    with pytest.raises(UnpricedSku):
        list(Prepared.lazily([event, unpriced], book))
    dear = event.model_copy(update={"quantity": Decimal("999999999999")})
    with pytest.raises(Unrateable) as exc:
        Prepared.rate_now([dear], book)
    assert exc.value.field == "quantity"
    with pytest.raises(Unrateable) as exc:
        rate(0, dear, book)
    assert exc.value.field == "quantity"

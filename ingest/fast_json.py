"""The ingest hot path: the usual, plainly valid body decoded by msgspec in C.

``ingest.parsing`` (one pydantic call) stays the definition of a valid event, of every error
message and of the OpenAPI schema. This module only takes a shortcut for what is
*certainly* valid there and gives back the very same ``CostEvent``s; at the first doubt
(any msgspec error, a spelling it does not take, a rule that fails) it answers ``None`` and
the caller parses the body the pydantic way, which then says exactly what is wrong.

What the shortcut takes is a strict subset of what pydantic takes:

- quantities as decimal *strings* without sign or exponent, at most 12 digits before the
  point and 18 after (a JSON number goes the exact-number way of ``ingest.parsing``);
- ``occurred_at`` as RFC 3339 with ``T``, 0-6 digits of fraction and ``Z`` or ``±hh:mm``;
- UUIDs as msgspec reads them (36 characters with hyphens, or 32 hex digits), which pydantic
  reads to the same value;
- the id, tenant, use case and SKU patterns anchored with ``\\Z``, as pydantic's regex
  engine anchors ``$`` (Python's ``$`` would let a trailing newline in).

The model's own rules (attributes, typed attributes, time bounds, outcome) run through the
same functions as the model's validators. ``tests/test_fast_json.py`` holds the two paths
together on generated and hostile bodies.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from ingest.parsing import NDJSON_TYPES, parse_body
from ledger.events import (
    EARLIEST,
    MAX_FUTURE,
    TENANT_PATTERN,
    USE_CASE_PATTERN,
    Cache,
    CostEvent,
    Outcome,
    Stage,
    _check_attributes,
    _check_known_attributes,
)

_SKU_PATTERN: str = CostEvent.model_fields["sku"].metadata[0].pattern  # the model's own
# Python's re (msgspec's) reads "$" as "end, or before a final newline"; pydantic's does not.
_TENANT = TENANT_PATTERN.removesuffix("$") + r"\Z"
_USE_CASE = USE_CASE_PATTERN.removesuffix("$") + r"\Z"
_SKU = _SKU_PATTERN.removesuffix("$") + r"\Z"
_QUANTITY = r"^[0-9]{1,12}(\.[0-9]{1,18})?\Z"
_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})\Z"
)

_TENANT_RE = re.compile(_TENANT)
_USE_CASE_RE = re.compile(_USE_CASE)
_SKU_RE = re.compile(_SKU)
_QUANTITY_RE = re.compile(_QUANTITY)
_TIME_RE = re.compile(_TIME)


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """One event as the usual producer spells it; optional fields UNSET when absent.

    Text is checked in ``_events``, where a value repeated in the batch is checked once;
    attributes are kept as their JSON text, decoded and checked once per distinct text."""

    event_id: UUID
    tenant_id: str
    use_case: str
    render_id: UUID
    stage: Stage
    sku: str
    quantity: str
    occurred_at: str
    cache: Cache | UnsetType | None = UNSET
    baseline_quantity: str | UnsetType | None = UNSET
    outcome: Outcome | UnsetType | None = UNSET
    reverses: UUID | UnsetType | None = UNSET
    attributes: msgspec.Raw | UnsetType = UNSET


_ARRAY: Final = msgspec.json.Decoder(list[_Wire])
_LINE: Final = msgspec.json.Decoder(_Wire)
_ATTRIBUTES: Final = msgspec.json.Decoder(dict[str, Any])  # as the Struct decoded them before
_REQUIRED: Final = (
    "event_id",
    "tenant_id",
    "use_case",
    "render_id",
    "stage",
    "sku",
    "quantity",
    "occurred_at",
)
_OPTIONAL: Final = ("cache", "baseline_quantity", "outcome", "reverses", "attributes")
_ZERO: Final = Decimal(0)
_SCALARS: Final = frozenset({str, int, bool, type(None)})  # immutable: a copy shares nothing
_new = object.__new__
_set = object.__setattr__
_fromiso = datetime.fromisoformat
_RENDER: Final = Stage.RENDER


class _Doubt(Exception):
    """Not certainly valid: the pydantic path decides."""


def _given(shape: tuple[bool, ...]) -> frozenset[str]:
    return frozenset(
        _REQUIRED + tuple(n for n, unset in zip(_OPTIONAL, shape, strict=True) if not unset)
    )


def _time(text: str, ceiling: datetime) -> datetime:
    if not _TIME_RE.match(text):
        raise _Doubt
    at = _fromiso(text)
    if at > ceiling or at < EARLIEST:
        raise _Doubt
    return at


def _quantity(text: str) -> Decimal:
    if not _QUANTITY_RE.match(text):
        raise _Doubt
    value = Decimal(text)
    return _ZERO if value.is_zero() else value  # as the model's _plain_zero


def _labels(tenant: str, use_case: str, sku: str) -> None:
    if not (_TENANT_RE.match(tenant) and _USE_CASE_RE.match(use_case) and _SKU_RE.match(sku)):
        raise _Doubt


def _attributes(text: bytes) -> tuple[dict[str, Any], bool]:
    """Checked attributes, and whether every value is a scalar (then copies share nothing)."""
    attributes = _check_attributes(_ATTRIBUTES.decode(text))
    _check_known_attributes(attributes)
    return attributes, all(type(v) in _SCALARS for v in attributes.values())


def _events(wires: list[_Wire]) -> list[CostEvent] | None:
    """Each event as pydantic would have made it, or None at the first doubt.

    One body's distinct texts (labels, times, quantities, attributes) are checked and
    converted once; a render's events repeat most of them. The loop is one function, not a
    method per field, as it runs for every event."""
    ceiling = datetime.now(UTC) + MAX_FUTURE  # before the model's "now": stricter
    labels: set[tuple[str, str, str]] = set()
    times: dict[str, datetime] = {}
    quantities: dict[str, Decimal] = {}
    shapes: dict[tuple[bool, ...], frozenset[str]] = {}
    known: dict[bytes, dict[str, Any]] = {}
    out: list[CostEvent] = []
    append = out.append
    try:
        for w in wires:
            tenant, use_case, sku = w.tenant_id, w.use_case, w.sku
            key = (tenant, use_case, sku)
            if key not in labels:
                _labels(tenant, use_case, sku)
                labels.add(key)
            text = w.occurred_at
            at = times.get(text)
            if at is None:
                at = times[text] = _time(text, ceiling)
            text = w.quantity
            quantity = quantities.get(text)
            if quantity is None:
                quantity = quantities[text] = _quantity(text)
            cache, baseline, outcome, reverses, raw = (
                w.cache,
                w.baseline_quantity,
                w.outcome,
                w.reverses,
                w.attributes,
            )
            shape = (
                cache is UNSET,
                baseline is UNSET,
                outcome is UNSET,
                reverses is UNSET,
                raw is UNSET,
            )
            given = shapes.get(shape)
            if given is None:
                given = shapes[shape] = _given(shape)
            if raw is UNSET:
                attributes: dict[str, Any] = {}
            else:
                body = bytes(raw)
                found = known.get(body)
                if found is None:
                    attributes, flat = _attributes(body)
                    if flat:  # a repeat gets a copy of its own, as pydantic would give it
                        known[body] = attributes
                else:
                    attributes = found.copy()
            if cache is UNSET:
                cache = None
            if outcome is UNSET:
                outcome = None
            if reverses is UNSET:
                reverses = None
            stage = w.stage
            if stage is _RENDER:
                if outcome is None and reverses is None:
                    raise _Doubt
            elif outcome is not None:
                raise _Doubt
            based: Decimal | None = None
            if baseline is not UNSET and baseline is not None:
                based = quantities.get(baseline)
                if based is None:
                    based = quantities[baseline] = _quantity(baseline)
            # What pydantic's model_construct does, without its per-call overhead: the values
            # are the ones validation would have produced (tests/test_fast_ingest.py holds
            # them).
            event: CostEvent = _new(CostEvent)
            _set(
                event,
                "__dict__",
                {
                    "event_id": w.event_id,
                    "tenant_id": tenant,
                    "use_case": use_case,
                    "render_id": w.render_id,
                    "stage": stage,
                    "sku": sku,
                    "quantity": quantity,
                    "occurred_at": at,
                    "cache": cache,
                    "baseline_quantity": based,
                    "outcome": outcome,
                    "reverses": reverses,
                    "attributes": attributes,
                },
            )
            _set(event, "__pydantic_fields_set__", set(given))
            _set(event, "__pydantic_extra__", None)
            _set(event, "__pydantic_private__", None)
            append(event)
    except (_Doubt, ValueError, TypeError, msgspec.DecodeError):
        return None
    return out


def decode_array(body: bytes, max_events: int) -> list[CostEvent] | None:
    """The events of a JSON array body, or None: parse it with ``ingest.parsing``."""
    try:
        wires = _ARRAY.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not wires or len(wires) > max_events:
        return None
    return _events(wires)


def decode_ndjson(body: bytes, max_events: int) -> list[CostEvent] | None:
    """The events of an NDJSON body (blank lines skipped), or None."""
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines or len(lines) > max_events:
        return None
    try:
        wires = [_LINE.decode(line) for line in lines]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return _events(wires)


def parse(body: bytes, content_type: str | None, max_events: int) -> list[CostEvent]:
    """``ingest.parsing.parse_body``, the same events and the same errors, sooner."""
    media = (content_type or "application/json").split(";")[0].strip().lower()
    events = None
    if media in NDJSON_TYPES:
        events = decode_ndjson(body, max_events)
    elif media in ("application/json", "text/json", ""):
        events = decode_array(body, max_events)
    return events if events is not None else parse_body(body, content_type, max_events)

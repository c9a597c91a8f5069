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

    Text is checked in ``_Batch``, where a value repeated in the batch is checked once."""

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
    attributes: dict[str, Any] | UnsetType = UNSET


_ARRAY: Final = msgspec.json.Decoder(list[_Wire])
_LINE: Final = msgspec.json.Decoder(_Wire)
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
_new = object.__new__
_set = object.__setattr__
_fromiso = datetime.fromisoformat


class _Doubt(Exception):
    """Not certainly valid: the pydantic path decides."""


def _given(shape: tuple[bool, ...]) -> frozenset[str]:
    return frozenset(
        _REQUIRED + tuple(n for n, unset in zip(_OPTIONAL, shape, strict=True) if not unset)
    )


class _Batch:
    """One body's events; each distinct text (tenant, use case, SKU, time, quantity) is
    checked and converted once per body."""

    def __init__(self) -> None:
        self.ceiling = datetime.now(UTC) + MAX_FUTURE  # before the model's "now": stricter
        self.labels: set[tuple[str, str, str]] = set()
        self.times: dict[str, datetime] = {}
        self.quantities: dict[str, Decimal] = {}
        self.shapes: dict[tuple[bool, ...], frozenset[str]] = {}

    def time(self, text: str) -> datetime:
        at = self.times.get(text)
        if at is None:
            if not _TIME_RE.match(text):
                raise _Doubt
            at = _fromiso(text)
            if at > self.ceiling or at < EARLIEST:
                raise _Doubt
            self.times[text] = at
        return at

    def quantity(self, text: str) -> Decimal:
        value = self.quantities.get(text)
        if value is None:
            if not _QUANTITY_RE.match(text):
                raise _Doubt
            value = Decimal(text)
            if value.is_zero():
                value = _ZERO  # as the model's _plain_zero
            self.quantities[text] = value
        return value

    def labels_ok(self, tenant: str, use_case: str, sku: str) -> None:
        key = (tenant, use_case, sku)
        if key not in self.labels:
            if not (_TENANT_RE.match(tenant) and _USE_CASE_RE.match(use_case)):
                raise _Doubt
            if not _SKU_RE.match(sku):
                raise _Doubt
            self.labels.add(key)

    def event(self, w: _Wire) -> CostEvent:
        self.labels_ok(w.tenant_id, w.use_case, w.sku)
        at = self.time(w.occurred_at)
        cache, baseline, outcome, reverses, attributes = (
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
            attributes is UNSET,
        )
        given = self.shapes.get(shape)
        if given is None:
            given = self.shapes[shape] = _given(shape)
        if attributes is UNSET:
            attributes = {}
        else:
            attributes = _check_attributes(attributes)
            _check_known_attributes(attributes)
        if outcome is UNSET:
            outcome = None
        if reverses is UNSET:
            reverses = None
        stage = w.stage
        if stage is Stage.RENDER:
            if outcome is None and reverses is None:
                raise _Doubt
        elif outcome is not None:
            raise _Doubt
        # What pydantic's model_construct does, without its per-call overhead: the values
        # are the ones validation would have produced (tests/test_fast_json.py holds them).
        event: CostEvent = _new(CostEvent)
        _set(
            event,
            "__dict__",
            {
                "event_id": w.event_id,
                "tenant_id": w.tenant_id,
                "use_case": w.use_case,
                "render_id": w.render_id,
                "stage": stage,
                "sku": w.sku,
                "quantity": self.quantity(w.quantity),
                "occurred_at": at,
                "cache": None if cache is UNSET else cache,
                "baseline_quantity": None
                if baseline is UNSET or baseline is None
                else self.quantity(baseline),
                "outcome": outcome,
                "reverses": reverses,
                "attributes": attributes,
            },
        )
        _set(event, "__pydantic_fields_set__", set(given))
        _set(event, "__pydantic_extra__", None)
        _set(event, "__pydantic_private__", None)
        return event


def _events(wires: list[_Wire]) -> list[CostEvent] | None:
    batch = _Batch()
    try:
        return [batch.event(w) for w in wires]
    except (_Doubt, ValueError, TypeError):
        return None


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

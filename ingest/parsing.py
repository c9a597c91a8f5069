"""Turning request bodies and file rows into ``CostEvent``s, with every error located."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from ledger.errors import MAX_REPORTED_ERRORS, BatchInvalid, BatchTooLarge, FieldError
from ledger.events import CostEvent, ExactNumber

EVENT = TypeAdapter(CostEvent)
DEFAULT_MAX_EVENTS = 10_000


@cache
def _events(max_events: int) -> TypeAdapter[list[CostEvent]]:
    # pydantic-core stops at the first element past max_length, before validating the rest:
    # the count is checked before a garbage body can make a million errors.
    return TypeAdapter(Annotated[list[CostEvent], Field(max_length=max_events)])


NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class RowError(ValueError):
    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(f"line {line}, field {field}: {message}")
        self.line = line
        self.field = field
        self.message = message


class MalformedBody(ValueError):
    """The body is not JSON (or NDJSON) at all; nothing about events can be said yet."""


def field_errors(exc: ValidationError, index: int | None = None) -> list[FieldError]:
    """Pydantic's errors as (index, field, message); ``index`` given when validating one event."""
    out = []
    for err in exc.errors(include_url=False, include_input=False)[:MAX_REPORTED_ERRORS]:
        loc = list(err["loc"])
        i = index if index is not None else (loc.pop(0) if loc and isinstance(loc[0], int) else 0)
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "json_invalid":
            field = "json"
        elif loc:
            field = ".".join(str(p) for p in loc)
        else:
            # Cross-field rules name their field first: "outcome: a render event needs ...".
            field, _, rest = message.partition(": ")
            message = rest or message
        out.append(FieldError(int(i), field, message))
    return out


def _is_syntax_error(exc: ValidationError) -> str | None:
    for err in exc.errors(include_url=False, include_input=False):
        if err["type"] == "json_invalid":
            return str(err["msg"])
    return None


# A body that sends a quantity as a JSON number: pydantic would read it through a double.
_NUMERIC_QUANTITY = re.compile(rb'quantity"\s*:\s*-?[0-9]')  # a literal first: scans fast


def _exact(text: bytes) -> Any:
    """JSON with every non-integer number kept as written (``ExactNumber``), for quantities."""
    return json.loads(text, parse_float=ExactNumber)


def parse_json_array(body: bytes, max_events: int = DEFAULT_MAX_EVENTS) -> list[CostEvent]:
    try:
        events = _events(max_events).validate_json(body)
        if _NUMERIC_QUANTITY.search(body):
            # Counted and checked above; read again so 1.123456789012345678 stays exact.
            return _events(max_events).validate_python(_exact(body))
        return events
    except ValidationError as exc:
        syntax = _is_syntax_error(exc)
        if syntax:
            raise MalformedBody(f"body is not valid JSON: {syntax}") from exc
        errors = exc.errors(include_url=False, include_input=False)
        if errors and errors[0]["type"] == "list_type" and not errors[0]["loc"]:
            raise MalformedBody("body must be a JSON array of events (or NDJSON)") from exc
        too_long = next((e for e in errors if e["type"] == "too_long" and not e["loc"]), None)
        if too_long is not None:
            size = int((too_long.get("ctx") or {}).get("actual_length") or max_events + 1)
            raise BatchTooLarge(size, max_events) from exc
        raise BatchInvalid(field_errors(exc), total=exc.error_count()) from exc


def parse_ndjson(body: bytes, max_events: int = DEFAULT_MAX_EVENTS) -> list[CostEvent]:
    """One event per line; blank lines are skipped, an index counts events, not lines.

    Lines are counted before any is validated, and errors are collected up to a bound.
    """
    lines = body.splitlines()
    count = sum(1 for line in lines if line.strip()) if len(lines) > max_events else len(lines)
    if count > max_events:
        raise BatchTooLarge(count, max_events)
    events: list[CostEvent] = []
    errors: list[FieldError] = []
    total = 0
    index = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            if _NUMERIC_QUANTITY.search(line):
                events.append(EVENT.validate_python(_exact(line)))
            else:
                events.append(EVENT.validate_json(line))
        except json.JSONDecodeError as exc:
            raise MalformedBody(f"line {lineno} is not valid JSON: {exc}") from exc
        except ValidationError as exc:
            syntax = _is_syntax_error(exc)
            if syntax:
                raise MalformedBody(f"line {lineno} is not valid JSON: {syntax}") from exc
            total += exc.error_count()
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.extend(field_errors(exc, index))
        index += 1
    if errors:
        raise BatchInvalid(errors, total=total)
    return events


def parse_body(
    body: bytes, content_type: str | None, max_events: int = DEFAULT_MAX_EVENTS
) -> list[CostEvent]:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        return parse_ndjson(body, max_events)
    if media in ("application/json", "text/json", ""):
        return parse_json_array(body, max_events)
    raise MalformedBody(
        f"unsupported content type {media!r}: send application/json or application/x-ndjson"
    )


def parse_row(row: dict[str, Any], index: int) -> CostEvent:
    try:
        return EVENT.validate_python(row)
    except ValidationError as exc:
        raise BatchInvalid(field_errors(exc, index)) from exc

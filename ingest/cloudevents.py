"""Cost events as CloudEvents 1.0 in structured mode (JSON), for metering tools that speak them.

One CloudEvent is one cost event. The envelope carries what identifies it and the event's
other fields are its ``data``:

============================  ===========================================================
CloudEvents attribute         cost event
============================  ===========================================================
``id``                        ``event_id`` (a UUID)
``source``                    the tenant: the URI's last path segment, as in
                              ``/tenants/acme`` or ``https://render.example.com/tenants/acme``
``subject``                   ``render_id`` (a UUID)
``time``                      ``occurred_at`` (required here, with a time zone)
``type``                      must be ``dev.renderledger.cost.v1``
``specversion``               must be ``1.0``
``datacontenttype``           absent or ``application/json``
``data``                      every other field: use_case, stage, sku, quantity, cache, ...
============================  ===========================================================

Extension attributes (``traceparent``, a tool's own) are accepted and not stored. Each event
is validated as the ``CostEvent`` it maps to, by the same model, so the rules, the content
hash and idempotency are those of the JSON way in; errors name the CloudEvents attribute
(``source``, ``data.quantity``) rather than the cost event's field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from pydantic import ValidationError

from ingest.parsing import EVENT, MalformedBody, field_errors
from ledger.errors import MAX_REPORTED_ERRORS, BatchInvalid, BatchTooLarge, FieldError
from ledger.events import TENANT_RE, CostEvent, ExactNumber

STRUCTURED: Final = "application/cloudevents+json"
BATCH: Final = "application/cloudevents-batch+json"
MEDIA_TYPES: Final = (STRUCTURED, BATCH)
SPECVERSION: Final = "1.0"
TYPE: Final = "dev.renderledger.cost.v1"

# Envelope attribute -> the cost event's field it carries.
ENVELOPE: Final = {
    "id": "event_id",
    "source": "tenant_id",
    "subject": "render_id",
    "time": "occurred_at",
}
_FIELD_OF: Final = {field: attribute for attribute, field in ENVELOPE.items()}
_CONTEXT: Final = frozenset({*ENVELOPE, "specversion", "type", "datacontenttype", "dataschema"})
# Extension attribute names: lower-case ASCII letters and digits (CloudEvents 1.0, 3.1.1).
_EXTENSION = re.compile(r"[a-z0-9]{1,20}\Z")
_SCALAR = (str, int, float, bool)


def attribute_of(field: str) -> str:
    """A cost event's field as a CloudEvents producer names it: ``tenant_id`` is ``source``,
    ``quantity`` is ``data.quantity``."""
    head, dot, rest = field.partition(".")
    if head in _FIELD_OF:
        return _FIELD_OF[head] + dot + rest
    return f"data.{field}"


def _tenant(source: str) -> str | None:
    """The tenant a ``source`` names: the segment after its last '/'."""
    _, slash, tenant = source.rpartition("/")
    return tenant if slash and TENANT_RE.match(tenant) else None


def _envelope(index: int, event: Any) -> tuple[dict[str, Any] | None, list[FieldError]]:
    """The cost event's fields of one CloudEvent, or what is wrong with its envelope."""
    if not isinstance(event, dict):
        return None, [FieldError(index, "event", "must be a CloudEvent (a JSON object)")]
    errors: list[FieldError] = []

    def wrong(field: str, message: str) -> None:
        errors.append(FieldError(index, field, message))

    if event.get("specversion") != SPECVERSION:
        wrong("specversion", f'must be "{SPECVERSION}" (CloudEvents 1.0)')
    if event.get("type") != TYPE:
        wrong("type", f'must be "{TYPE}", got {_shown(event.get("type"))}')
    for attribute in ("id", "source", "subject", "time"):
        value = event.get(attribute)
        if not isinstance(value, str) or not value:
            meaning = ENVELOPE[attribute]
            wrong(attribute, f"required: a non-empty string, the cost event's {meaning}")
    source = event.get("source")
    if isinstance(source, str) and source and _tenant(source) is None:
        wrong(
            "source",
            "must end in /<tenant id> (lower-case letters, digits, '_' and '-'), "
            "e.g. /tenants/acme",
        )
    content_type = event.get("datacontenttype")
    if content_type is not None and (
        not isinstance(content_type, str)
        or content_type.split(";")[0].strip().lower() != "application/json"
    ):
        wrong("datacontenttype", "must be application/json, or absent")
    if "data_base64" in event:
        wrong("data_base64", "send the cost event as JSON in data, not base64")
    data = event.get("data")
    if not isinstance(data, dict):
        wrong("data", "required: a JSON object with the cost event's other fields")
    else:
        for field in sorted(data.keys() & _FIELD_OF.keys()):
            wrong(f"data.{field}", f"carried by the CloudEvent's {_FIELD_OF[field]}, not in data")
    for name in event.keys() - _CONTEXT - {"data", "data_base64"}:
        if not _EXTENSION.match(name):
            wrong(name, "not a CloudEvents attribute: extension names are a-z and 0-9 only")
        elif event[name] is not None and not isinstance(event[name], _SCALAR):
            wrong(name, "an extension attribute's value must be a string, number or boolean")
    if errors:
        return None, errors
    assert isinstance(data, dict)
    assert isinstance(source, str)
    fields = dict(data)
    fields.update(
        event_id=event["id"],
        tenant_id=_tenant(source),
        render_id=event["subject"],
        occurred_at=event["time"],
    )
    return fields, []


def _shown(value: object) -> str:
    return repr(value)[:80]


def parse_cloudevents(body: bytes, media: str, max_events: int) -> list[CostEvent]:
    """The cost events of a structured CloudEvent (``media`` STRUCTURED) or a batch of them
    (BATCH); all or nothing, errors located by index and CloudEvents attribute."""
    try:
        doc = json.loads(body, parse_float=ExactNumber)  # quantities as numbers stay exact
    except RecursionError as exc:
        raise MalformedBody("body is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise MalformedBody(f"body is not valid JSON: {exc}") from exc
    if media == BATCH:
        if not isinstance(doc, list):
            raise MalformedBody(f"a {BATCH} body is a JSON array of CloudEvents")
        if len(doc) > max_events:
            raise BatchTooLarge(len(doc), max_events)
        items = doc
    else:
        if not isinstance(doc, dict):
            raise MalformedBody(
                f"a {STRUCTURED} body is one CloudEvent (a JSON object); send several as {BATCH}"
            )
        items = [doc]
    events: list[CostEvent] = []
    errors: list[FieldError] = []
    total = 0
    for index, item in enumerate(items):
        fields, wrong = _envelope(index, item)
        if fields is None:
            total += len(wrong)
            errors.extend(wrong[: max(0, MAX_REPORTED_ERRORS - len(errors))])
            continue
        try:
            events.append(EVENT.validate_python(fields))
        except ValidationError as exc:
            total += exc.error_count()
            errors.extend(
                FieldError(e.index, attribute_of(e.field), e.message)
                for e in field_errors(exc, index)[: max(0, MAX_REPORTED_ERRORS - len(errors))]
            )
    if errors:
        raise BatchInvalid(errors, total=total)
    return events

"""``/v1/events``: the HTTP way in, and reading the log back in order."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from ingest import cloudevents
from ingest.fast_json import parse
from ingest.parsing import EVENT, MalformedBody
from ledger.errors import BatchInvalid, BatchTooLarge, EventConflict, FieldError
from ledger.events import TENANT_ID, TENANT_PATTERN, Stage, duration
from ledger.journal import StoredEvent
from ledger.money import format_nanos
from ledger.store import Ledger, Receipt
from reports.archive_events import read_after, read_render
from service.http.deps import IngestKey, LedgerDep, ReadKey, SettingsDep
from service.http.errors import http_error, responses
from service.http.event_schemas import EventOut, EventPage, ReceiptOut, RenderTrace, StageCost
from service.keys import Principal

router = APIRouter(prefix="/v1", tags=["events"], responses=responses(401, 403, 404, 422))

_ERRORS = responses(400, 401, 403, 409, 413, 422)


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise http_error(f"body of {declared} bytes exceeds the limit of {limit} bytes", 413)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise http_error(f"body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


class ForeignTenant(Exception):
    def __init__(self, errors: list[dict[str, object]]) -> None:
        self.errors = errors


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def _ingest(ledger: Ledger, body: bytes, content_type: str | None, key: Principal) -> Receipt:
    media = _media(content_type)
    if media in cloudevents.MEDIA_TYPES:
        events = cloudevents.parse_cloudevents(body, media, ledger.max_batch_events)
        tenant_field = "source"
    else:
        events = parse(body, content_type, ledger.max_batch_events)
        tenant_field = "tenant_id"
    if not key.is_admin:
        foreign = [
            {
                "index": i,
                "field": tenant_field,
                "message": f"this key writes for {key.tenant_id!r} only",
            }
            for i, e in enumerate(events)
            if e.tenant_id != key.tenant_id
        ]
        if foreign:
            raise ForeignTenant(foreign)
    try:
        return ledger.append(events)
    except BatchInvalid as exc:
        if tenant_field == "tenant_id":
            raise
        # The ledger names cost event fields; a CloudEvents sender reads attributes.
        named = [
            FieldError(e.index, cloudevents.attribute_of(e.field), e.message) for e in exc.errors
        ]
        raise BatchInvalid(named, total=exc.total) from exc


def _cloudevent_schema() -> dict[str, Any]:
    """A CloudEvent carrying a cost event, for the OpenAPI document: ``data`` is the cost
    event's schema without the four fields the envelope carries."""
    data = EVENT.json_schema(ref_template="#/components/schemas/{model}")
    data.pop("$defs", None)
    carried = set(cloudevents.ENVELOPE.values())
    data["title"] = "CostEventData"
    data["properties"] = {k: v for k, v in data["properties"].items() if k not in carried}
    data["required"] = [k for k in data.get("required", []) if k not in carried]
    return {
        "title": "CostCloudEvent",
        "type": "object",
        "required": ["specversion", "id", "source", "subject", "type", "time", "data"],
        "properties": {
            "specversion": {"const": cloudevents.SPECVERSION},
            "id": {"type": "string", "format": "uuid", "description": "the event_id"},
            "source": {
                "type": "string",
                "description": "ends in /<tenant id>, e.g. /tenants/acme",
                "pattern": f"/{TENANT_ID}$",
            },
            "subject": {"type": "string", "format": "uuid", "description": "the render_id"},
            "type": {"const": cloudevents.TYPE},
            "time": {"type": "string", "format": "date-time", "description": "occurred_at"},
            "datacontenttype": {"const": "application/json"},
            "data": data,
        },
    }


_CLOUDEVENT = _cloudevent_schema()


@router.post(
    "/events",
    response_model=ReceiptOut,
    responses=_ERRORS,
    summary="Append a batch of cost events (JSON array, NDJSON or CloudEvents), all or nothing",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/CostEvent"}}
                },
                "application/x-ndjson": {"schema": {"type": "string"}},
                cloudevents.STRUCTURED: {"schema": _CLOUDEVENT},
                cloudevents.BATCH: {"schema": {"type": "array", "items": _CLOUDEVENT}},
            },
        }
    },
)
async def post_events(
    request: Request, ledger: LedgerDep, settings: SettingsDep, key: IngestKey
) -> Response:
    body = await read_capped(request, settings.ingest.max_body_bytes)
    content_type = request.headers.get("content-type")
    try:
        receipt = await run_in_threadpool(_ingest, ledger, body, content_type, key)
    except ForeignTenant as exc:
        raise http_error("events for another tenant", 403, errors=exc.errors) from exc
    except MalformedBody as exc:
        raise http_error(str(exc), 400) from exc
    except BatchTooLarge as exc:
        raise http_error(str(exc), 413) from exc
    except BatchInvalid as exc:
        errors = [{"index": e.index, "field": e.field, "message": e.message} for e in exc.errors]
        raise http_error(str(exc), 422, errors=errors, errors_not_shown=exc.not_shown) from exc
    except EventConflict as exc:
        raise http_error(str(exc), 409, event_ids=[str(i) for i in exc.event_ids]) from exc
    return Response(
        orjson.dumps(ReceiptOut.of(receipt).model_dump()),
        media_type="application/json",
        headers={"x-accepted-events": str(receipt.accepted)},
    )


@router.get("/events", response_model=EventPage, summary="Read the log in seq order")
def get_events(
    ledger: LedgerDep,
    key: ReadKey,
    settings: SettingsDep,
    after_seq: Annotated[int, Query(ge=0, description="Return events with seq above this")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    render_id: Annotated[UUID | None, Query(description="Only this render's events")] = None,
    tenant_id: Annotated[str | None, Query(pattern=TENANT_PATTERN)] = None,
) -> EventPage:
    if not key.is_admin:
        if tenant_id not in (None, key.tenant_id):
            raise http_error(f"no tenant {tenant_id!r}", 404)
        tenant_id = key.tenant_id
    if render_id is not None:
        # Its pruned events come from the archive, as the render trace's do.
        events_of = read_render(ledger.engine, settings, render_id)
        render = [e for e in events_of if key.can_see(e.tenant_id)]
        if not render:  # unknown, or another tenant's: the same answer
            raise http_error(f"no events for render {render_id}", 404)
        # Filtered before the limit, so a page is never cut short by rows it then drops.
        wanted = [e for e in render if e.seq > after_seq and tenant_id in (None, e.tenant_id)]
        stored = wanted[:limit]
    else:
        # Filtered in SQL; a range pruned from PostgreSQL is read from the archive.
        stored = read_after(ledger.engine, settings, after_seq, limit, tenant_id)
    events = [EventOut.of(e) for e in stored]
    return EventPage(events=events, next_after_seq=events[-1].seq if events else None)


@router.get("/renders/{render_id}", response_model=RenderTrace, summary="One render's events")
def get_render(
    ledger: LedgerDep, key: ReadKey, settings: SettingsDep, render_id: UUID
) -> RenderTrace:
    # Its pruned events come from the archive; another tenant's render is refused by its
    # owner before anything is read there.
    stored = read_render(ledger.engine, settings, render_id, key.can_see)
    if not stored or not key.can_see(stored[0].tenant_id):
        raise http_error(f"no events for render {render_id}", 404)
    # A render is its first tenant's: events another tenant wrote on it before ownership was
    # enforced at ingest are not part of it.
    stored = [e for e in stored if e.tenant_id == stored[0].tenant_id]
    total = sum(e.cost_nanos for e in stored)
    stages: dict[str, list[StoredEvent]] = {}
    for e in stored:
        stages.setdefault(e.stage, []).append(e)
    trace = []
    for stage, events in stages.items():  # in the order the stages first appear
        cost = sum(e.cost_nanos for e in events)
        walls = [w for e in events if (w := duration(e.attributes.get("wall_s"))) is not None]
        trace.append(
            StageCost(
                stage=stage,
                cost_nanos=cost,
                cost=format_nanos(cost),
                share=round(cost / total, 6) if total else 0.0,
                wall_s=round(sum(walls), 6) if walls else None,
                events=len(events),
            )
        )
    outcome = next((e.outcome for e in stored if e.stage == Stage.RENDER and not e.reverses), None)
    return RenderTrace(
        render_id=render_id,
        tenant_id=stored[0].tenant_id,
        use_case=stored[0].use_case,
        outcome=outcome,
        total_cost_nanos=total,
        total_cost=format_nanos(total),
        currency=stored[0].currency,
        stages=trace,
        events=[EventOut.of(e) for e in stored],
    )

"""CloudEvents (structured mode) on POST /v1/events: the same events as the JSON and NDJSON
ways in, the same rows, the same idempotency, errors named by CloudEvents attribute."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from ingest.cloudevents import BATCH, STRUCTURED, TYPE
from ingest.sample import unet_event
from ledger.events import CostEvent
from ledger.journal import read_render
from ledger.store import Ledger
from service.keys import create_key

CE = {"content-type": BATCH}
ONE = {"content-type": STRUCTURED}
NDJSON = {"content-type": "application/x-ndjson"}


def cloudevent(event: dict[str, Any], source_prefix: str = "/tenants/") -> dict[str, Any]:
    """A cost event (as JSON) as the CloudEvent that carries it."""
    data = dict(event)
    envelope = {
        "specversion": "1.0",
        "type": TYPE,
        "id": data.pop("event_id"),
        "source": source_prefix + data.pop("tenant_id"),
        "subject": data.pop("render_id"),
        "time": data.pop("occurred_at"),
        "datacontenttype": "application/json",
    }
    return envelope | {"data": data}


def _events(tenant: str, render: uuid.UUID, ids: list[uuid.UUID]) -> list[dict[str, Any]]:
    """Every kind of field: cache and baseline, a render event with its outcome, floats and
    nesting in attributes; the same ids for every tenant (ids are unique per tenant)."""
    at = "2026-11-01T10:00:00.250+02:00"
    common = {"tenant_id": tenant, "use_case": "ecommerce", "render_id": str(render)}
    return [
        common
        | {
            "event_id": str(ids[0]),
            "stage": "unet",
            "sku": "gpu.h100.second",
            "quantity": "2.500",
            "occurred_at": at,
            "attributes": {"model": "sdxl", "wall_s": 2.5, "steps": 25, "n": {"x": [1, 1e16]}},
        },
        common
        | {
            "event_id": str(ids[1]),
            "stage": "text_encoder",
            "sku": "gpu.h100.second",
            "quantity": "0",
            "cache": "hit",
            "baseline_quantity": "0.0123",
            "occurred_at": at,
        },
        common
        | {
            "event_id": str(ids[2]),
            "stage": "render",
            "sku": "render.image",
            "quantity": "1",
            "outcome": "delivered",
            "occurred_at": at,
            "attributes": {"pipeline": "sdxl-base"},
        },
    ]


_COMPARED = (
    "event_id",
    "use_case",
    "stage",
    "sku",
    "quantity",
    "occurred_at",
    "cache",
    "baseline_quantity",
    "outcome",
    "reverses",
    "attributes",
    "price_version",
    "unit_price_nanos",
    "cost_nanos",
    "baseline_cost_nanos",
    "currency",
)


def test_json_ndjson_and_cloudevents_store_identical_rows(
    http: httpx.Client, ledger: Ledger
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    ways: dict[str, tuple[dict[str, str], Callable[[list[dict[str, Any]]], bytes]]] = {
        "json": ({"content-type": "application/json"}, lambda evs: orjson.dumps(evs)),
        "ndjson": (NDJSON, lambda evs: b"\n".join(orjson.dumps(e) for e in evs)),
        "cloudevents": (CE, lambda evs: orjson.dumps([cloudevent(e) for e in evs])),
    }
    rows = {}
    for way, (headers, encode) in ways.items():
        tenant, render = f"t-{uuid.uuid4().hex[:12]}", uuid.uuid4()
        r = http.post("/v1/events", content=encode(_events(tenant, render, ids)), headers=headers)
        assert r.status_code == 200, (way, r.text)
        assert r.json()["accepted"] == 3
        stored = read_render(ledger.engine, render)
        assert {e.tenant_id for e in stored} == {tenant}
        rows[way] = [tuple(getattr(e, c) for c in _COMPARED) for e in stored]
    assert rows["json"] == rows["ndjson"] == rows["cloudevents"]
    assert len(rows["json"]) == 3

    # One tenant, one render: the other two ways resend what the first stored, so the content
    # hashes are the same too (a different one would be a 409).
    tenant, render = f"t-{uuid.uuid4().hex[:12]}", uuid.uuid4()
    events = _events(tenant, render, [uuid.uuid4() for _ in range(3)])
    assert http.post("/v1/events", json=events).json()["accepted"] == 3
    for way, (headers, encode) in ways.items():
        again = http.post("/v1/events", content=encode(events), headers=headers).json()
        assert (again["accepted"], again["duplicates"]) == (0, 3), way


def test_one_structured_cloudevent_and_a_uri_source(
    http: httpx.Client, make_event: Any, tenant: str
) -> None:
    event = cloudevent(
        make_event().model_dump(mode="json"), "https://render.example.com/x/tenants/"
    )
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # extension
    r = http.post("/v1/events", content=orjson.dumps(event), headers=ONE)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
    page = http.get("/v1/events", params={"tenant_id": tenant}).json()
    assert [e["event_id"] for e in page["events"]] == [event["id"]]
    # The same CloudEvent again: a duplicate, acknowledged and not stored twice.
    again = http.post("/v1/events", content=orjson.dumps(event), headers=ONE).json()
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    # The same id with other content: 409 naming it, as for any way in.
    event["data"]["quantity"] = "99"
    conflict = http.post("/v1/events", content=orjson.dumps(event), headers=ONE)
    assert conflict.status_code == 409
    assert conflict.json()["detail"]["event_ids"] == [event["id"]]


def test_a_quantity_sent_as_a_json_number_is_read_exactly(
    http: httpx.Client, make_event: Any, ledger: Ledger
) -> None:
    event = cloudevent(make_event().model_dump(mode="json"))
    body = orjson.dumps(event).replace(b'"quantity":"2.5"', b'"quantity":1.123456789012345678')
    assert http.post("/v1/events", content=body, headers=ONE).status_code == 200
    (stored,) = read_render(ledger.engine, uuid.UUID(event["subject"]))
    assert stored.quantity == Decimal("1.123456789012345678")


def _errors(r: httpx.Response) -> list[tuple[int, str]]:
    assert r.status_code == 422, r.text
    return [(e["index"], e["field"]) for e in r.json()["detail"]["errors"]]


def _count(http: httpx.Client, tenant: str) -> int:
    return len(http.get("/v1/events", params={"tenant_id": tenant}).json()["events"])


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"specversion": "0.3"}, "specversion", '"1.0"'),
        ({"id": None}, "id", "required"),
        ({"type": "com.example.other"}, "type", TYPE),
        ({"source": "acme"}, "source", "/<tenant id>"),
        ({"source": "/tenants/Not A Tenant"}, "source", "/<tenant id>"),
        ({"subject": "not-a-uuid"}, "subject", "UUID"),
        ({"time": "2026-11-01T10:00:00"}, "time", "timezone"),
        ({"time": None}, "time", "required"),
        ({"datacontenttype": "application/xml"}, "datacontenttype", "application/json"),
        ({"data_base64": "e30="}, "data_base64", "JSON"),
        ({"data": None}, "data", "required"),
        ({"Bad-Name": 1}, "Bad-Name", "extension"),
    ],
)
def test_envelope_errors_name_the_attribute(
    http: httpx.Client,
    make_event: Any,
    tenant: str,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    event = cloudevent(make_event().model_dump(mode="json"))
    event.update(change)
    for key in [k for k, v in change.items() if v is None]:
        del event[key]
    r = http.post("/v1/events", content=orjson.dumps(event), headers=ONE)
    assert _errors(r) == [(0, field)]
    assert words in r.json()["detail"]["errors"][0]["message"]
    assert _count(http, tenant) == 0


def test_a_batch_names_the_index_and_data_field_and_writes_nothing(
    http: httpx.Client, make_event: Any, tenant: str
) -> None:
    events = [cloudevent(make_event().model_dump(mode="json")) for _ in range(4)]
    events[2]["data"]["quantity"] = "-1"
    events[3]["data"]["attributes"] = {"wall_s": "slow"}
    events[1]["data"]["tenant_id"] = tenant  # carried by source, not data
    r = http.post("/v1/events", content=orjson.dumps(events), headers=CE)
    assert _errors(r) == [
        (1, "data.tenant_id"),
        (2, "data.quantity"),
        (3, "data.attributes.wall_s"),
    ]
    assert "source" in r.json()["detail"]["errors"][0]["message"]
    assert _count(http, tenant) == 0


def test_the_ledgers_own_refusals_name_attributes_too(
    http: httpx.Client, make_event: Any, tenant: str, ledger: Ledger
) -> None:
    ok = cloudevent(make_event().model_dump(mode="json"))
    unpriced = cloudevent(make_event().model_dump(mode="json"))
    unpriced["data"]["sku"] = "no.such.sku"
    r = http.post("/v1/events", content=orjson.dumps([ok, unpriced]), headers=CE)
    assert _errors(r) == [(1, "data.sku")]
    # A render of another tenant: refused on subject, the render id's attribute.
    other = unet_event(f"t-{uuid.uuid4().hex[:12]}", uuid.uuid4())
    ledger.append([other])
    ok["subject"] = str(other.render_id)
    assert _errors(http.post("/v1/events", content=orjson.dumps([ok]), headers=CE)) == [
        (0, "subject")
    ]
    assert _count(http, tenant) == 0


def test_a_tenant_key_writes_only_its_own_source(
    http: httpx.Client, api_base: str, ledger: Ledger, make_event: Any, tenant: str
) -> None:
    key = create_key(ledger.engine, tenant, ["ingest"], "ce")
    own = cloudevent(make_event().model_dump(mode="json"))
    other = cloudevent(make_event().model_dump(mode="json") | {"tenant_id": "someone-else"})
    with httpx.Client(base_url=api_base, headers={"authorization": f"Bearer {key}"}) as client:
        r = client.post("/v1/events", content=orjson.dumps([own, other]), headers=CE)
        assert r.status_code == 403
        assert [(e["index"], e["field"]) for e in r.json()["detail"]["errors"]] == [(1, "source")]
        assert client.post("/v1/events", content=orjson.dumps(own), headers=ONE).status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", ONE, 400),
        (b"[]", ONE, 400),  # one structured CloudEvent is an object
        (b"{}", CE, 400),  # a batch is an array
        (b"[]", CE, 200),  # an empty batch, like an empty JSON array
        (b"[1]", CE, 422),
        (b"[" + b"{}," * 10_000 + b"{}]", CE, 413),
    ],
)
def test_bodies_that_are_not_cloudevents(
    http: httpx.Client, content: bytes, headers: dict[str, str], status: int
) -> None:
    r = http.post("/v1/events", content=content, headers=headers)
    assert r.status_code == status, r.text


def test_the_schema_documents_cloudevents(http: httpx.Client) -> None:
    body = http.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["requestBody"]
    assert {STRUCTURED, BATCH} <= body["content"].keys()
    data = body["content"][STRUCTURED]["schema"]["properties"]["data"]
    assert "quantity" in data["properties"]
    assert "tenant_id" not in data["properties"]


def test_a_cloudevent_maps_to_the_event_sent_as_json(make_event: Any) -> None:
    from ingest.cloudevents import parse_cloudevents

    event: CostEvent = make_event(cache="hit", baseline_quantity=Decimal("3"))
    (parsed,) = parse_cloudevents(
        orjson.dumps(cloudevent(event.model_dump(mode="json"))), STRUCTURED, 10
    )
    assert parsed == event
    assert parsed.content_hash() == event.content_hash()

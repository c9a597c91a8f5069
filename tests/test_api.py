"""The events API over real HTTP against the app under uvicorn on loopback."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import EventFactory


def _wire(make_event: EventFactory, **overrides: Any) -> dict[str, Any]:
    wire: dict[str, Any] = make_event().model_dump(mode="json")
    wire.update(overrides)
    return wire


def _count(http: httpx.Client, tenant: str) -> int:
    page = http.get("/v1/events", params={"tenant_id": tenant, "limit": 10_000}).json()
    return len(page["events"])


def test_healthz_and_docs(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    schema = http.get("/openapi.json").json()
    assert "CostEvent" in schema["components"]["schemas"]
    assert "/v1/events" in schema["paths"]
    assert http.get("/docs").status_code == 200


def test_post_json_array_then_resend_is_idempotent(
    http: httpx.Client, make_event: EventFactory, tenant: str
) -> None:
    body = [_wire(make_event) for _ in range(3)]
    first = http.post("/v1/events", json=body)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 3
    again = http.post("/v1/events", json=body)
    assert again.json() | {"first_seq": 0} == {
        "accepted": 0,
        "duplicates": 3,
        "first_seq": 0,
        "last_seq": None,
        "block_id": None,
    }
    assert _count(http, tenant) == 3


def test_post_ndjson(http: httpx.Client, make_event: EventFactory, tenant: str) -> None:
    lines = b"\n".join(orjson.dumps(_wire(make_event)) for _ in range(4)) + b"\n\n"
    r = http.post("/v1/events", content=lines, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 4
    assert _count(http, tenant) == 4


def test_conflict_is_409_naming_the_id(
    http: httpx.Client, make_event: EventFactory, tenant: str
) -> None:
    event = _wire(make_event)
    assert http.post("/v1/events", json=[event]).status_code == 200
    changed = event | {"quantity": "7"}
    r = http.post("/v1/events", json=[_wire(make_event), changed])
    assert r.status_code == 409
    assert r.json()["detail"]["event_ids"] == [event["event_id"]]
    assert _count(http, tenant) == 1


BAD_EVENTS = [
    ({"occurred_at": "2026-10-01T10:00:00"}, "occurred_at", "timezone"),
    ({"occurred_at": "2099-01-01T00:00:00Z"}, "occurred_at", "in the future"),
    ({"occurred_at": "1970-01-01T00:00:00Z"}, "occurred_at", "before 2000"),
    (
        {"attributes": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}},
        "attributes",
        "nested deeper",
    ),
    ({"attributes": {"x": "nul\u0000"}}, "attributes", "NUL"),
    ({"use_case": "e\u0000c"}, "use_case", "pattern"),
    ({"quantity": "-1"}, "quantity", "greater than or equal to 0"),
    ({"quantity": "NaN"}, "quantity", "finite"),
    ({"quantity": "Infinity"}, "quantity", "finite"),
    ({"sku": "gpu.b200.second"}, "sku", "no price for SKU"),
    ({"stage": "upscale"}, "stage", "text_encoder"),
    ({"tenant_id": "Acme Corp"}, "tenant_id", "pattern"),
    ({"stage": "render"}, "outcome", "needs an outcome"),
    ({"outcome": "delivered"}, "outcome", "only render events"),
    ({"attributes": {"a": "x" * 20_000}}, "attributes", "larger than"),
    ({"colour": "red"}, "colour", "not permitted"),
]


@pytest.mark.parametrize(("change", "field", "words"), BAD_EVENTS)
def test_bad_event_is_422_with_index_and_field_and_nothing_written(
    http: httpx.Client,
    make_event: EventFactory,
    tenant: str,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body = [_wire(make_event), _wire(make_event), _wire(make_event, **change)]
    r = http.post("/v1/events", json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]["errors"]
    assert errors[0]["index"] == 2
    assert errors[0]["field"] == field
    assert words in errors[0]["message"]
    assert _count(http, tenant) == 0


def test_ndjson_errors_count_events_not_lines(http: httpx.Client, make_event: EventFactory) -> None:
    lines = [orjson.dumps(_wire(make_event)), b"", orjson.dumps(_wire(make_event, quantity="-2"))]
    r = http.post(
        "/v1/events", content=b"\n".join(lines), headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 422
    assert r.json()["detail"]["errors"][0] | {"message": ""} == {
        "index": 1,
        "field": "quantity",
        "message": "",
    }


@pytest.mark.parametrize(
    ("content", "ctype", "words"),
    [
        (b'[{"event_id": ', "application/json", "not valid JSON"),
        (b"\xff\xfe not utf-8", "application/json", "not valid JSON"),
        (b'{"event_id": "x"}', "application/json", "JSON array"),
        (b'{"a": 1}\n{"b": ', "application/x-ndjson", "line 2"),
        (b"a,b\n1,2", "text/csv", "unsupported content type"),
    ],
)
def test_malformed_body_is_400(http: httpx.Client, content: bytes, ctype: str, words: str) -> None:
    r = http.post("/v1/events", content=content, headers={"content-type": ctype})
    assert r.status_code == 400, r.text
    assert words in r.json()["detail"]["message"]


def test_oversize_batch_and_body_are_413(
    http: httpx.Client, make_event: EventFactory, tenant: str
) -> None:
    one = _wire(make_event)
    too_many = [one | {"event_id": str(uuid.uuid4())} for _ in range(10_001)]
    r = http.post(
        "/v1/events", content=orjson.dumps(too_many), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "10000" in r.json()["detail"]["message"]
    huge = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    r = http.post("/v1/events", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert _count(http, tenant) == 0


def test_read_log_in_order_and_by_render(
    http: httpx.Client, make_event: EventFactory, tenant: str
) -> None:
    body = [_wire(make_event) for _ in range(5)]
    receipt = http.post("/v1/events", json=body).json()
    page = http.get("/v1/events", params={"after_seq": receipt["first_seq"] - 1, "limit": 3}).json()
    assert [e["seq"] for e in page["events"]] == list(
        range(receipt["first_seq"], receipt["first_seq"] + 3)
    )
    assert page["next_after_seq"] == receipt["first_seq"] + 2
    event = page["events"][0]
    assert event["cost_nanos"] == 2_750_000
    assert event["cost"] == "0.002750000"
    assert isinstance(event["unit_price_nanos"], str)
    by_render = http.get("/v1/events", params={"render_id": body[0]["render_id"]}).json()
    assert {e["event_id"] for e in by_render["events"]} == {e["event_id"] for e in body}
    trace = http.get(f"/v1/renders/{body[0]['render_id']}").json()
    assert trace["total_cost_nanos"] == 5 * 2_750_000
    assert trace["total_cost"] == "0.013750000"
    assert trace["stages"] == [
        {
            "stage": "unet",
            "cost_nanos": 5 * 2_750_000,
            "cost": "0.013750000",
            "share": 1.0,
            "wall_s": None,
            "events": 5,
        }
    ]
    assert http.get(f"/v1/renders/{uuid.uuid4()}").status_code == 404


def test_bad_query_parameters_are_422(http: httpx.Client) -> None:
    assert http.get("/v1/events", params={"after_seq": -1}).status_code == 422
    assert http.get("/v1/events", params={"limit": 0}).status_code == 422
    assert http.get("/v1/events", params={"render_id": "nope"}).status_code == 422

"""/openapi.json names the real fields of what the API reads and returns, so /docs and
generated clients show them: no free-form object where the shape is fixed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture(scope="module")
def spec(api_base: str) -> dict[str, Any]:
    return httpx.get(f"{api_base}/openapi.json", timeout=30).json()


def _schema(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref`` followed and a nullable ``anyOf`` reduced to its object."""
    if "$ref" in node:
        return _schema(spec, spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
    objects = [s for s in node.get("anyOf", []) if s.get("type") != "null"]
    return _schema(spec, objects[0]) if len(objects) == 1 else node


def _fields(spec: dict[str, Any], node: dict[str, Any], *path: str) -> set[str]:
    """The property names of the object at ``path`` under ``node``; ``[]`` is an array's item."""
    node = _schema(spec, node)
    for step in path:
        node = _schema(spec, node["items"] if step == "[]" else node["properties"][step])
    return set(node["properties"])


def _response(spec: dict[str, Any], path: str, method: str = "get") -> dict[str, Any]:
    content = spec["paths"][path][method]["responses"]
    ok = content.get("200") or content["201"]
    schema: dict[str, Any] = ok["content"]["application/json"]["schema"]
    return schema


def test_report_rows_name_their_fields(spec: dict[str, Any]) -> None:
    report = _response(spec, "/v1/tenants/{tenant}/report")
    row = _fields(spec, report, "rows", "[]")
    assert {"use_case", "stage", "day"} <= row  # the grouping keys, each optional
    assert {"renders_delivered", "cost", "cost_per_delivered_render", "cache_hit_rate"} <= row
    assert {"share_of_cost", "stage_share", "what_if"} <= row
    assert _fields(spec, report, "rows", "[]", "cost") == {"nanos", "amount"}
    assert _fields(spec, report, "rows", "[]", "what_if") == {
        "cost",
        "cost_per_delivered_render",
        "difference_per_delivered_render",
    }
    required = set(_schema(spec, _schema(spec, report)["properties"]["rows"]["items"])["required"])
    assert not required & {"use_case", "stage", "day", "what_if"}


def test_the_invoice_document_and_its_cost_basis_name_their_fields(spec: dict[str, Any]) -> None:
    get = _response(spec, "/v1/tenants/{tenant}/invoices/{month}")
    customer, internal = (_schema(spec, s) for s in get["anyOf"])
    assert {"lines", "subtotal", "tax", "total", "amount_due", "due_on"} <= _fields(spec, customer)
    assert not {"cost_basis", "positions", "content_sha256"} & _fields(spec, customer)
    for doc in (
        internal,
        _response(spec, "/v1/tenants/{tenant}/invoices/{month}/finalize", "post"),
    ):
        assert {"lines", "subtotal", "total", "total_minor", "content_sha256"} <= _fields(spec, doc)
        assert _fields(spec, doc, "cost_basis") == {
            "currency",
            "metered",
            "metered_nanos",
            "billed_nanos",
            "not_billed_nanos",
            "events",
            "renders",
            "by_use_case",
            "allocated_nanos",  # fully-loaded plans only
            "other_currencies",  # metered cost priced in other books
        }
        assert _fields(spec, doc, "positions") == {
            "first_seq",
            "last_seq",
            "through_seq",
            "adjustments_after_seq",
            "allocations_through",  # fully-loaded plans only
        }
        assert _fields(spec, doc, "window") == {"start", "end"}
        assert _fields(spec, doc, "plan") == {"name", "effective_from", "sha256", "failed_renders"}
        assert {"amount", "amount_minor", "exact", "rounding"} <= _fields(spec, doc, "lines", "[]")
        assert _fields(spec, doc, "credit_notes", "[]") >= {"number", "amount_minor", "reason"}


def test_the_plan_body_names_the_plan_terms(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/tenants/{tenant}/plans/{effective_from}"]["put"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    terms = _fields(spec, schema)
    assert {"name", "currency", "timezone", "minimum_commitment", "default", "use_cases"} <= terms
    assert not terms & {"tenant", "effective_from"}  # the path gives them
    assert _fields(spec, schema, "default") == {"markup", "tiers"}


def test_alerts_name_their_detail(spec: dict[str, Any]) -> None:
    alert = _response(spec, "/v1/alerts/{alert_id}")
    assert {"alert_id", "status", "message", "detail", "resolution"} <= _fields(spec, alert)
    detail = _fields(spec, alert, "detail")
    assert {"value", "baseline", "change", "since", "stages", "changes", "message"} <= detail
    assert _fields(spec, alert, "detail", "stages", "[]") == {"stage", "share", "change_nanos"}
    assert _fields(spec, alert, "detail", "changes", "[]") == {
        "attribute",
        "before",
        "after",
        "share",
    }
    assert _fields(spec, alert, "resolution") == {"value", "baseline"}
    listed = _response(spec, "/v1/alerts")
    assert "detail" in _fields(spec, listed, "[]")


def test_no_response_is_a_free_form_object(spec: dict[str, Any]) -> None:
    """Every object in a response schema names its properties, unless it is a map whose
    values are typed (renders by outcome, stage shares): none is ``dict[str, Any]``."""
    loose = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            typed = {"properties", "patternProperties"} & set(node)
            if node.get("type") == "object" and not typed:
                extra = node.get("additionalProperties", True)
                if extra is True or extra == {}:
                    loose.append(where)
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    for name in ("Report", "ReportRow", "Invoice", "CostBasis", "Alert", "AlertDetail", "Plan"):
        walk(spec["components"]["schemas"][name], name)
    assert loose == []

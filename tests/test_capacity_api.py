"""Pools, capacity and break-even over real HTTP, on a database of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import orjson
import pytest

from ingest.sample import unet_event
from ledger import database
from ledger.prices import load_price_book_file
from reports.break_even import break_even_volume
from reports.jobs import run_rollup
from service.cli.main import DEFAULT_PRICES
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import ledger_with_prices, serving
from tests.test_allocation import _render

START = datetime(2026, 10, 1, tzinfo=UTC)
A100 = {
    "gpu_sku": "gpu.a100.second",
    "gpus": 1,
    "currency": "USD",
    "effective_from": "2026-01-01T00:00:00Z",
    "payment": {"model": "reserved", "per_gpu_month": "1100"},
}


@pytest.fixture
def api(fresh_database: str) -> Iterator[httpx.Client]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    ledger.load_prices(load_price_book_file(DEFAULT_PRICES.parent / "whatif/sdxl-api-0004.toml"))
    key = create_key(engine, None, ["admin"], "tests")
    app = create_app(Settings(database_url=fresh_database), ledger, schedule=False)
    with (
        serving(app) as base,
        httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {key}"}
        ) as client,
    ):
        yield client
    engine.dispose()


def test_published_break_even_example() -> None:
    assert break_even_volume(Decimal(1100), Decimal("0.004"), Decimal(0)) == 275_000
    # With marginal costs (caption LLM, storage, egress) of $0.0004 a render: 1100 / 0.0036.
    assert break_even_volume(Decimal(1100), Decimal("0.004"), Decimal("0.0004")) == 305_556
    assert break_even_volume(Decimal(1100), Decimal("0.004"), Decimal("0.004")) is None


def test_pools_capacity_allocation_and_break_even_over_http(api: httpx.Client) -> None:
    put = api.put("/v1/pools/a100", json=A100)
    assert put.status_code == 200, put.text
    assert put.json()["added"] is True
    assert api.put("/v1/pools/a100", json=A100).json()["added"] is False
    changed = A100 | {"payment": {"model": "reserved", "per_gpu_month": "1200"}}
    assert api.put("/v1/pools/a100", json=changed).status_code == 409
    bad = api.put("/v1/pools/a100", json=A100 | {"gpus": 0})
    assert bad.status_code == 422
    assert bad.json()["detail"]["errors"][0]["field"] == "gpus"
    assert [p["name"] for p in api.get("/v1/pools").json()] == ["a100"]

    month = [
        {
            "kind": "capacity",
            "event_id": str(uuid.uuid4()),
            "pool": "a100",
            "starts_at": START.isoformat(),
            "ends_at": (START + timedelta(days=31)).isoformat(),
            "gpus": "1",
        }
    ]
    first = api.post("/v1/capacity", content=orjson.dumps(month))
    assert first.json()["accepted"] == 1, first.text
    assert api.post("/v1/capacity", content=orjson.dumps(month)).json()["duplicates"] == 1
    unknown = [month[0] | {"event_id": str(uuid.uuid4()), "pool": "nope"}]
    refused = api.post("/v1/capacity", content=orjson.dumps(unknown))
    assert refused.status_code == 422
    assert refused.json()["detail"]["errors"][0]["field"] == "pool"

    events = []
    for day in range(10):  # 100 renders of 20 A100-seconds each
        for _ in range(10):
            at = START + timedelta(days=day, hours=3)
            events += _render("acme", "20", pool="a100", at=at)
    body = orjson.dumps([e.model_dump(mode="json") for e in events])
    for e in events:  # the helper builds H100 events; these ran on the A100 pool
        assert e.sku in ("gpu.h100.second", "render.image")
    body = body.replace(b"gpu.h100.second", b"gpu.a100.second")
    assert api.post("/v1/events", content=body).status_code == 200
    assert api.post("/v1/allocation/run").json()["ran"] is True

    report = api.get("/v1/pools/report", params={"from": "2026-10-01", "to": "2026-11-01"}).json()
    (pool,) = report["pools"]
    assert pool["paid"]["nanos"] == 1100 * 10**9  # the whole month's reservation, to the nano
    assert pool["utilisation"] == round(2000 / (31 * 86400), 6)
    (tenant,) = report["tenants"]
    assert tenant["renders_delivered"] == 100
    # The ten busy hours' idle share comes to the tenant; idle hours stay on the platform.
    busy_hours = 10 * 3600 * 1100 * 10**9 // (31 * 86400)
    assert abs(tenant["idle"]["nanos"] - (busy_hours - 2000 * 500_000)) <= 10
    kept = report["unallocated"]["USD"]["nanos"]
    external = tenant["direct"]["nanos"] - 2000 * 500_000  # render.image, not GPU time
    assert tenant["fully_loaded"]["nanos"] + kept == 1100 * 10**9 + external
    assert tenant["fully_loaded_per_render"]["nanos"] == round(
        tenant["fully_loaded"]["nanos"] / 100
    )

    even = api.get(
        "/v1/break-even",
        params={
            "pool": "a100",
            "api_book": "sdxl-api-0004",
            "from": "2026-10-01",
            "to": "2026-11-01",
        },
    )
    assert even.status_code == 200, even.text
    got = even.json()
    assert got["break_even_renders_per_month"] == 275_000
    assert got["fixed_monthly"] == "1100"
    assert got["self_hosting_pays"] is False
    assert got["gpu_seconds_per_render"] == "20"
    full = next(s for s in got["scenarios"] if s["utilisation"] == "1")
    assert full["max_renders_per_month"] == 730 * 3600 // 20
    assert full["breaks_even"] is False  # 131,400 renders a month at most: never pays
    other = api.get(
        "/v1/break-even",
        params={"pool": "a100", "api_book": "nope", "from": "2026-10-01", "to": "2026-11-01"},
    )
    assert other.status_code == 404


def test_capacity_refusals_are_clear_and_write_nothing(api: httpx.Client) -> None:
    assert api.put("/v1/pools/a100", json=A100).status_code == 200
    good = {
        "kind": "capacity",
        "event_id": str(uuid.uuid4()),
        "pool": "a100",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(hours=1)).isoformat(),
        "gpus": "1",
    }
    cases = {
        b"not json": 422,
        b'{"kind": "capacity"}': 422,  # an object, not an array
        orjson.dumps([good, good | {"ends_at": START.isoformat()}]): 422,
        orjson.dumps([good, good | {"kind": "nonsense"}]): 422,
        orjson.dumps([good, {**good, "gpus": "1e9"}]): 422,
        orjson.dumps([good, good]): 422,  # the same event_id twice
        orjson.dumps([good | {"ends_at": "2099-01-01T00:00:00Z"}]): 422,
        orjson.dumps([good | {"pool": "x" * 100}]): 422,
    }
    for body, status in cases.items():
        got = api.post("/v1/capacity", content=body)
        assert got.status_code == status, (body[:80], got.text)
        assert got.json()["detail"]["message"]
    bad_index = api.post(
        "/v1/capacity",
        content=orjson.dumps([good, good | {"event_id": str(uuid.uuid4()), "gpus": "-1"}]),
    ).json()["detail"]["errors"][0]
    assert (bad_index["index"], bad_index["field"]) == (1, "gpus")
    overhead = {
        "kind": "overhead",
        "event_id": str(uuid.uuid4()),
        "account": "tenant:acme",
        "amount": "5",
        "currency": "USD",
        "starts_at": START.isoformat(),
        "ends_at": (START + timedelta(hours=1)).isoformat(),
        "allocate_by": "renders",
    }
    wrong = api.post("/v1/capacity", content=orjson.dumps([overhead])).json()["detail"]
    assert "a tenant's overhead is direct" in wrong["message"]
    # Nothing of the refused batches was written; a changed resend is a conflict.
    assert api.post("/v1/capacity", content=orjson.dumps([good])).json()["accepted"] == 1
    changed = api.post("/v1/capacity", content=orjson.dumps([good | {"gpus": "2"}]))
    assert changed.status_code == 409
    assert changed.json()["detail"]["event_ids"] == [good["event_id"]]


def test_tenant_keys_cannot_touch_capacity(api: httpx.Client, fresh_database: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    key = create_key(engine, "acme", ["ingest", "read"], "tenant")
    engine.dispose()
    headers = {"authorization": f"Bearer {key}"}
    assert api.post("/v1/capacity", content=b"[]", headers=headers).status_code == 403
    assert api.put("/v1/pools/a100", json=A100, headers=headers).status_code == 403
    assert (
        api.get(
            "/v1/pools/report", params={"from": "2026-10-01", "to": "2026-11-01"}, headers=headers
        ).status_code
        == 403
    )


def test_seed_case_half_busy_h100s_double_the_cost_per_render_in_the_report(
    api: httpx.Client, fresh_database: str
) -> None:
    """Two H100s rented by the hour, rendered on half the time: the report's fully-loaded
    cost per delivered render is twice the direct one, and utilisation 0.50."""
    h100 = A100 | {
        "gpu_sku": "gpu.h100.second",
        "gpus": 2,
        "payment": {"model": "on_demand", "per_gpu_hour": "3.96"},
    }
    assert api.put("/v1/pools/h100", json=h100).status_code == 200
    day = datetime(2026, 10, 12, tzinfo=UTC)
    spans = [
        {
            "kind": "capacity",
            "event_id": str(uuid.uuid4()),
            "pool": "h100",
            "starts_at": (day + timedelta(hours=h)).isoformat(),
            "ends_at": (day + timedelta(hours=h + 1)).isoformat(),
            "gpus": "2",
        }
        for h in range(8)
    ]
    assert api.post("/v1/capacity", content=orjson.dumps(spans)).json()["accepted"] == 8
    events = []
    for h in range(8):  # 3,600 of 7,200 GPU-seconds each hour, in 12-second renders
        for i in range(300):
            at = day + timedelta(hours=h, seconds=12 * i)
            events += _render("acme", "12", pool="h100", at=at)
    for i in range(0, len(events), 2000):
        chunk = orjson.dumps([e.model_dump(mode="json") for e in events[i : i + 2000]])
        assert api.post("/v1/events", content=chunk).status_code == 200
    api.post("/v1/allocation/run").raise_for_status()
    assert api.post("/v1/allocation/run").json()["rows_written"] == 0
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    run_rollup(engine)
    engine.dispose()
    report = api.get(
        "/v1/tenants/acme/report",
        params={
            "from": "2026-10-12",
            "to": "2026-10-13",
            "group_by": "use_case",
            "compare": "none",
        },
    )
    assert report.status_code == 200, report.text
    (row,) = report.json()["rows"]
    assert row["utilisation"] == 0.5
    direct = row["cost_per_delivered_render"]["nanos"]
    loaded = row["fully_loaded"]["cost_per_delivered_render"]["nanos"]
    gpu = 12 * 1_100_000
    # The H100 seconds double; the image's own price (render.image) would not, but is 0 in
    # the default book, so the whole cost per render doubles.
    assert loaded - direct == gpu
    assert loaded == 2 * direct
    assert row["fully_loaded"]["idle"]["nanos"] == 2400 * gpu
    csv = api.get(
        "/v1/tenants/acme/report",
        params={"from": "2026-10-12", "to": "2026-10-13", "format": "csv", "compare": "none"},
    ).text
    header, line = csv.splitlines()[:2]
    columns = dict(zip(header.split(","), line.split(","), strict=True))
    assert columns["utilisation"] == "0.5"
    assert int(columns["fully_loaded_cost_per_delivered_render_nanos"]) == loaded


def test_report_grouped_by_pipeline_attributes(api: httpx.Client, fresh_database: str) -> None:
    events = []
    for precision, seconds, n in (("fp16", "10", 3), ("int8", "6", 2)):
        for _ in range(n):
            render = uuid.uuid4()
            attrs = {"model": "sdxl", "precision": precision}
            at = START + timedelta(days=3)
            events += [
                unet_event(
                    "acme", render, quantity=Decimal(seconds), occurred_at=at, attributes=attrs
                ),
                unet_event(
                    "acme",
                    render,
                    stage="render",
                    sku="render.image",
                    outcome="delivered",
                    occurred_at=at,
                    attributes=attrs,
                ),
            ]
    body = orjson.dumps([e.model_dump(mode="json") for e in events])
    assert api.post("/v1/events", content=body).status_code == 200
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    run_rollup(engine)
    engine.dispose()
    params = {"from": "2026-10-01", "to": "2026-11-01", "compare": "none"}
    got = api.get("/v1/tenants/acme/report", params=params | {"group_by": "model,precision"})
    assert got.status_code == 200, got.text
    rows = {(r["model"], r["precision"]): r for r in got.json()["rows"]}
    assert set(rows) == {("sdxl", "fp16"), ("sdxl", "int8")}
    assert rows[("sdxl", "fp16")]["renders_delivered"] == 3
    unet = 1_100_000  # an H100-second
    fp16 = rows[("sdxl", "fp16")]["stage_share"]["unet"]
    assert 0 < fp16 <= 1
    per_fp16 = rows[("sdxl", "fp16")]["cost_per_delivered_render"]["nanos"]
    per_int8 = rows[("sdxl", "int8")]["cost_per_delivered_render"]["nanos"]
    assert per_fp16 - per_int8 == 4 * unet
    whole = api.get("/v1/tenants/acme/report", params=params | {"group_by": ""}).json()
    assert whole["rows"][0]["cost"]["nanos"] == sum(r["cost"]["nanos"] for r in rows.values())
    csv = api.get(
        "/v1/tenants/acme/report", params=params | {"group_by": "precision", "format": "csv"}
    ).text
    assert csv.splitlines()[0].startswith("precision,currency,")
    for bad in ({"group_by": "model,stage"}, {"group_by": "model", "what_if": "x"}):
        refused = api.get("/v1/tenants/acme/report", params=params | bad)
        assert refused.status_code == 422
        assert "pipeline attribute" in refused.json()["detail"]["message"]

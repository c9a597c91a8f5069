"""One tenant's input must not break views, jobs or ``verify`` for anyone (issue 11, 1-5, 8, 13).

Each test reproduces a defect the adversarial review found, through the real HTTP API.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ingest.sample import unet_event
from ledger import database
from ledger.chain import verify
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.money import MAX_EVENT_COST_NANOS
from ledger.store import Ledger
from reports.alerts.service import run_detection
from reports.billing.lifecycle import invoice
from reports.billing.plans import Plan, store_plan
from reports.jobs import run_rollup
from reports.source import UNREADABLE
from service.cli.main import app as cli
from service.keys import create_key
from service.settings import get_settings
from tests.conftest import ledger_with_prices
from tests.test_immutability import tamper


def body(*events: CostEvent, **attribute_json: bytes) -> bytes:
    """A JSON array of events; attributes given as raw JSON text keep their exact spelling."""
    docs = []
    for e in events:
        doc = orjson.dumps(e.model_dump(mode="json", exclude={"attributes"}))
        raw = attribute_json.get("attributes", b"{}")
        docs.append(doc[:-1] + b', "attributes": ' + raw + b"}")
    return b"[" + b",".join(docs) + b"]"


def tenant_client(api_base: str, engine: Engine, tenant: str) -> httpx.Client:
    key = create_key(engine, tenant, ["ingest", "read"], "hostile")
    return httpx.Client(base_url=api_base, timeout=30, headers={"authorization": f"Bearer {key}"})


def error_fields(response: httpx.Response) -> list[tuple[int, str]]:
    return [(e["index"], e["field"]) for e in response.json()["detail"]["errors"]]


# -- 1. attributes the product reads are typed; readers tolerate what is already stored --


def test_a_poisoned_attribute_is_refused_with_its_field(http: httpx.Client, tenant: str) -> None:
    event = unet_event(tenant, stage="render", sku="cpu.vcpu.second", outcome="delivered")
    r = http.post("/v1/events", content=body(event, attributes=b'{"latency_ms": "soon"}'))
    assert r.status_code == 422
    assert error_fields(r) == [(0, "attributes.latency_ms")]
    r = http.post("/v1/events", content=body(event, attributes=b'{"model": {"x": 1}}'))
    assert (r.status_code, error_fields(r)) == (422, [(0, "attributes.model")])


def test_a_stored_unreadable_attribute_does_not_stop_the_rollup(
    fresh_database: str, tenant: str
) -> None:
    """Rows stored before attributes were typed: read as absent, counted, the job goes on."""
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    render = uuid.uuid4()
    good = unet_event(tenant, render, stage="render", sku="cpu.vcpu.second", outcome="delivered")
    poisoned = CostEvent.model_construct(  # skips validation, as an older version's ingest did
        **(dict(good) | {"event_id": uuid.uuid4(), "attributes": {"latency_ms": "soon"}})
    )
    huge = CostEvent.model_construct(
        **(dict(good) | {"event_id": uuid.uuid4(), "render_id": uuid.uuid4()})
        | {"attributes": {"latency_ms": 1e300}}
    )
    ledger.append([unet_event(tenant, render), poisoned, huge])
    before = UNREADABLE["latency_ms"]
    assert run_rollup(engine).events == 3
    assert run_rollup(engine, rebuild=True).events >= 0
    assert UNREADABLE["latency_ms"] >= before + 2
    with connection(engine) as raw:
        row = raw.execute(
            "SELECT latency_ms, total_nanos > 0 FROM render_rollup WHERE render_id = %s", (render,)
        ).fetchone()
    assert row == (None, True)
    engine.dispose()


# -- 2. the hash is over what JSONB stores; verify survives and names every broken block --


@pytest.mark.parametrize(
    ("spelling", "stored"),
    [
        (b"-0.0", 0.0),
        (b"1e16", 10**16),
        (b"123456789012345678.0", 123456789012345680),
        (b"1e-05", 1e-05),
        (b'[1.5e-7, {"y": 2.50}]', [1.5e-7, {"y": 2.5}]),
    ],
)
def test_numbers_are_hashed_as_jsonb_stores_them(
    fresh_database: str, tenant: str, spelling: bytes, stored: Any
) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    from ingest.parsing import parse_body

    events = parse_body(body(unet_event(tenant), attributes=b'{"x": ' + spelling + b"}"), None)
    ledger.append(events)
    ledger.append(events)  # a resend is a duplicate, not a conflict
    with connection(engine) as raw:
        row = raw.execute("SELECT attributes FROM cost_events WHERE tenant_id = %s", (tenant,))
        assert (row.fetchone() or ({},))[0] == {"x": stored}
    assert verify(engine).ok
    engine.dispose()


@pytest.mark.parametrize("spelling", [b"1.5e300", b"99999999999999999999", b'[{"a": -1e20}]'])
def test_numbers_that_cannot_round_trip_are_refused(
    http: httpx.Client, tenant: str, spelling: bytes
) -> None:
    r = http.post(
        "/v1/events", content=body(unet_event(tenant), attributes=b'{"x": ' + spelling + b"}")
    )
    assert r.status_code == 422
    assert error_fields(r) == [(0, "attributes")]
    assert "send it as a string" in r.json()["detail"]["errors"][0]["message"]


def test_verify_reports_every_broken_block_and_keeps_going(
    fresh_database: str, make_event: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    receipts = [ledger.append([make_event() for _ in range(3)]) for _ in range(5)]
    tamper(fresh_database, "quantity = 7", receipts[1].first_seq)
    tamper(fresh_database, "cost_nanos = 1", receipts[3].last_seq)
    with psycopg.connect(database.libpq_url(fresh_database), autocommit=True) as su:
        su.execute("ALTER TABLE cost_events DISABLE TRIGGER cost_events_append_only")
        # A number no canonical form can spell: verify used to crash on it.
        su.execute(
            "UPDATE cost_events SET attributes = '{\"x\": 1.5e300}' WHERE seq = %s",
            (receipts[4].first_seq,),
        )
        su.execute("ALTER TABLE cost_events ENABLE TRIGGER cost_events_append_only")
    result = verify(engine)
    assert not result.ok
    assert [b.block_id for b in result.broken] == [
        receipts[1].block_id,
        receipts[3].block_id,
        receipts[4].block_id,
    ]
    assert result.events_checked == 15
    assert "cannot be hashed" in result.broken[2].reason
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    shown = CliRunner().invoke(cli, ["verify"])
    get_settings.cache_clear()
    assert shown.exit_code == 2
    for r in (receipts[1], receipts[3], receipts[4]):
        assert f"broken: block {r.block_id}:" in shown.output
    assert "3 broken block(s) of 5" in shown.output
    engine.dispose()


# -- 3. a render belongs to the tenant of its first event --


def test_another_tenants_render_id_is_refused(
    api_base: str, ledger: Ledger, http: httpx.Client
) -> None:
    a, b = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    render = uuid.uuid4()
    assert http.post("/v1/events", content=body(unet_event(a, render))).status_code == 200
    intruder = [
        unet_event(b, render, quantity=Decimal(1000)),
        unet_event(b, render, stage="render", sku="cpu.vcpu.second", outcome="failed"),
    ]
    with tenant_client(api_base, ledger.engine, b) as client:
        r = client.post("/v1/events", content=body(*intruder))
        fresh = client.post("/v1/events", content=body(unet_event(b, uuid.uuid4())))
    assert r.status_code == 422
    assert error_fields(r) == [(0, "render_id"), (1, "render_id")]
    assert str(a) not in r.text  # nothing says whose render it is
    assert fresh.status_code == 200
    trace = http.get(f"/v1/renders/{render}").json()
    assert (trace["tenant_id"], len(trace["events"]), trace["outcome"]) == (a, 1, None)


def test_two_tenants_in_one_admin_batch_cannot_share_a_new_render(
    http: httpx.Client,
) -> None:
    a, b = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    render = uuid.uuid4()
    r = http.post("/v1/events", content=body(unet_event(a, render), unet_event(b, render)))
    assert (r.status_code, error_fields(r)) == (422, [(1, "render_id")])


# -- 4. a garbage body costs little and answers small --


def test_a_flood_of_empty_events_is_refused_before_validation(http: httpx.Client) -> None:
    ndjson = b"{}\n" * (2 * 1024 * 1024 // 3)
    r = http.post("/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 413
    assert len(r.content) < 2000
    array = b"[" + b",".join([b"{}"] * 600_000) + b"]"
    r = http.post("/v1/events", content=array)
    assert r.status_code == 413
    assert len(r.content) < 2000


def test_many_invalid_events_answer_the_first_hundred_errors(http: httpx.Client) -> None:
    for content, media in (
        (b"{}\n" * 5000, "application/x-ndjson"),
        (b"[" + b",".join([b"{}"] * 5000) + b"]", "application/json"),
    ):
        r = http.post("/v1/events", content=content, headers={"content-type": media})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert len(detail["errors"]) == 100
        assert detail["errors_not_shown"] > 30_000  # seven missing fields per event
        assert str(detail["errors_not_shown"]) in detail["message"]
        assert len(r.content) < 50_000


# -- 5. no cost can overflow, one event's or any sum's --


def _max_quantity(ledger: Ledger) -> Decimal:
    """The largest whole number of H100-seconds under the per-event cost limit."""
    _, price = ledger.price_book().price("gpu.h100.second", unet_event("x").occurred_at)
    return Decimal(MAX_EVENT_COST_NANOS // int(price.unit_price_nanos))


def test_one_event_above_the_cost_limit_is_refused(
    http: httpx.Client, ledger: Ledger, tenant: str
) -> None:
    limit = _max_quantity(ledger)
    r = http.post("/v1/events", content=body(unet_event(tenant, quantity=limit * 2)))
    assert (r.status_code, error_fields(r)) == (422, [(0, "quantity")])
    assert "limit" in r.text
    r = http.post("/v1/events", content=body(unet_event(tenant, quantity=Decimal("999999999999"))))
    assert r.status_code == 422


def test_sums_past_64_bits_stay_exact(fresh_database: str, tenant: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    render, quantity = uuid.uuid4(), _max_quantity(ledger)
    at = datetime.now(UTC) - timedelta(minutes=30)  # inside the alerts' window too
    events = [unet_event(tenant, render, quantity=quantity, occurred_at=at) for _ in range(9_999)]
    events.append(
        unet_event(
            tenant,
            render,
            stage="render",
            sku="cpu.vcpu.second",
            outcome="delivered",
            occurred_at=at,
        )
    )
    ledger.append(events)
    with connection(engine) as raw:
        (logged,) = raw.execute(
            "SELECT sum(cost_nanos) FROM cost_events WHERE tenant_id = %s", (tenant,)
        ).fetchone() or (0,)
    assert logged > 2**63
    for rebuild in (False, True):
        run_rollup(engine, rebuild=rebuild)
        with connection(engine) as raw:
            rolled = raw.execute(
                "SELECT (SELECT total_nanos FROM render_rollup WHERE render_id = %s), "
                "(SELECT sum(cost_nanos) FROM daily_rollup WHERE tenant_id = %s)",
                (render, tenant),
            ).fetchone()
        assert rolled == (logged, logged)
    assert run_detection(engine).ran
    with connection(engine) as raw:
        hourly = raw.execute(
            "SELECT sum(delivered_nanos) FROM alert_hourly WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert hourly == (logged,)
    with connection(engine, transaction=True) as raw:
        store_plan(raw, Plan(tenant=tenant, effective_from=date(2000, 1, 1)))
        document = invoice(raw, tenant, at.date().replace(day=1))
    assert document.cost_basis.metered_nanos == logged
    engine.dispose()


# -- 8 and 13. a reversal repeats what it reverses; another tenant's ids are unknown ids --


def test_a_reversal_must_repeat_the_use_case(http: httpx.Client, tenant: str) -> None:
    original = unet_event(tenant)
    assert http.post("/v1/events", content=body(original)).status_code == 200
    other = original.model_copy(
        update={"event_id": uuid.uuid4(), "reverses": original.event_id, "use_case": "other"}
    )
    r = http.post("/v1/events", content=body(other))
    assert r.status_code == 422
    assert "use_case" in r.json()["detail"]["errors"][0]["message"]


def test_another_tenants_event_ids_answer_as_unknown_ones(
    api_base: str, ledger: Ledger, http: httpx.Client
) -> None:
    a, b = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    theirs = unet_event(a)
    assert http.post("/v1/events", content=body(theirs)).status_code == 200
    unknown = uuid.uuid4()
    with tenant_client(api_base, ledger.engine, b) as client:
        answers = [
            client.post(
                "/v1/events",
                content=body(unet_event(b, event_id=uuid.uuid4(), reverses=target)),
            )
            for target in (theirs.event_id, unknown)
        ]
        # Reusing their id is a new event of ours, exactly as an unknown id would be.
        reuse = client.post("/v1/events", content=body(unet_event(b, event_id=theirs.event_id)))
        fresh = client.post("/v1/events", content=body(unet_event(b, event_id=unknown)))
    (foreign, missing) = (a.json()["detail"]["errors"][0]["message"] for a in answers)
    assert [a.status_code for a in answers] == [422, 422]
    assert foreign.replace(str(theirs.event_id), "ID") == missing.replace(str(unknown), "ID")
    assert (reuse.status_code, fresh.status_code) == (200, 200)
    assert reuse.json()["accepted"] == fresh.json()["accepted"] == 1

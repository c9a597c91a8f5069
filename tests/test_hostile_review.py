"""Defects a second hostile review found after issue 11's fixes; each reproduced first."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.events import Cache, CostEvent, Outcome
from ledger.money import EXACT, MAX_EVENT_COST_NANOS
from ledger.store import Ledger
from reports.billing.lifecycle import draft_all
from reports.billing.plans import Plan, store_plan
from reports.jobs import run_rollup
from tests.conftest import ledger_with_prices


def _post(
    http: httpx.Client, event: CostEvent, quantity: bytes, ndjson: bool = False
) -> httpx.Response:
    """The event with ``quantity`` spelled exactly as given in the body."""
    doc = orjson.dumps(event.model_dump(mode="json", exclude={"quantity"}))
    line = doc[:-1] + b', "quantity": ' + quantity + b"}"
    if ndjson:
        return http.post(
            "/v1/events", content=line, headers={"content-type": "application/x-ndjson"}
        )
    return http.post("/v1/events", content=b"[" + line + b"]")


def _stored_quantity(http: httpx.Client, event: CostEvent) -> str:
    page = http.get(f"/v1/events?render_id={event.render_id}").json()
    return str(next(e["quantity"] for e in page["events"] if e["event_id"] == str(event.event_id)))


def test_quantities_sent_as_numbers_are_stored_exactly(http: httpx.Client, tenant: str) -> None:
    for ndjson in (False, True):
        for spelled in (b"1.123456789012345678", b"3.000000000000000001"):
            event = unet_event(tenant)
            r = _post(http, event, spelled, ndjson)
            assert r.status_code == 200, r.text
            assert _stored_quantity(http, event) == spelled.decode()


def test_a_zero_with_a_huge_exponent_is_a_plain_zero(http: httpx.Client, tenant: str) -> None:
    for spelled in (b'"0E-100000"', b"0E-100000"):
        event = unet_event(tenant)
        r = _post(http, event, spelled)
        assert r.status_code == 200, r.text
        assert _stored_quantity(http, event) == "0"


def test_quantities_past_twelve_digits_are_refused(http: httpx.Client, tenant: str) -> None:
    r = _post(http, unet_event(tenant), b'"99999999999999999999.999999999999999999"')
    assert r.status_code == 422
    assert r.json()["detail"]["errors"][0]["field"] == "quantity"


def test_free_sku_quantities_at_the_limit_do_not_stop_the_rollup(
    fresh_database: str, tenant: str
) -> None:
    """Priced at zero, no cost limit applies; the quantity sums still may not overflow."""
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    most = Decimal("999999999999.999999999999999999")
    render = uuid.uuid4()
    events = [
        unet_event(
            tenant, render, stage="caption_llm", sku="llm.offline.input_token", quantity=most
        )
        for _ in range(1000)
    ]
    ledger.append(events)
    assert run_rollup(engine).events == 1000
    assert run_rollup(engine, rebuild=True).events == 1000
    with connection(engine) as raw:
        row = raw.execute(
            "SELECT sum(quantity) FROM daily_rollup WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    assert row == (EXACT.multiply(most, 1000),)
    engine.dispose()


def test_text_that_spells_a_nul_escape_is_not_a_nul(http: httpx.Client, tenant: str) -> None:
    event = unet_event(tenant, attributes={"x": "\\u0000", "k\\u0000": 1})
    assert (
        http.post("/v1/events", content=orjson.dumps([event.model_dump(mode="json")])).status_code
        == 200
    )
    nul = orjson.dumps([unet_event(tenant).model_dump(mode="json")]).replace(
        b'"attributes":{}', b'"attributes":{"a":["x\\u0000"]}'
    )
    r = http.post("/v1/events", content=nul)
    assert r.status_code == 422
    assert "NUL" in r.text


def test_a_month_past_64_bits_is_reported_invoiced_and_batched(
    http: httpx.Client, ledger: Ledger, tenant: str
) -> None:
    """Two full batches at the per-event limit pass 2^64 nanos: orjson cannot write that."""
    _, price = ledger.price_book().price("gpu.h100.second", datetime.now(UTC))
    most = Decimal(MAX_EVENT_COST_NANOS // int(price.unit_price_nanos))
    at = datetime.now(UTC).replace(day=1, hour=1, minute=0, second=0, microsecond=0)
    render, bystander = uuid.uuid4(), f"b-{uuid.uuid4().hex[:10]}"
    for _ in range(2):
        ledger.append(
            [unet_event(tenant, render, quantity=most, occurred_at=at) for _ in range(10_000)]
        )
    ledger.append([unet_event(bystander, occurred_at=at)])
    run_rollup(ledger.engine)
    month = at.strftime("%Y-%m")
    report = http.get(f"/v1/tenants/{tenant}/report", params={"from": at.date().isoformat()})
    assert report.status_code == 200, report.text
    for fmt in ("json", "csv", "pdf"):
        r = http.get(f"/v1/tenants/{tenant}/invoices/{month}", params={"format": fmt})
        assert r.status_code == 200, (fmt, r.text[:300])
    with connection(ledger.engine) as raw:
        for t in (tenant, bystander):
            store_plan(raw, Plan(tenant=t, effective_from=at.date().replace(day=1)))
        drafts = {
            d.tenant: d for d in draft_all(raw, at.date().replace(day=1), [tenant, bystander])
        }
    assert drafts[tenant].cost_basis.metered_nanos > 2**64
    assert drafts[bystander].cost_basis.metered_nanos > 0


def test_a_credit_note_on_a_euro_invoice(ledger: Ledger, tenant: str) -> None:
    """Credit notes took their minor digits from a throwaway USD-less plan and failed."""
    from reports.billing.credit_notes import issue_credit_note
    from reports.billing.lifecycle import finalize
    from tests.billing_helpers import add_renders

    oct1 = datetime(2026, 10, 1, tzinfo=UTC).date()
    add_renders(ledger, tenant, datetime(2026, 10, 5, 12, tzinfo=UTC), n=3)
    with connection(ledger.engine) as raw:
        store_plan(
            raw, Plan(tenant=tenant, effective_from=oct1, currency="EUR", usd_rate=Decimal("0.9"))
        )
        document, _ = finalize(raw, tenant, oct1, now=datetime(2026, 11, 2, tzinfo=UTC))
        note = issue_credit_note(raw, tenant, oct1, Decimal("0.01"), "goodwill")
    assert document.currency == "EUR"
    assert note.amount_minor == 1


def test_a_tenant_id_with_a_trailing_newline_is_no_tenant_id(ledger: Ledger) -> None:
    import pytest

    from service.keys import KeyRefused, create_key

    with pytest.raises(KeyRefused):
        create_key(ledger.engine, "acme\n", ["read"], "newline")


def test_a_reversal_cannot_turn_a_delivered_render_into_a_failed_one(
    http: httpx.Client, tenant: str
) -> None:
    render = uuid.uuid4()
    done = unet_event(tenant, render, stage="render", sku="render.image", outcome="delivered")
    assert (
        http.post("/v1/events", content=orjson.dumps([done.model_dump(mode="json")])).status_code
        == 200
    )
    changes: list[dict[str, Any]] = [
        {"outcome": Outcome.FAILED},
        {"cache": Cache.HIT},
        {"baseline_quantity": Decimal(2)},
    ]
    for change in changes:
        undo = done.model_copy(
            update={"event_id": uuid.uuid4(), "reverses": done.event_id} | change
        )
        r = http.post("/v1/events", content=orjson.dumps([undo.model_dump(mode="json")]))
        assert r.status_code == 422, change
        assert next(iter(change)) in r.json()["detail"]["errors"][0]["message"]
    same = done.model_copy(update={"event_id": uuid.uuid4(), "reverses": done.event_id})
    assert (
        http.post("/v1/events", content=orjson.dumps([same.model_dump(mode="json")])).status_code
        == 200
    )


def test_verify_reports_a_row_it_cannot_even_read(fresh_database: str, make_event: Any) -> None:
    import psycopg

    from ledger.chain import verify

    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    receipt = ledger.append([make_event() for _ in range(3)])
    with psycopg.connect(database.libpq_url(fresh_database), autocommit=True) as su:
        su.execute("ALTER TABLE cost_events DISABLE TRIGGER USER")
        su.execute(
            "UPDATE cost_events SET occurred_at = 'infinity' WHERE seq = %s", (receipt.last_seq,)
        )
        su.execute("ALTER TABLE cost_events ENABLE TRIGGER USER")
    result = verify(engine)
    assert not result.ok
    assert result.reason is not None
    assert "cannot be read" in result.reason
    engine.dispose()

"""Alerts on real parts: detection over rollups in PostgreSQL, the log over HTTP, webhooks to
a receiver on 127.0.0.1 with a signature check and a retry after a 500."""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.store import Ledger
from reports.alerts.detect import Rule
from reports.alerts.service import run_detection
from reports.alerts.store import append
from reports.alerts.webhooks import Webhook, attempts, deliver_pending
from reports.jobs import run_rollup
from service.keys import create_key
from tests.conftest import ledger_with_prices

NOW = datetime(2026, 11, 10, 14, 30, tzinfo=UTC)


def _render(tenant: str, at: datetime, seconds: float, precision: str) -> list[CostEvent]:
    render = uuid.uuid4()
    return [
        unet_event(
            tenant, render, use_case="ecommerce", quantity=Decimal(str(seconds)), occurred_at=at
        ),
        unet_event(
            tenant,
            render,
            use_case="ecommerce",
            stage="render",
            sku="render.image",
            outcome="delivered",
            occurred_at=at,
            attributes={"precision": precision},
        ),
    ]


def _burst(
    tenant: str, start: datetime, count: int, every_s: int, seconds: float, precision: str = "int8"
) -> list[CostEvent]:
    """``count`` renders ``every_s`` apart; every third a little slower, as real ones vary."""
    return [
        e
        for k in range(count)
        for e in _render(
            tenant, start + timedelta(seconds=every_s * k), seconds + 0.02 * (k % 3), precision
        )
    ]


@pytest.fixture
def own_ledger(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


def _history(ledger: Ledger, tenant: str) -> None:
    """Fifteen days of renders around this hour of day, with a little noise, and the
    ordinary renders of the hours just before now."""
    events = _burst(tenant, NOW - timedelta(hours=5), 60, 240, 2.0)
    for day in range(1, 16):
        for hour in (-1, 0, 1):
            start = NOW.replace(minute=0) - timedelta(days=day, hours=-hour)
            events += _burst(tenant, start, 8, 420, 2.0)
    ledger.append(events)


def test_regression_opens_an_alert_naming_stage_and_change_then_resolves(
    own_ledger: Ledger,
) -> None:
    _history(own_ledger, "acme")
    own_ledger.append(_burst("acme", NOW - timedelta(minutes=50), 110, 25, 2.8, "fp16"))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert [d.signal for d in result.opened] == ["unit_cost"]
    detail = result.opened[0].detail
    assert detail["stages"][0]["stage"] == "unet"
    assert detail["message"].startswith("acme/ecommerce cost per render +")
    assert "precision changed int8 → fp16" in detail["message"]
    # One open alert per series: the next pass opens nothing new.
    assert run_detection(own_ledger.engine, now=NOW + timedelta(minutes=1)).opened == []
    later = NOW + timedelta(hours=2)
    own_ledger.append(_burst("acme", later - timedelta(minutes=50), 110, 25, 2.0))
    run_rollup(own_ledger.engine)
    resolved = run_detection(own_ledger.engine, now=later)
    assert [d.alert_id for d in resolved.resolved] == [result.opened[0].alert_id]


def test_flat_unit_cost_at_double_volume_opens_nothing(own_ledger: Ledger) -> None:
    _history(own_ledger, "hooli")
    own_ledger.append(_burst("hooli", NOW - timedelta(minutes=55), 300, 11, 2.0))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, lambda _t, _u: Rule(), now=NOW)
    assert result.series == 1
    assert result.opened == []


def _alert(engine: Engine, tenant: str) -> uuid.UUID:
    alert_id = uuid.uuid4()
    with connection(engine, transaction=True) as raw:
        append(
            raw,
            alert_id,
            tenant,
            "ecommerce",
            "unit_cost",
            "opened",
            {"message": f"{tenant}/ecommerce cost per render +38%", "baseline": 1.0},
        )
    return alert_id


def test_alerts_over_http_ack_and_isolation(ledger: Ledger, api_base: str) -> None:
    a, b = f"al-{uuid.uuid4().hex[:8]}", f"al-{uuid.uuid4().hex[:8]}"
    mine, theirs = _alert(ledger.engine, a), _alert(ledger.engine, b)
    a_key = create_key(ledger.engine, a, ["read"])
    with httpx.Client(base_url=api_base, headers={"x-api-key": a_key}, timeout=30) as client:
        listed = client.get("/v1/alerts", params={"status": "open"}).json()
        assert [x["alert_id"] for x in listed] == [str(mine)]
        for call in (
            lambda: client.get(f"/v1/alerts/{theirs}"),
            lambda: client.post(f"/v1/alerts/{theirs}/ack"),
            lambda: client.get("/v1/alerts", params={"tenant": b}),
        ):
            assert call().status_code == 404
        acked = client.post(f"/v1/alerts/{mine}/ack")
        assert acked.status_code == 200
        assert acked.json()["status"] == "acknowledged"
        assert (
            client.post(f"/v1/alerts/{mine}/ack").json()["acknowledged_at"]
            == acked.json()["acknowledged_at"]
        )
    with connection(ledger.engine, transaction=True) as raw:
        append(raw, mine, a, "ecommerce", "unit_cost", "resolved", {"value": 1.0})
    with httpx.Client(base_url=api_base, headers={"x-api-key": a_key}, timeout=30) as client:
        assert client.get(f"/v1/alerts/{mine}").json()["status"] == "resolved"
        assert client.post(f"/v1/alerts/{mine}/ack").status_code == 409


class _Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first delivery of every event, 200 after."""

    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        event = self.headers["x-renderledger-event"]
        seen = any(h["x-renderledger-event"] == event for h, _ in self.received)
        self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200 if seen else 500)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_webhook_is_signed_retried_after_a_500_and_logged(ledger: Ledger) -> None:
    alert_id = _alert(ledger.engine, f"wh-{uuid.uuid4().hex[:8]}")
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", "s3cret", backoff_s=0.0)
    try:
        for _ in range(3):  # bounded: the 500, the retry, then nothing left to send
            deliver_pending(ledger.engine, hook)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    ours = [(h, b) for h, b in _Receiver.received if orjson.loads(b)["alert_id"] == str(alert_id)]
    assert len(ours) == 2
    for headers, body in ours:
        mac = hmac.new(
            b"s3cret", headers["x-renderledger-timestamp"].encode() + b"." + body, hashlib.sha256
        )
        assert hmac.compare_digest(headers["x-renderledger-signature"], f"sha256={mac.hexdigest()}")
    event_id = int(ours[0][0]["x-renderledger-event"])
    assert [a["status"] for a in attempts(ledger.engine, event_id)] == [500, 200]

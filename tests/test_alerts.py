"""Alerts on real parts: detection over rollups in PostgreSQL, the log over HTTP, webhooks to
a receiver on 127.0.0.1 with a signature check and a retry after a 500; series per currency
across a price book that changes currency, and migration 0013 down and up."""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import orjson
import psycopg
import pytest
from sqlalchemy import Engine

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.prices import parse_price_book
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
    assert " USD per render) since " in detail["message"]
    assert detail["currency"] == "USD"
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
            currency="EUR",
        )
    return alert_id


def test_alerts_over_http_ack_and_isolation(ledger: Ledger, api_base: str) -> None:
    a, b = f"al-{uuid.uuid4().hex[:8]}", f"al-{uuid.uuid4().hex[:8]}"
    mine, theirs = _alert(ledger.engine, a), _alert(ledger.engine, b)
    a_key = create_key(ledger.engine, a, ["read"])
    with httpx.Client(base_url=api_base, headers={"x-api-key": a_key}, timeout=30) as client:
        listed = client.get("/v1/alerts", params={"status": "open"}).json()
        assert [(x["alert_id"], x["currency"]) for x in listed] == [(str(mine), "EUR")]
        calls: list[Callable[[], httpx.Response]] = [
            lambda: client.get(f"/v1/alerts/{theirs}"),
            lambda: client.post(f"/v1/alerts/{theirs}/ack"),
            lambda: client.get("/v1/alerts", params={"tenant": b}),
        ]
        for call in calls:
            assert call().status_code == 404
        acked = client.post(f"/v1/alerts/{mine}/ack")
        assert acked.status_code == 200
        assert acked.json()["status"] == "acknowledged"
        assert (
            client.post(f"/v1/alerts/{mine}/ack").json()["acknowledged_at"]
            == acked.json()["acknowledged_at"]
        )
    with connection(ledger.engine, transaction=True) as raw:
        logged = raw.execute(
            "SELECT kind, currency, detail->>'currency' FROM alert_events WHERE alert_id = %s "
            "ORDER BY event_id",
            (mine,),
        ).fetchall()
        assert logged == [("opened", "EUR", None), ("acknowledged", "EUR", "EUR")]
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


def _eur_book(ledger: Ledger, start: datetime, factor: str = "1") -> None:
    """A EUR book from ``start``: the default book's H100 price times ``factor``, in EUR."""
    price = Decimal("0.0011") * Decimal(factor)
    ledger.load_prices(
        parse_price_book(
            f"""
name = "eur-{start:%Y%m%d%H%M}-{factor}"
effective_from = {start.isoformat()}
currency = "EUR"
[prices."gpu.h100.second"]
unit = "second"
price = "{price}"
[prices."render.image"]
unit = "image"
price = "0"
"""
        )
    )


def _hourly_by_currency(engine: Engine, tenant: str) -> dict[str, tuple[datetime, datetime, int]]:
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT currency, min(hour), max(hour), sum(delivered) FROM alert_hourly "
            "WHERE tenant_id = %s GROUP BY currency",
            (tenant,),
        ).fetchall()
    return {r[0]: (r[1], r[2], int(r[3])) for r in rows}


@pytest.mark.parametrize("factor", ["1", "1.4"])
def test_a_book_switch_from_usd_to_eur_is_not_a_change(own_ledger: Ledger, factor: str) -> None:
    """Fifteen days rated in USD, then an EUR book: the same numbers (or 40 % higher ones,
    which a summed series took for a regression) are a new series, not a change of the old."""
    switch = NOW - timedelta(hours=5, minutes=30)
    _eur_book(own_ledger, switch, factor)
    _history(own_ledger, "umbrella")  # its last hours (from NOW − 5 h) are priced in EUR
    own_ledger.append(_burst("umbrella", NOW - timedelta(minutes=50), 110, 25, 2.0))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert result.opened == []
    assert (result.present, result.series) == (1, 1)  # the EUR series; it has no past yet
    hourly = _hourly_by_currency(own_ledger.engine, "umbrella")
    assert set(hourly) == {"USD", "EUR"}
    assert hourly["USD"][1] < switch <= hourly["EUR"][0]  # no hour of one is in the other
    assert hourly["EUR"][2] == 60 + 110
    assert hourly["USD"][2] == 15 * 3 * 8


def _book_switch(own_ledger: Ledger, tenant: str, eur_days: int) -> None:
    """Renders at this hour of day (±1 h) rated in USD at 2.8 s each, 21 … ``eur_days`` + 1
    days ago; then an EUR book with the same numbers, and renders at 2.0 s in it on the
    last ``eur_days`` days and in the hours just before now: a past in each currency."""
    _eur_book(own_ledger, NOW - timedelta(days=eur_days, hours=3))
    events = _burst(tenant, NOW - timedelta(hours=5), 60, 240, 2.0)
    for day in range(1, 22):
        for hour in (-1, 0, 1):
            start = NOW.replace(minute=0) - timedelta(days=day, hours=-hour)
            events += _burst(tenant, start, 8, 420, 2.0 if day <= eur_days else 2.8)
    own_ledger.append(events)


def test_a_rise_in_the_eur_series_is_caught_names_eur_and_is_pushed_with_it(
    own_ledger: Ledger,
) -> None:
    _book_switch(own_ledger, "initech", 15)
    own_ledger.append(_burst("initech", NOW - timedelta(minutes=50), 110, 25, 2.8, "fp16"))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert [d.signal for d in result.opened] == ["unit_cost"]
    detail = result.opened[0].detail
    assert detail["currency"] == "EUR"
    assert 0.3 < detail["change"] < 0.5
    assert " EUR per render) since " in detail["message"]
    assert "USD" not in detail["message"]
    alert_id = result.opened[0].alert_id
    with connection(own_ledger.engine) as raw:
        logged = raw.execute(
            "SELECT DISTINCT currency FROM alert_events WHERE alert_id = %s", (alert_id,)
        ).fetchall()
    assert logged == [("EUR",)]
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        deliver_pending(
            own_ledger.engine, Webhook(f"http://127.0.0.1:{server.server_address[1]}/h", "s")
        )
    finally:
        server.shutdown()
        thread.join(timeout=10)
    [(_, body)] = _Receiver.received
    pushed = orjson.loads(body)
    assert pushed["alert_id"] == str(alert_id)
    assert pushed["detail"]["currency"] == "EUR"
    assert pushed["currency"] == "EUR"  # a field of its own, as receivers filter on it
    assert " EUR per render" in pushed["message"]


def test_the_usd_past_does_not_leak_into_the_eur_baseline(own_ledger: Ledger) -> None:
    """A week of EUR renders at 2.0 s after two of USD at 2.8 s: the EUR series' baseline is
    its own week, so renders at 2.0 s are no change (the median of both weeks would be the
    USD one, and call them a fall of 29 %)."""
    _book_switch(own_ledger, "stark", 7)
    own_ledger.append(_burst("stark", NOW - timedelta(minutes=50), 110, 25, 2.0))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert result.opened == []
    assert result.series == 1
    hourly = _hourly_by_currency(own_ledger.engine, "stark")
    assert hourly["USD"][1] < hourly["EUR"][0]
    assert hourly["USD"][2] == 14 * 3 * 8
    # And 2.8 s is a rise of the EUR series (the median of both weeks would see none).
    later = NOW + timedelta(hours=1)
    own_ledger.append(_burst("stark", later - timedelta(minutes=50), 110, 25, 2.8))
    run_rollup(own_ledger.engine)
    [rise] = run_detection(own_ledger.engine, now=later).opened
    assert (rise.signal, rise.detail["currency"]) == ("unit_cost", "EUR")


def test_migration_0013_goes_down_and_up_and_detection_backfills(
    own_ledger: Ledger, fresh_database: str
) -> None:
    _history(own_ledger, "acme")
    own_ledger.append(_burst("acme", NOW - timedelta(minutes=50), 110, 25, 2.8, "fp16"))
    run_rollup(own_ledger.engine)
    [opened] = run_detection(own_ledger.engine, now=NOW).opened
    own_ledger.engine.dispose()
    database.downgrade(fresh_database, "0012")
    with psycopg.connect(database.libpq_url(fresh_database)) as raw:
        columns = raw.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'currency' "
            "AND table_name IN ('alert_hourly', 'alert_events')"
        ).fetchall()
        assert columns == []
        assert raw.execute("SELECT count(*) FROM alert_hourly").fetchone() == (0,)
        assert raw.execute("SELECT count(*) FROM alert_events").fetchone() == (1,)
    database.migrate(fresh_database)
    with psycopg.connect(database.libpq_url(fresh_database)) as raw:
        assert raw.execute("SELECT count(*) FROM alert_hourly").fetchone() == (0,)
        key = raw.execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'alert_hourly'::regclass AND i.indisprimary"
        ).fetchone()
        assert key == (["hour", "tenant_id", "use_case", "currency"],)
        assert raw.execute("SELECT currency FROM alert_events").fetchall() == [(None,)]
    # An empty alert_hourly is a first run: the whole baseline period is rebuilt. The alert
    # logged before 0013 has no currency; the series of its tenant × use case adopts it
    # (nothing new opens) and resolves it, naming its currency.
    result = run_detection(own_ledger.engine, now=NOW + timedelta(minutes=1))
    assert result.opened == []
    hourly = _hourly_by_currency(own_ledger.engine, "acme")
    assert hourly["USD"][0] <= NOW - timedelta(days=15, hours=1)
    later = NOW + timedelta(hours=2)
    own_ledger.append(_burst("acme", later - timedelta(minutes=50), 110, 25, 2.0))
    run_rollup(own_ledger.engine)
    resolved = run_detection(own_ledger.engine, now=later)
    assert [d.alert_id for d in resolved.resolved] == [opened.alert_id]
    with connection(own_ledger.engine) as raw:
        kinds = raw.execute("SELECT kind, currency FROM alert_events ORDER BY event_id").fetchall()
    assert kinds == [("opened", None), ("resolved", "USD")]

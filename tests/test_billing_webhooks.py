"""Billing webhooks on real parts: events recorded in PostgreSQL, delivered to a loopback
receiver that verifies them with the standardwebhooks package, and the admin listing over
real HTTP and the CLI."""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from ledger import database
from ledger.connections import connection
from ledger.store import Ledger
from reports import scheduler
from reports.billing.credit_notes import issue_credit_note
from reports.billing.lifecycle import finalize
from reports.billing.notices import (
    BillingWebhook,
    attempts,
    billing_webhook,
    deliver_pending,
    record,
)
from reports.billing.plans import Plan, Pricing, Tier, store_plan
from reports.settings import BillingSettings
from service.cli.main import app
from service.keys import create_key
from tests.billing_helpers import add_renders
from tests.conftest import TEST_ISSUER, free_port, ledger_with_prices

PUBLIC = "https://billing.example.com/rl/"
NOW = datetime(2026, 11, 3, 9, tzinfo=UTC)


def _secret(size: int = 32) -> str:
    return "whsec_" + base64.b64encode(os.urandom(size)).decode()


@pytest.fixture
def own(fresh_database: str) -> Iterator[Engine]:
    """A database of its own: a delivery tick reaches every pending event there is."""
    own = database.make_engine(fresh_database, app_role="renderledger_app")
    yield own
    own.dispose()


def _record(
    engine: Engine,
    type_: Any = "invoice.finalized",
    tenant: str = "acme",
    number: str | None = None,
) -> int:
    number = number or f"RL-2026-{uuid.uuid4().hex[:10]}"
    data = {"tenant": tenant, "period": "2026-10", "number": number, "currency": "EUR"}
    if type_ == "credit_note.issued":
        data |= {"invoice_number": "RL-2026-000001", "amount": "12.50", "reason": "outage"}
    else:
        data |= {"issued_on": "2026-11-02", "due_on": "2026-12-02", "total": "119.00"}
    with connection(engine, transaction=True) as raw:
        record(raw, type_, tenant, date(2026, 10, 1), number, data)
        row = raw.execute("SELECT event_id FROM billing_events WHERE number = %s", (number,))
        found = row.fetchone()
    assert found is not None
    return int(found[0])


@dataclass
class Receiver:
    """A loopback webhook receiver: answers ``statuses`` in order, then 200; with ``slow``,
    a 200 whose 40-byte body comes a byte every 0.25 s (bounded; ``release`` stops it)."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    slow: bool = False
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if state.slow:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
                try:
                    for _ in range(40):
                        if state.release.wait(0.25):
                            return
                        self.wfile.write(b"x")
                        self.wfile.flush()
                except OSError:  # the client gave up, as a bounded attempt does
                    pass
                return
            self.send_response(state.statuses.pop(0) if state.statuses else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/billing"
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_deliveries_verify_with_either_secret_while_rotating(
    own: Engine, receiver: Receiver
) -> None:
    current, previous, stranger = _secret(), _secret(), _secret()
    invoice = _record(own, "invoice.finalized", number="RL-2026-000001")
    note = _record(own, "credit_note.issued", number="RL-2026-000002")
    hook = BillingWebhook(receiver.url, current, previous, public_url=PUBLIC)
    assert deliver_pending(own, hook) == 2
    (inv_headers, inv_body), (note_headers, note_body) = receiver.received
    for headers, body in receiver.received:
        assert headers["content-type"] == "application/json"
        assert len(headers["webhook-signature"].split(" ")) == 2
        assert Webhook(current).verify(body, headers) == orjson.loads(body)
        assert Webhook(previous).verify(body, headers) == orjson.loads(body)
        with pytest.raises(WebhookVerificationError):
            Webhook(stranger).verify(body, headers)
        with pytest.raises(WebhookVerificationError):  # the body is what was signed
            Webhook(current).verify(body.replace(b"EUR", b"USD"), headers)
    assert inv_headers["webhook-id"] == f"bev_{invoice}"
    assert note_headers["webhook-id"] == f"bev_{note}"

    doc = "https://billing.example.com/rl/v1/tenants/acme/invoices/2026-10"
    sent = orjson.loads(inv_body)
    assert sent["type"] == "invoice.finalized"
    assert sent["data"]["number"] == "RL-2026-000001"
    assert sent["data"]["total"] == "119.00"
    assert sent["data"]["links"] == {
        "json": doc,
        "pdf": f"{doc}?format=pdf",
        "csv": f"{doc}?format=csv",
    }
    with connection(own) as raw:
        row = raw.execute("SELECT at FROM billing_events WHERE event_id = %s", (invoice,))
        found = row.fetchone()
    assert found is not None
    assert sent["timestamp"].endswith("Z")
    assert datetime.fromisoformat(sent["timestamp"]) == found[0]
    credited = orjson.loads(note_body)
    assert credited["type"] == "credit_note.issued"
    assert credited["data"]["invoice_number"] == "RL-2026-000001"
    assert credited["data"]["links"]["pdf"] == f"{doc}?format=pdf"
    assert credited["data"]["links"]["credit_note"] == f"{doc}/credit-notes/RL-2026-000002"

    # The rotation is over: the previous secret signs no more.
    _record(own)
    assert deliver_pending(own, BillingWebhook(receiver.url, current)) == 1
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(current).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(previous).verify(body, headers)


def test_a_finalized_invoice_and_its_credit_note_reach_the_receiver(
    own: Engine, receiver: Receiver
) -> None:
    """From the real lifecycle: what finalize and issue_credit_note record is what is sent."""
    ledger = ledger_with_prices(own)
    plan = Plan(
        tenant="globex",
        effective_from=date(2026, 10, 1),
        currency="EUR",
        minimum_commitment=Decimal("10.00"),
        default=Pricing(tiers=(Tier(unit_price=Decimal("0.05")),)),
    )
    with connection(own, transaction=True) as raw:
        store_plan(raw, plan)
    add_renders(ledger, "globex", datetime(2026, 10, 7, tzinfo=UTC), 2)
    with connection(own) as raw:
        doc, _ = finalize(raw, "globex", date(2026, 10, 1), now=NOW, issuer=TEST_ISSUER)
        note = issue_credit_note(raw, "globex", date(2026, 10, 1), Decimal("2.50"), "outage")
    secret = _secret()
    assert deliver_pending(own, BillingWebhook(receiver.url, secret, public_url=PUBLIC)) == 2
    finalized, credited = (Webhook(secret).verify(b, h) for h, b in receiver.received)
    assert finalized["type"] == "invoice.finalized"
    assert {k: finalized["data"][k] for k in ("tenant", "period", "number", "currency")} == {
        "tenant": "globex",
        "period": "2026-10",
        "number": doc.number,
        "currency": "EUR",
    }
    assert (finalized["data"]["total"], finalized["data"]["amount_due"]) == ("10.00", "10.00")
    assert credited["type"] == "credit_note.issued"
    assert credited["data"]["number"] == note.number
    assert (credited["data"]["invoice_number"], credited["data"]["amount"]) == (
        doc.number,
        "2.50",
    )
    doc_url = "https://billing.example.com/rl/v1/tenants/globex/invoices/2026-10"
    assert finalized["data"]["links"]["json"] == doc_url
    assert credited["data"]["links"]["credit_note"] == f"{doc_url}/credit-notes/{note.number}"


def test_a_retry_after_a_500_keeps_the_webhook_id_and_backs_off(
    own: Engine, receiver: Receiver
) -> None:
    secret = _secret()
    event_id = _record(own)
    receiver.statuses = [500, 503]
    hook = BillingWebhook(receiver.url, secret, backoff_s=60.0)
    assert deliver_pending(own, hook) == 1
    assert deliver_pending(own, hook) == 0  # within the first 60 s
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert deliver_pending(own, hook, now=later) == 1
    assert deliver_pending(own, hook, now=later) == 0  # the second wait is 120 s
    assert deliver_pending(own, hook, now=later + timedelta(seconds=60)) == 1
    assert deliver_pending(own, hook, now=later + timedelta(seconds=600)) == 0  # delivered
    assert [a["status"] for a in attempts(own, event_id)] == [500, 503, 200]
    assert [a["attempt"] for a in attempts(own, event_id)] == [1, 2, 3]
    assert {h["webhook-id"] for h, _ in receiver.received} == {f"bev_{event_id}"}
    assert len({b for _, b in receiver.received}) == 1  # the same body each time
    for headers, body in receiver.received:
        Webhook(secret).verify(body, headers)


def test_max_attempts_bounds_the_retries(own: Engine, receiver: Receiver) -> None:
    event_id = _record(own)
    receiver.statuses = [500] * 10
    hook = BillingWebhook(receiver.url, _secret(), max_attempts=3, backoff_s=0.0)
    sent = [deliver_pending(own, hook) for _ in range(5)]  # bounded: five ticks
    assert sent == [1, 1, 1, 0, 0]
    assert [a["status"] for a in attempts(own, event_id)] == [500, 500, 500]
    assert len(receiver.received) == 3


def test_a_slow_receiver_is_cut_at_the_timeout(own: Engine, receiver: Receiver) -> None:
    receiver.slow = True
    event_id = _record(own)
    hook = BillingWebhook(receiver.url, _secret(), timeout_s=1.0)
    started = time.monotonic()
    assert deliver_pending(own, hook) == 1
    took = time.monotonic() - started
    assert took < 3 * hook.timeout_s, f"one attempt took {took:.1f}s"
    [attempt] = attempts(own, event_id)
    assert attempt["status"] is None
    assert attempt["error"] == "no full answer within 1s"


def test_a_tick_makes_at_most_max_per_tick_attempts(own: Engine, receiver: Receiver) -> None:
    events = [_record(own) for _ in range(3)]
    hook = BillingWebhook(receiver.url, _secret(), max_per_tick=2)
    assert [deliver_pending(own, hook) for _ in range(3)] == [2, 1, 0]
    assert [h["webhook-id"] for h, _ in receiver.received] == [f"bev_{e}" for e in events]


def test_an_unreachable_receiver_ends_the_tick(own: Engine) -> None:
    first, second = _record(own), _record(own)
    hook = BillingWebhook(f"http://127.0.0.1:{free_port()}/billing", _secret(), backoff_s=0.0)
    assert deliver_pending(own, hook) == 1
    assert [a["status"] for a in attempts(own, first)] == [None]
    assert attempts(own, second) == []


def test_the_settings_build_the_hook_and_refuse_a_bad_secret() -> None:
    assert billing_webhook(BillingSettings()) is None
    secret, previous = _secret(), _secret(24)
    hook = billing_webhook(
        BillingSettings(
            webhook_url="https://erp.example.com/hook",
            webhook_secret=secret,
            webhook_previous_secret=previous,
            webhook_max_attempts=3,
            public_url="https://ledger.example.com",
        )
    )
    assert hook is not None
    assert hook.secrets == (secret, previous)
    assert (hook.max_attempts, hook.public_url) == (3, "https://ledger.example.com")
    unpadded = _secret(32).rstrip("=")  # base64 without its padding is still a secret
    assert billing_webhook(BillingSettings(webhook_url="http://x", webhook_secret=unpadded))
    short = "whsec_" + base64.b64encode(b"12345678").decode()
    for bad in (None, "", "s3cret", "whsec_not*base64!", short, _secret(65)):
        with pytest.raises(ValueError, match="RENDERLEDGER_BILLING__WEBHOOK_SECRET") as caught:
            billing_webhook(BillingSettings(webhook_url="http://x", webhook_secret=bad))
        assert not bad or bad not in str(caught.value)
    with pytest.raises(ValueError, match="RENDERLEDGER_BILLING__WEBHOOK_PREVIOUS_SECRET"):
        billing_webhook(
            BillingSettings(
                webhook_url="http://x", webhook_secret=secret, webhook_previous_secret="old"
            )
        )
    with pytest.raises(ValueError, match="previous_secret"):
        BillingWebhook("http://x", secret, "whsec_")


def test_delivery_is_a_job_of_its_own_beside_the_rollup(own: Engine) -> None:
    rolled, started, release = threading.Event(), threading.Event(), threading.Event()

    def stuck_delivery() -> None:
        started.set()
        release.wait(30)  # bounded

    sched = scheduler.start(
        own,
        interval_s=1,
        after_rollup=rolled.set,
        billing_webhooks=stuck_delivery,
        webhook_interval_s=1,
    )
    try:
        assert sched.get_job("billing-webhooks") is not None
        assert started.wait(30), "the billing webhook job never ran"
        rolled.clear()
        assert rolled.wait(30), "no rollup ran while a delivery was under way"
    finally:
        release.set()
        sched.shutdown(wait=True)


def _attempt(engine: Engine, event_id: int, attempt: int, status: int | None) -> None:
    with connection(engine, transaction=True) as raw:
        raw.execute(
            "INSERT INTO billing_webhook_attempts (event_id, attempt, url, status, error, ms) "
            "VALUES (%s, %s, 'http://erp.example.com/hook', %s, %s, 12.5)",
            (event_id, attempt, status, None if status else "ConnectError: refused"),
        )


def test_admin_lists_events_with_their_delivery_state(
    ledger: Ledger, http: httpx.Client, api_base: str, tenant: str, cli: CliRunner
) -> None:
    numbers = [f"RL-T-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    first = _record(ledger.engine, "invoice.finalized", tenant, numbers[0])
    second = _record(ledger.engine, "credit_note.issued", tenant, numbers[1])
    third = _record(ledger.engine, "invoice.finalized", tenant, numbers[2])
    _attempt(ledger.engine, first, 1, 500)
    _attempt(ledger.engine, first, 2, 204)
    _attempt(ledger.engine, second, 1, None)

    answer = http.get("/v1/billing-events", params={"after": first - 1, "limit": 3})
    assert answer.status_code == 200, answer.text
    listed = answer.json()
    assert [e["event_id"] for e in listed] == [first, second, third]
    one, two, three = listed
    assert one["type"] == "invoice.finalized"
    assert (one["tenant"], one["period"], one["number"]) == (tenant, "2026-10", numbers[0])
    assert one["data"]["total"] == "119.00"
    assert datetime.fromisoformat(one["at"]).tzinfo is not None
    assert (one["attempts"], one["delivered"], one["last_status"]) == (2, True, 204)
    assert (two["attempts"], two["delivered"], two["last_status"]) == (1, False, None)
    assert two["last_error"] == "ConnectError: refused"
    assert (three["attempts"], three["delivered"], three["last_status"]) == (0, False, None)
    page = http.get("/v1/billing-events", params={"after": first, "limit": 1}).json()
    assert [e["event_id"] for e in page] == [second]
    assert http.get("/v1/billing-events", params={"limit": 0}).status_code == 422

    key = create_key(ledger.engine, tenant, ["read"])
    with httpx.Client(base_url=api_base, timeout=30) as anyone:
        refused = anyone.get("/v1/billing-events", headers={"authorization": f"Bearer {key}"})
        assert refused.status_code == 403
        assert anyone.get("/v1/billing-events").status_code == 401

    shown = cli.invoke(
        app,
        ["invoice", "events", "--after", str(first - 1), "--limit", "3"],
        env={"COLUMNS": "250"},
    )
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    rows = {}  # a number: the two lines of its row
    for n in numbers:
        at = next(i for i, line in enumerate(lines) if n in line)
        rows[n] = (lines[at].split(), lines[at + 1].split())
    assert {str(first), tenant, "delivered"} <= set(rows[numbers[0]][0])
    assert {"invoice.finalized", "2026-10", "204"} <= set(rows[numbers[0]][1])
    assert {"credit_note.issued", "attempt:", "ConnectError:"} <= set(rows[numbers[1]][1])
    assert "not" in rows[numbers[2]][0]
    assert {"0", "attempts"} <= set(rows[numbers[2]][1])
    assert cli.invoke(app, ["invoice", "events", "--limit", "0"]).exit_code == 2

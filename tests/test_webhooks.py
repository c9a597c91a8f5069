"""Webhooks against real loopback receivers: a slow one is cut off at the attempt's deadline
and logged as failed, and a rollup never waits on delivery (its own scheduled job)."""

from __future__ import annotations

import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
from sqlalchemy import Engine

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.journal import head as ledger_head
from ledger.store import Ledger
from reports import scheduler
from reports.alerts.config import after_rollup
from reports.alerts.store import append
from reports.alerts.webhooks import Webhook, attempts, deliver_pending
from reports.jobs import checkpoint
from service.settings import AlertSettings
from tests.conftest import free_port, ledger_with_prices


@pytest.fixture
def own_ledger(fresh_database: str) -> Iterator[Ledger]:
    """A database of its own: a delivery tick reaches every pending event in the log."""
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


def _alert(engine: Engine) -> int:
    """A fresh 'opened' event in the alert log (the outbox); its event id."""
    with connection(engine, transaction=True) as raw:
        append(raw, uuid.uuid4(), "acme", "ecommerce", "unit_cost", "opened", {"message": "+38%"})
        row = raw.execute("SELECT max(event_id) FROM alert_events").fetchone()
    assert row is not None
    return int(row[0])


class _Slow(socketserver.StreamRequestHandler):
    """Reads the request, then answers one byte a second: the status line itself
    (``mode = "headers"``) or a body after prompt headers (``"body"``). Bounded: at most
    ``limit`` bytes, and it stops when ``release`` is set or the client hangs up."""

    mode: ClassVar[str] = "body"
    limit: ClassVar[int] = 20
    paths: ClassVar[list[str]] = []
    in_request = threading.Event()
    release = threading.Event()

    def handle(self) -> None:
        request_line = self.rfile.readline().decode()
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        self.rfile.read(length)
        self.paths.append(request_line.split()[1])
        self.in_request.set()
        if self.mode == "body":
            self.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {self.limit}\r\n\r\n".encode())
            drip = b"x" * self.limit
        else:
            drip = b"HTTP/1.1 200 OK\r\n"[: self.limit]
        try:
            for byte in drip:
                if self.release.wait(1):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except OSError:  # the client gave up: what a bounded attempt does
            return


@pytest.fixture
def slow() -> Iterator[str]:
    _Slow.mode, _Slow.limit, _Slow.paths = "body", 20, []
    _Slow.in_request.clear()
    _Slow.release.clear()
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    _Slow.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_a_slow_receiver_is_cut_off_at_the_deadline_and_logged_as_failed(
    own_ledger: Ledger, slow: str, mode: str
) -> None:
    _Slow.mode = mode
    event_id = _alert(own_ledger.engine)
    hook = Webhook(f"{slow}/hook", "s3cret", timeout_s=2.0)
    started = time.monotonic()
    assert deliver_pending(own_ledger.engine, hook) == 1
    took = time.monotonic() - started
    assert took < 3 * hook.timeout_s, f"one attempt took {took:.1f}s"
    [attempt] = attempts(own_ledger.engine, event_id)
    assert attempt["status"] is None
    assert attempt["error"] == "no full answer within 2s"


def test_an_unreachable_receiver_ends_the_tick(own_ledger: Ledger) -> None:
    first, second = _alert(own_ledger.engine), _alert(own_ledger.engine)
    hook = Webhook(f"http://127.0.0.1:{free_port()}/hook", "s3cret", backoff_s=0.0)
    assert deliver_pending(own_ledger.engine, hook) == 1
    assert [a["status"] for a in attempts(own_ledger.engine, first)] == [None]
    assert attempts(own_ledger.engine, second) == []


def test_a_tick_makes_at_most_max_per_tick_attempts(own_ledger: Ledger, slow: str) -> None:
    _Slow.limit = 0  # an empty 200 at once
    for _ in range(3):
        _alert(own_ledger.engine)
    hook = Webhook(f"{slow}/hook", "s3cret", max_per_tick=2)
    assert deliver_pending(own_ledger.engine, hook) == 2
    assert deliver_pending(own_ledger.engine, hook) == 1
    assert deliver_pending(own_ledger.engine, hook) == 0


def test_a_rollup_does_not_wait_on_a_slow_delivery(own_ledger: Ledger, slow: str) -> None:
    engine = own_ledger.engine
    _Slow.limit = 60  # held until released, a minute at most
    event_id = _alert(engine)
    # Detection is given a webhook too: it must not deliver (nothing may reach /rollup).
    alerts = AlertSettings(webhook_url=f"{slow}/rollup", webhook_secret="s3cret")
    hook = Webhook(f"{slow}/hook", "s3cret", timeout_s=120.0)
    sched = scheduler.start(
        engine,
        interval_s=1,
        after_rollup=after_rollup(engine, alerts),
        webhooks=lambda: deliver_pending(engine, hook),
        webhook_interval_s=1,
    )
    try:
        assert _Slow.in_request.wait(30), "the webhook job never ran"
        render = uuid.uuid4()
        own_ledger.append([unet_event("acme", render, use_case="ecommerce") for _ in range(3)])
        for _ in range(300):  # bounded: at most ~30 s
            with connection(engine) as raw, raw.transaction():
                caught_up = checkpoint(raw) >= ledger_head(raw)
            if caught_up:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the rollup waited on the webhook")
        assert attempts(engine, event_id) == []  # the delivery is still under way
    finally:
        _Slow.release.set()
        sched.shutdown(wait=True)
    assert _Slow.paths[0] == "/hook"
    assert "/rollup" not in _Slow.paths
    assert len(attempts(engine, event_id)) == 1


def test_alerts_go_out_as_standard_webhooks_verified_with_either_secret(
    own_ledger: Ledger,
) -> None:
    """A whsec_ secret: the standardwebhooks library verifies the delivery with the new
    secret and with the previous one while rotating; a stranger's secret does not."""
    import base64
    import os
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks.webhooks import Webhook as Verifier
    from standardwebhooks.webhooks import WebhookVerificationError

    got: list[tuple[bytes, dict[str, str]]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append((body, dict(self.headers.items())))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    def secret() -> str:
        return "whsec_" + base64.b64encode(os.urandom(32)).decode()

    new, old = secret(), secret()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        event_id = _alert(own_ledger.engine)
        hook = Webhook(f"http://127.0.0.1:{server.server_port}/hook", new, previous_secret=old)
        assert deliver_pending(own_ledger.engine, hook) == 1
    finally:
        server.shutdown()
    [(body, headers)] = got
    for key in (new, old):
        message = Verifier(key).verify(body, headers)
        assert message["type"] == "alert.opened"
        assert message["data"]["event_id"] == event_id
        assert message["data"]["message"] == "+38%"
    assert headers["webhook-id"] == f"aev_{event_id}"
    with pytest.raises(WebhookVerificationError):
        Verifier(secret()).verify(body, headers)
    assert "x-renderledger-signature" not in {k.lower() for k in headers}

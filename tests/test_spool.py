"""The spool against a real ledger over HTTP: a refused batch is set aside and the rest flow,
passing failures keep the order, one connection serves a flush, flushers take turns."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ingest.client import HttpTransport, LedgerTransport, Spool
from ingest.sample import unet_event
from ledger.events import CostEvent
from ledger.journal import read_render
from ledger.store import Ledger
from service.keys import create_key
from tests.conftest import EventFactory, free_port


def _batch(tenant: str, n: int = 2) -> list[CostEvent]:
    render = uuid.uuid4()
    return [unet_event(tenant, render, use_case="ecommerce") for _ in range(n)]


def _stored(ledger: Ledger, batch: Sequence[CostEvent]) -> list[uuid.UUID]:
    return [e.event_id for e in read_render(ledger.engine, batch[0].render_id)]


def test_a_batch_refused_with_403_is_set_aside_and_later_batches_flow(
    ledger: Ledger, api_base: str, tenant: str, tmp_path: Path
) -> None:
    key = create_key(ledger.engine, tenant, ["ingest"], "renderer")
    other = f"o-{uuid.uuid4().hex[:12]}"
    first, foreign, last = _batch(tenant), _batch(other), _batch(tenant)
    spool = Spool(tmp_path / "spool")
    for batch in (first, foreign, last):
        spool.write(batch)
    foreign_file = spool.pending()[1].name
    transport = HttpTransport(api_base, api_key=key)
    try:
        assert spool.flush(transport) == (2, 0)
    finally:
        transport.close()
    assert _stored(ledger, first) == [e.event_id for e in first]
    assert _stored(ledger, last) == [e.event_id for e in last]
    assert _stored(ledger, foreign) == []
    assert [p.name for p in spool.rejected()] == [foreign_file]
    reason = (spool.rejected_dir / f"{foreign_file}.reason").read_text()
    assert "HTTP 403" in reason
    assert "another tenant" in reason


def test_a_wrong_key_sets_batches_aside_until_requeued(
    ledger: Ledger, api_base: str, tenant: str, tmp_path: Path
) -> None:
    batches = [_batch(tenant) for _ in range(3)]
    spool = Spool(tmp_path / "spool")
    for batch in batches:
        spool.write(batch)
    wrong = HttpTransport(api_base, api_key="rlk_000000000000_nope")
    try:
        assert spool.flush(wrong) == (0, 0)
    finally:
        wrong.close()
    assert len(spool.rejected()) == 3
    assert "HTTP 401" in (spool.rejected_dir / f"{spool.rejected()[0].name}.reason").read_text()
    assert spool.requeue() == 3
    assert spool.rejected() == []
    assert list(spool.rejected_dir.iterdir()) == []
    right = HttpTransport(api_base, api_key=create_key(ledger.engine, tenant, ["ingest"]))
    try:
        assert spool.flush(right) == (3, 0)
    finally:
        right.close()
    for batch in batches:
        assert _stored(ledger, batch) == [e.event_id for e in batch]


class _Stub(BaseHTTPRequestHandler):
    """Answers every request with ``status``; counts the connections it was asked on."""

    protocol_version = "HTTP/1.1"  # keep-alive, so a reused client shows as one connection
    status: ClassVar[int] = 200
    connections: ClassVar[list[int]] = []
    requests: ClassVar[list[bytes]] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(self.client_address[1])

    def do_POST(self) -> None:
        self.requests.append(self.rfile.read(int(self.headers["content-length"])))
        body = b'{"message": "stub"}'
        self.send_response(self.status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    _Stub.status, _Stub.connections, _Stub.requests = 200, [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_passing_failures_keep_every_batch_in_order(
    stub: str, status: int, tenant: str, tmp_path: Path
) -> None:
    _Stub.status = status
    spool = Spool(tmp_path / "spool")
    written = [spool.write(_batch(tenant)) for _ in range(3)]
    transport = HttpTransport(stub)
    try:
        assert spool.flush(transport) == (0, 3)
    finally:
        transport.close()
    assert len(_Stub.requests) == 1  # stopped at the first: the rest wait their turn
    assert spool.pending() == written
    assert spool.rejected() == []


def test_an_unreachable_ledger_keeps_every_batch(tenant: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    written = [spool.write(_batch(tenant)) for _ in range(2)]
    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    try:
        assert spool.flush(transport) == (0, 2)
    finally:
        transport.close()
    assert spool.pending() == written
    assert spool.rejected() == []


def test_one_connection_carries_every_batch_of_a_flush(
    stub: str, tenant: str, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    for _ in range(4):
        spool.write(_batch(tenant))
    transport = HttpTransport(stub)
    try:
        assert spool.flush(transport) == (4, 0)
    finally:
        transport.close()
    assert len(_Stub.requests) == 4
    assert len(_Stub.connections) == 1


class _Counting:
    """The real in-process transport, counting each batch it sends; a little slow, so two
    unguarded flushers would overlap."""

    def __init__(self, ledger: Ledger) -> None:
        self.inner = LedgerTransport(ledger)
        self.sent: Counter[uuid.UUID] = Counter()
        self.guard = threading.Lock()

    def send(self, events: Sequence[CostEvent]) -> None:
        with self.guard:
            self.sent[events[0].event_id] += 1
        threading.Event().wait(0.01)
        self.inner.send(events)


def test_two_concurrent_flushes_deliver_every_batch_exactly_once(
    ledger: Ledger, make_event: EventFactory, tmp_path: Path
) -> None:
    batches = [[make_event(), make_event()] for _ in range(30)]
    writer = Spool(tmp_path / "spool")
    for batch in batches:
        writer.write(batch)
    transport = _Counting(ledger)
    start = threading.Barrier(2)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def flusher() -> None:
        spool = Spool(tmp_path / "spool")  # its own, as a second process would have
        start.wait(timeout=10)
        try:
            results.append(spool.flush(transport))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flusher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sum(delivered for delivered, _ in results) == 30
    assert [left for _, left in results] == [0, 0]
    assert transport.sent == Counter({b[0].event_id: 1 for b in batches})
    assert writer.pending() == []
    stored = _stored(ledger, batches[0])
    assert stored == [e.event_id for b in batches for e in b]


def test_spool_flush_command_reports_refused_batches_and_requeue_brings_them_back(
    ledger: Ledger,
    api_base: str,
    db_url: str,
    tenant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from service.cli.main import app
    from service.settings import get_settings

    key = create_key(ledger.engine, tenant, ["ingest"], "renderer")
    for var, value in {
        "DATABASE_URL": db_url,
        "RENDERLEDGER_DATA_DIR": str(tmp_path),
        "RENDERLEDGER_RENDER__LEDGER_URL": api_base,
        "RENDERLEDGER_RENDER__LEDGER_API_KEY": key,
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    spool = Spool(tmp_path / "spool")
    ours, foreign = _batch(tenant), _batch(f"o-{uuid.uuid4().hex[:12]}")
    spool.write(ours)
    spool.write(foreign)
    get_settings.cache_clear()
    try:
        flushed = CliRunner().invoke(app, ["spool", "flush"])
        assert flushed.exit_code == 0, flushed.output
        assert "1 batch(es) delivered, 0 left, 1 refused and moved to" in flushed.output
        requeued = CliRunner().invoke(app, ["spool", "requeue"])
        assert requeued.exit_code == 0, requeued.output
        assert "1 batch(es) back in the spool" in requeued.output
    finally:
        get_settings.cache_clear()
    assert _stored(ledger, ours) == [e.event_id for e in ours]
    assert [spool.read(p) for p in spool.pending()] == [foreign]

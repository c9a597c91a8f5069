"""kill -9 the API server in the middle of ingest, start it again: every acknowledged event
is there once, no batch is half-written, the client's retries converge, verify passes."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx

from bench.processes import api_server, free_port
from ingest.sample import unet_event
from ledger import database
from ledger.chain import verify
from ledger.connections import connection
from service.keys import create_key
from tests.conftest import ledger_with_prices


def _batch(tenant: str, n: int) -> list[dict[str, object]]:
    render = uuid.uuid4()
    return [unet_event(tenant, render).model_dump(mode="json") for _ in range(n)]


def test_kill_9_mid_ingest_then_restart_converges(fresh_database: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger_with_prices(engine)
    key = create_key(engine, None, ["admin"])
    port = free_port()
    tenant = "crash"
    batches = [_batch(tenant, 200) for _ in range(40)]
    acknowledged: list[int] = []

    def client() -> None:
        headers = {"authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=5) as c:
            for i, batch in enumerate(batches):
                for _ in range(600):  # bounded retries, same event_ids every time
                    try:
                        if c.post("/v1/events", json=batch).status_code == 200:
                            acknowledged.append(i)
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)

    with api_server(fresh_database, port) as first:
        sender = threading.Thread(target=client)
        sender.start()
        for _ in range(600):
            if len(acknowledged) >= 8:
                break
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    killed_after = len(acknowledged)
    with api_server(fresh_database, port):
        sender.join(timeout=120)
    assert not sender.is_alive()
    assert 8 <= killed_after < len(batches)
    assert acknowledged == list(range(len(batches)))
    with connection(engine) as raw:
        rows = raw.execute(
            "SELECT render_id, count(*), count(DISTINCT event_id) FROM cost_events "
            "WHERE tenant_id = %s GROUP BY render_id",
            (tenant,),
        ).fetchall()
    assert len(rows) == len(batches)
    assert all(n == distinct == 200 for _, n, distinct in rows)  # whole batches, once each
    assert verify(engine).ok
    engine.dispose()

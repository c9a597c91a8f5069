"""Request ids, JSON logs, OpenTelemetry traces and Prometheus multiprocess mode, on a real
``renderledger serve --workers 2`` with a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import structlog

from ingest.sample import unet_event
from ledger.store import Ledger
from service.keys import create_key
from service.observability import configure_logging
from tests.conftest import free_port


@pytest.fixture
def receiver() -> Iterator[list[tuple[str, bytes]]]:
    """An OTLP/HTTP endpoint on loopback: every POST's path and body."""
    got: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            got.append((self.path, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    got.append(("url", f"http://127.0.0.1:{server.server_port}".encode()))
    yield got
    server.shutdown()


def _wait(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        time.sleep(0.2)


def test_request_ids_and_json_lines(api_base: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", stream)
    try:
        given = httpx.get(f"{api_base}/healthz", headers={"x-request-id": "lb-42.a"})
        made = httpx.get(f"{api_base}/healthz", headers={"x-request-id": "no spaces allowed"})
        structlog.contextvars.bind_contextvars(request_id="r-1")
        logging.getLogger("renderledger.any").warning("from the standard library")
        structlog.contextvars.clear_contextvars()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        structlog.reset_defaults()
    assert given.headers["x-request-id"] == "lb-42.a"
    assert len(made.headers["x-request-id"]) == 32  # a fresh one, not the caller's
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [x for x in lines if x.get("event") == "request" and x["path"] == "/healthz"]
    assert {x["request_id"] for x in access} >= {"lb-42.a", made.headers["x-request-id"]}
    assert all(x["status"] == 200 and x["duration_ms"] >= 0 for x in access)
    foreign = next(x for x in lines if x["event"] == "from the standard library")
    assert (foreign["request_id"], foreign["level"]) == ("r-1", "warning")


def test_serve_with_workers_counts_every_worker_and_traces(
    ledger: Ledger, db_url: str, tenant: str, admin_key: str, tmp_path: Path, receiver: Any
) -> None:
    endpoint = receiver[0][1].decode()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "RENDERLEDGER_DATA_DIR": str(tmp_path),
        "RENDERLEDGER_REPORTS__ROLLUP_INTERVAL_S": "1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = ["serve", "--workers", "2", "--port", str(port)]
    command = [sys.executable, "-m", "service.cli.main", *args]
    logs = tmp_path / "serve.log"
    with logs.open("w") as sink:
        proc = subprocess.Popen(command, env=env, stderr=sink, stdout=sink)
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None

        _wait(up, 60, "serve --workers 2 up")
        assert proc.poll() is None, logs.read_text()
        key = create_key(ledger.engine, tenant, ["ingest"])
        for _ in range(20):  # a new connection each: the kernel spreads them over workers
            body = orjson.dumps([unet_event(tenant).model_dump(mode="json") for _ in range(10)])
            sent = httpx.post(
                f"{base}/v1/events",
                content=body,
                headers={"x-api-key": key, "content-type": "application/json"},
                timeout=30,
            )
            assert sent.status_code in (200, 201), sent.text
        admin = {"authorization": f"Bearer {admin_key}"}
        for _ in range(6):
            text = httpx.get(f"{base}/metrics", headers=admin, timeout=30).text
            assert "renderledger_ingested_events_total 200.0" in text, text[-2000:]
        pids = {p.name.rsplit("_", 1)[-1] for p in (tmp_path / "prometheus").glob("*.db")}
        assert len(pids) >= 2  # both workers keep their counts there

        def traced() -> bool:
            bodies = b"".join(b for path, b in receiver[1:] if path == "/v1/traces")
            return b"POST /v1/events" in bodies and b"rollup" in bodies

        _wait(traced, 30, "spans of the API and the rollup job exported")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lines = [json.loads(x) for x in logs.read_text().splitlines() if x.startswith("{")]
    ingest = [x for x in lines if x.get("event") == "request" and x.get("path") == "/v1/events"]
    assert len(ingest) == 20
    assert all(len(x["request_id"]) == 32 and len(x["trace_id"]) == 32 for x in ingest)

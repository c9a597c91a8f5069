"""Real processes for the reliability runs: `renderledger serve` on a loopback port, one-off
`renderledger` commands, the postmaster to kill, and producer clients with their tally."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ingest.client import DeliveryFailed, HttpTransport, Rejected
from ingest.sample import unet_event
from ledger.connections import connection
from ledger.events import CostEvent

SCENARIO_S = 420.0  # no producer sends or resends past this, whatever happens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(port: int, name: str) -> None:
    """Until the server on ``port`` answers its health check; bounded to about 30 s."""
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not come up on port {port}")


@contextmanager
def api_server(url: str, port: int, *, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """The API on 127.0.0.1:port against ``url``, scheduler off; stopped on exit if alive."""
    env = {**os.environ, "DATABASE_URL": url, "RENDERLEDGER_REPORTS__ROLLUP_INTERVAL_S": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, "the API")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def renderledger(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One `renderledger` command as an operator would type it; output kept for the report."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,  # bounded: run() kills the command when it expires
        check=False,
    )


def kill_postmaster(data_dir: Path) -> int:
    """SIGKILL the postmaster named in postmaster.pid (as root it is another user's process,
    not our child, so nothing here reaps it: init does, a little later)."""
    pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    return pid


def batch(tenant: str, n: int) -> list[CostEvent]:
    render, at = uuid.uuid4(), datetime.now(UTC).replace(microsecond=0)
    return [unet_event(tenant, render, quantity=Decimal("2.5"), occurred_at=at) for _ in range(n)]


def tally(
    engine: Any, tenant: str, acked: list[list[CostEvent]], unacked: list[list[CostEvent]]
) -> dict[str, int]:
    """Acknowledged ids against what cost_events holds for the tenant."""
    with connection(engine) as raw:
        stored = {
            str(r[0]): r[1]
            for r in raw.execute(
                "SELECT event_id, count(*) FROM cost_events WHERE tenant_id = %s GROUP BY 1",
                (tenant,),
            )
        }
        renders = {
            str(r[0]): r[1]
            for r in raw.execute(
                "SELECT render_id, count(*) FROM cost_events WHERE tenant_id = %s GROUP BY 1",
                (tenant,),
            )
        }
    ids = {str(e.event_id) for b in acked for e in b}
    every = acked + unacked
    return {
        "acked": len(ids),
        "missing": len(ids - stored.keys()),
        "doubled": sum(n - 1 for n in stored.values() if n > 1),
        # Given up on without an acknowledgement, yet committed: allowed, and reported.
        "unacked_stored": len(stored.keys() - ids),
        "half": sum(renders.get(str(b[0].render_id), 0) not in (0, len(b)) for b in every),
    }


class Fleet:
    """Producer clients on threads, each with the real HTTP transport: a batch that is not
    acknowledged is sent again with the same event ids, as the spool does, until it is."""

    def __init__(self, port: int, key: str, tenant: str, clients: int, events: int) -> None:
        self.tenant, self.events = tenant, events
        self.acked: list[list[CostEvent]] = []
        self.unacked: list[list[CostEvent]] = []
        self.resends = 0
        self.rejected: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + SCENARIO_S
        self._transports = [
            HttpTransport(f"http://127.0.0.1:{port}", api_key=key) for _ in range(clients)
        ]
        self._threads = [
            threading.Thread(target=self._client, args=(t,), daemon=True) for t in self._transports
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop after each client's batch in hand is acknowledged (or the deadline passes)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=max(1.0, self._deadline - time.monotonic()))
        for transport in self._transports:
            transport.close()

    def wait_for_progress(self, timeout: float = 60) -> bool:
        """Until one more batch is acknowledged: ingest flows again after a restart."""
        seen, until = len(self.acked), time.monotonic() + timeout
        while len(self.acked) == seen and time.monotonic() < until:
            time.sleep(0.02)
        return len(self.acked) > seen

    def _client(self, transport: HttpTransport) -> None:
        for _ in range(100_000):  # bounded by count and by the deadline
            if self._stop.is_set() or time.monotonic() > self._deadline:
                return
            events = batch(self.tenant, self.events)
            while time.monotonic() < self._deadline:
                try:
                    transport.send(events)
                except DeliveryFailed:
                    with self._lock:
                        self.resends += 1
                    time.sleep(0.05)
                    continue
                except Rejected as exc:
                    with self._lock:
                        self.rejected.append(str(exc)[:300])
                        self.unacked.append(events)
                    break
                with self._lock:
                    self.acked.append(events)
                break
            else:
                with self._lock:
                    self.unacked.append(events)
            time.sleep(0.02)  # paced: a steady producer, not a flood

"""Starting `renderledger serve` as a real process on a loopback port, and waiting for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def api_server(url: str, port: int, *, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    """The API on 127.0.0.1:port against ``url``, scheduler off; stopped on exit if alive."""
    env = {**os.environ, "DATABASE_URL": url, "RENDERLEDGER_REPORTS__ROLLUP_INTERVAL_S": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.cli",
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
        for _ in range(300):  # bounded: ~30 s to come up
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"the API did not come up on port {port}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)

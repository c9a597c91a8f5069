"""The bounded load of `make reliability`: paced ingest and report reads, loopback only."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from typing import Any

import httpx
import orjson

from bench.processes import api_server, batch, free_port
from reports.jobs import run_rollup

WORKERS = int(os.environ.get("RL_WORKERS", "1"))


def make_template(tenant: str, n: int) -> list[bytes]:
    events = batch(tenant, n)
    text = orjson.dumps([e.model_dump(mode="json") for e in events])
    text = text.replace(str(events[0].render_id).encode(), b"@R@")
    for e in events:
        text = text.replace(str(e.event_id).encode(), b"@E@")
    return text.split(b"@E@")


def fill(parts: list[bytes]) -> bytes:
    body = b"".join(p + str(uuid.uuid4()).encode() for p in parts[:-1]) + parts[-1]
    return body.replace(b"@R@", str(uuid.uuid4()).encode())


async def load(url: str, engine: Any, key: str, seconds: float, rate: float) -> dict[str, Any]:
    port, tenant = free_port(), "load"
    template = make_template(tenant, 1000)
    json_type = {"content-type": "application/json"}
    ingest_lat: list[float] = []
    report_lat: list[float] = []
    errors = 0
    accepted = 0
    busy = os.getloadavg()[0]
    with api_server(url, port, workers=WORKERS):
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"authorization": f"Bearer {key}"},
        ) as c:
            deadline = time.perf_counter() + seconds

            async def ingest() -> None:
                nonlocal errors, accepted
                body = fill(template)
                t0 = time.perf_counter()
                r = await c.post("/v1/events", content=body, headers=json_type)
                ingest_lat.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    accepted += r.json()["accepted"]
                else:
                    errors += 1

            async def read() -> None:
                nonlocal errors
                t0 = time.perf_counter()
                r = await c.get(
                    f"/v1/tenants/{tenant}/report", params={"group_by": "use_case,stage"}
                )
                report_lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

            # The tenant exists before the first read; bodies are a template with fresh ids,
            # so building them does not stall the client's event loop and skew its timings.
            await c.post("/v1/events", json=[e.model_dump(mode="json") for e in batch(tenant, 1)])
            tasks: set[asyncio.Task[None]] = set()
            started = time.perf_counter()
            tick = 0
            while time.perf_counter() < deadline:  # bounded by time; paced, not flooded
                tasks.add(asyncio.create_task(ingest()))
                if tick % 2 == 0:
                    tasks.add(asyncio.create_task(read()))
                tick += 1
                await asyncio.sleep(1 / rate)
                tasks = {t for t in tasks if not t.done()}
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - started
            run_rollup(engine)

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "seconds": elapsed,
        "events_per_s": accepted / elapsed,
        "errors": errors,
        "ingest": (len(ingest_lat), pct(ingest_lat, 0.5), pct(ingest_lat, 0.99)),
        "report": (len(report_lat), pct(report_lat, 0.5), pct(report_lat, 0.99)),
        "median_ingest": statistics.median(ingest_lat) * 1000,
        "load_average": (busy, os.getloadavg()[0]),
    }

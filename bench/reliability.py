"""Crash and load scripts for `make reliability`; results go to RELIABILITY.md.

1. kill -9 the API server again and again while two clients ingest with retries;
2. kill -9 the PostgreSQL backend in the middle of a COPY (the server then crash-recovers);
3. kill -9 a renderer between render and delivery, then `spool flush`;
4. a bounded load: mixed ingest and report reads against the local server, loopback only.
Each ends by checking: every acknowledged event present exactly once, no batch half-written,
`verify` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from bench.processes import api_server, free_port
from bench.report import write_section
from ledger import database
from ledger.chain import verify
from ledger.cli import DEFAULT_PRICES
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.keys import create_key
from ledger.prices import load_price_book_file
from ledger.sample import unet_event
from ledger.store import Ledger
from reports.jobs import run_rollup


def batch(tenant: str, n: int) -> list[CostEvent]:
    render, at = uuid.uuid4(), datetime.now(UTC).replace(microsecond=0)
    return [unet_event(tenant, render, quantity=Decimal("2.5"), occurred_at=at) for _ in range(n)]


def check(engine: Any, tenant: str, sent: list[list[CostEvent]]) -> str:
    with connection(engine) as raw:
        rows = dict(
            (str(r[0]), (r[1], r[2]))
            for r in raw.execute(
                "SELECT render_id, count(*), count(DISTINCT event_id) FROM cost_events "
                "WHERE tenant_id = %s GROUP BY render_id",
                (tenant,),
            ).fetchall()
        )
    whole = all(rows.get(str(b[0].render_id)) == (len(b), len(b)) for b in sent)
    ok = verify(engine).ok and whole and len(rows) == len(sent)
    return "yes" if ok else f"NO ({len(rows)} of {len(sent)} batches whole={whole})"


def api_kills(url: str, engine: Any, key: str, kills: int) -> dict[str, Any]:
    port, tenant = free_port(), "kill-api"
    batches = [batch(tenant, 500) for _ in range(40 * kills)]
    bodies = [[e.model_dump(mode="json") for e in b] for b in batches]
    acked: set[int] = set()
    retries = 0

    def client(share: list[int]) -> None:
        nonlocal retries
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=5,
            headers={"authorization": f"Bearer {key}"},
        ) as c:
            for i in share:
                for _ in range(2000):  # bounded
                    try:
                        if c.post("/v1/events", json=bodies[i]).status_code == 200:
                            acked.add(i)
                            break
                    except httpx.HTTPError:
                        pass
                    retries += 1
                    time.sleep(0.02)

    threads = [
        threading.Thread(target=client, args=(list(range(k, len(batches), 2)),)) for k in range(2)
    ]
    started = time.perf_counter()
    for n in range(kills + 1):
        with api_server(url, port) as proc:
            if n == 0:
                for t in threads:
                    t.start()
            if n < kills:
                target = (n + 1) * len(batches) // (kills + 1)
                for _ in range(3000):
                    if len(acked) >= target:
                        break
                    time.sleep(0.01)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            else:
                for t in threads:
                    t.join(timeout=300)
    return {
        "scenario": f"kill -9 the API server {kills} times during ingest (2 clients)",
        "batches": f"{len(acked)}/{len(batches)} acknowledged, {retries} retries",
        "seconds": time.perf_counter() - started,
        "exactly once, whole batches, verify": check(engine, tenant, batches),
    }


def pg_kill(url: str, engine: Any) -> dict[str, Any]:
    ledger, tenant = Ledger(engine), "kill-pg"
    batches = [batch(tenant, 10_000) for _ in range(12)]
    killed: list[int] = []

    def killer() -> None:
        with psycopg.connect(database.libpq_url(url), autocommit=True) as su:
            for _ in range(2000):  # bounded: find the backend running our COPY
                row = su.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query LIKE 'COPY cost_events%%' "
                    "AND state = 'active'"
                ).fetchone()
                if row:
                    os.kill(row[0], signal.SIGKILL)
                    killed.append(row[0])
                    return
                time.sleep(0.001)

    started = time.perf_counter()
    failures = 0
    for i, b in enumerate(batches):
        if i == 4:
            threading.Thread(target=killer).start()
        for _ in range(200):  # bounded retries while the server recovers
            try:
                ledger.append(b)
                break
            except Exception:  # any failure at all: retry with the same ids
                failures += 1
                time.sleep(0.1)
    return {
        "scenario": "kill -9 the PostgreSQL backend in the middle of a 10,000-event COPY",
        "batches": f"{len(batches)} appended; {failures} failed attempts retried; "
        f"backend killed: {'yes' if killed else 'no'}",
        "seconds": time.perf_counter() - started,
        "exactly once, whole batches, verify": check(engine, tenant, batches),
    }


def spool_kill(url: str, engine: Any, tmp: Path) -> dict[str, Any]:
    data = tmp / "renderer"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RENDERLEDGER_DATA_DIR": str(data),
        "RENDERLEDGER_RENDER__LEDGER_URL": f"http://127.0.0.1:{free_port()}",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.cli",
            "render",
            "--tenant",
            "kill-spool",
            "--prompt",
            "a chair",
            "--n",
            "50",
            "--steps",
            "4",
            "--out",
            str(tmp),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spool = data / "spool"
    for _ in range(1200):  # bounded: until a few renders are spooled
        if len(list(spool.glob("*.ndjson"))) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    files = sorted(spool.glob("*.ndjson"))
    spooled = sum(len([x for x in f.read_bytes().splitlines() if x]) for f in files)
    env.pop("RENDERLEDGER_RENDER__LEDGER_URL")
    flush = [sys.executable, "-m", "ledger.cli", "spool", "flush"]
    subprocess.run(flush, env=env, check=True, capture_output=True)
    subprocess.run(flush, env=env, check=True, capture_output=True)  # again: nothing doubles
    with connection(engine) as raw:
        (stored,) = raw.execute(
            "SELECT count(*) FROM cost_events WHERE tenant_id = 'kill-spool'"
        ).fetchone() or (0,)
    return {
        "scenario": "kill -9 a renderer between render and delivery, then `spool flush`",
        "batches": f"{len(files)} renders spooled ({spooled} events), {stored} in the ledger",
        "seconds": 0.0,
        "exactly once, whole batches, verify": "yes"
        if stored == spooled and verify(engine).ok
        else "NO",
    }


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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--load-seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=8, help="ingest batches per second")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    with (
        database.throwaway_server("renderledger-reliability-") as url,
        tempfile.TemporaryDirectory(prefix="renderledger-renderer-") as tmp,
    ):
        database.migrate(url)
        engine = database.make_engine(url, app_role="renderledger_app")
        Ledger(engine).load_prices(load_price_book_file(DEFAULT_PRICES))
        key = create_key(engine, None, ["admin"], "reliability")
        results = [api_kills(url, engine, key, args.kills)]
        results.append(pg_kill(url, engine))
        results.append(spool_kill(url, engine, Path(tmp)))
        loaded = asyncio.run(load(url, engine, key, args.load_seconds, args.rate))
        engine.dispose()
    rows = [
        "| scenario | what happened | seconds | exactly once, whole batches, verify |",
        "|---|---|---:|---|",
    ]
    rows += [
        f"| {r['scenario']} | {r['batches']} | {r['seconds']:.1f} | "
        f"{r['exactly once, whole batches, verify']} |"
        for r in results
    ]
    ing, rep = loaded["ingest"], loaded["report"]
    load_rows = [
        "| measure | value | target |",
        "|---|---:|---:|",
        f"| duration | {loaded['seconds']:.0f} s | 300 s |",
        f"| sustained ingest | {loaded['events_per_s']:,.0f} events/s "
        f"({args.rate:g} batches of 1,000 a second offered) | |",
        f"| ingest, 1,000-event batches: requests, p50, p99 | {ing[0]:,}, {ing[1]:.1f} ms, "
        f"{ing[2]:.1f} ms | p99 ≤ 100 ms |",
        f"| report reads: requests, p50, p99 | {rep[0]:,}, {rep[1]:.1f} ms, {rep[2]:.1f} ms | |",
        f"| errors | {loaded['errors']} | 0 |",
    ]
    text = (
        "\n".join(rows)
        + "\n\n### Bounded load (one API process, loopback)\n\n"
        + "\n".join(load_rows)
    )
    print(text)
    if args.write:
        write_section(
            args.write,
            "reliability",
            "## Crash safety and load (issue 7)\n\n" + text,
            "make reliability",
        )


if __name__ == "__main__":
    main()

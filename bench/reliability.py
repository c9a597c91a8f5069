"""Crash and load scripts for `make reliability`; results go to RELIABILITY.md.

1. kill -9 the API server again and again while producer clients ingest; after each kill
   `renderledger verify`, then the API is started again;
2. kill -9 the PostgreSQL postmaster again and again during the same ingest; after each kill
   `renderledger db start` and `renderledger verify`, while the clients keep resending;
3. kill -9 a PostgreSQL backend in the middle of a COPY (the server then crash-recovers);
4. kill -9 a renderer between render and delivery, then `spool flush`;
5. a bounded load: mixed ingest and report reads against the local server, loopback only.
Each ends by comparing the acknowledged event ids with cost_events: none missing, none
doubled, no batch half-written; and `verify` passes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.load import load
from bench.processes import (
    Fleet,
    api_server,
    batch,
    free_port,
    kill_postmaster,
    renderledger,
    tally,
)
from bench.report import write_section
from ledger import database
from ledger.chain import verify
from ledger.events import CostEvent
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from service.cli.main import DEFAULT_PRICES
from service.keys import create_key

# Per batch from the kill scenarios' producers: small, so the log (and each verify after a
# kill) stays small while requests, hence kills with one in flight, stay frequent.
EVENTS = 25


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def verified(env: dict[str, str], failures: list[str]) -> bool:
    done = renderledger(["verify"], env)
    if done.returncode != 0:
        failures.append(f"verify exit {done.returncode}: {(done.stdout + done.stderr)[-400:]}")
    return done.returncode == 0


def result(
    name: str,
    what: str,
    counts: dict[str, int],
    checks: str,
    seconds: float,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    for note in notes or []:
        say(f"{name}: {note}")
    return {
        "scenario": name,
        "what": what,
        **counts,
        "verify": checks,
        "seconds": seconds,
        "notes": notes or [],
    }


def api_kills(
    url: str, env: dict[str, str], engine: Any, key: str, kills: int, clients: int
) -> dict[str, Any]:
    port, rng, failures = free_port(), random.Random(7), list[str]()
    fleet = Fleet(port, key, "kill-api", clients, events=EVENTS)
    ok = 0
    started = time.perf_counter()
    for n in range(kills + 1):
        with api_server(url, port) as proc:
            if n == 0:
                fleet.start()
            fleet.wait_for_progress()
            if n < kills:
                time.sleep(rng.uniform(0.2, 1.0))  # mid-stream: every client has a batch out
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                ok += verified(env, failures)
                say(f"API kill {n + 1}/{kills}: {len(fleet.acked)} batches acknowledged")
            else:
                fleet.stop()
    return result(
        f"kill -9 the API server {kills} times during ingest ({clients} clients)",
        _sent(fleet),
        tally(engine, fleet.tenant, fleet.acked, fleet.unacked),
        f"{ok}/{kills} after each kill",
        time.perf_counter() - started,
        failures + fleet.rejected,
    )


def _sent(fleet: Fleet) -> str:
    return (
        f"{len(fleet.acked):,} batches acknowledged, {fleet.resends:,} resends, "
        f"{len(fleet.rejected)} rejected, {len(fleet.unacked)} given up"
    )


def postmaster_kills(
    url: str, data_dir: Path, env: dict[str, str], engine: Any, key: str, kills: int, clients: int
) -> dict[str, Any]:
    port, rng, failures = free_port(), random.Random(11), list[str]()
    fleet = Fleet(port, key, "kill-postmaster", clients, events=EVENTS)
    ok = started_ok = waited = 0
    start_s: list[float] = []
    started = time.perf_counter()
    with api_server(url, port):
        fleet.start()
        for n in range(kills):
            fleet.wait_for_progress()
            time.sleep(rng.uniform(0.2, 1.0))
            pid = kill_postmaster(data_dir)
            t0 = time.perf_counter()
            up = renderledger(["db", "start"], env)
            start_s.append(time.perf_counter() - t0)
            waited += "waiting for" in up.stderr
            if up.returncode == 0 and "".join(up.stdout.split()) == url:
                started_ok += 1
            else:
                failures.append(f"db start exit {up.returncode}: {up.stderr[-600:]}")
                database.start_embedded(data_dir, wait_s=120)  # so the run can go on
            ok += verified(env, failures)
            said = " / ".join(up.stderr.strip().splitlines()[:2])[:200]
            say(f"postmaster kill {n + 1}/{kills} (pid {pid}): db start {start_s[-1]:.1f} s {said}")
        fleet.wait_for_progress()
        fleet.stop()
    return result(
        f"kill -9 the PostgreSQL postmaster {kills} times during ingest ({clients} clients)",
        f"`db start` {started_ok}/{kills} ok (median {statistics.median(start_s):.1f} s, "
        f"max {max(start_s):.1f} s; {waited} said what they waited for); {_sent(fleet)}",
        tally(engine, fleet.tenant, fleet.acked, fleet.unacked),
        f"{ok}/{kills} after each kill",
        time.perf_counter() - started,
        failures + fleet.rejected,
    )


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
    acked: list[list[CostEvent]] = []
    for i, b in enumerate(batches):
        if i == 4:
            threading.Thread(target=killer).start()
        for _ in range(200):  # bounded retries while the server recovers
            try:
                ledger.append(b)
                acked.append(b)
                break
            except Exception:  # any failure at all: retry with the same ids
                failures += 1
                time.sleep(0.1)
    return result(
        "kill -9 the PostgreSQL backend in the middle of a 10,000-event COPY",
        f"{len(acked)} of {len(batches)} batches appended; {failures} failed attempts retried; "
        f"backend killed: {'yes' if killed else 'no'}",
        tally(engine, tenant, acked, [b for b in batches if b not in acked]),
        "ok" if verify(engine).ok else "FAILED",
        time.perf_counter() - started,
    )


def spool_kill(url: str, engine: Any, tmp: Path) -> dict[str, Any]:
    data = tmp / "renderer"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RENDERLEDGER_DATA_DIR": str(data),
        "RENDERLEDGER_RENDER__LEDGER_URL": f"http://127.0.0.1:{free_port()}",
    }
    render = ["render", "--tenant", "kill-spool", "--prompt", "a chair", "--n", "50"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", *render, "--steps", "4", "--out", str(tmp)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.perf_counter()
    spool = data / "spool"
    for _ in range(1200):  # bounded: until a few renders are spooled
        if len(list(spool.glob("*.ndjson"))) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    files = sorted(spool.glob("*.ndjson"))
    spooled = [
        [CostEvent.model_validate_json(x) for x in f.read_bytes().splitlines() if x] for f in files
    ]
    env.pop("RENDERLEDGER_RENDER__LEDGER_URL")
    flushed = [renderledger(["spool", "flush"], env).returncode for _ in range(2)]  # twice
    return result(
        "kill -9 a renderer between render and delivery, then `spool flush` twice",
        f"{len(files)} renders spooled ({sum(map(len, spooled))} events); flush exit {flushed}",
        tally(engine, "kill-spool", spooled, []),
        "ok" if verify(engine).ok else "FAILED",
        time.perf_counter() - started,
    )


def run(url: str, data_dir: Path, tmp: Path, args: argparse.Namespace) -> tuple[list[Any], Any]:
    database.migrate(url)
    engine = database.make_engine(url, app_role="renderledger_app")
    try:
        Ledger(engine).load_prices(load_price_book_file(DEFAULT_PRICES))
        key = create_key(engine, None, ["admin"], "reliability")
        # The commands find the server as an operator's would: by the data dir, no URL.
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["RENDERLEDGER_DATA_DIR"] = str(data_dir)
        results = [api_kills(url, env, engine, key, args.api_kills, args.clients)]
        say(f"done: {results[-1]['what']}")
        results.append(
            postmaster_kills(url, data_dir, env, engine, key, args.postmaster_kills, args.clients)
        )
        say(f"done: {results[-1]['what']}")
        results.append(pg_kill(url, engine))
        results.append(spool_kill(url, engine, tmp))
        say("kill scenarios done; the bounded load follows")
        return results, asyncio.run(load(url, engine, key, args.load_seconds, args.rate))
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api-kills", type=int, default=20)
    parser.add_argument("--postmaster-kills", type=int, default=10)
    parser.add_argument("--clients", type=int, default=3, help="concurrent producers")
    parser.add_argument("--load-seconds", type=float, default=180)
    parser.add_argument("--rate", type=float, default=8, help="ingest batches per second")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    began, start_load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(
        prefix="renderledger-reliability-", ignore_cleanup_errors=True
    ) as tmp:
        data_dir = Path(tmp) / "data"
        try:
            url = database.start_embedded(data_dir)
            results, loaded = run(url, data_dir, Path(tmp), args)
        finally:
            database.stop_embedded(data_dir)
    rows = [
        "| scenario | what happened | acknowledged events | missing | doubled | "
        "half-written batches | stored, never acknowledged | verify | seconds |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    rows += [
        f"| {r['scenario']} | {r['what']} | {r['acked']:,} | {r['missing']} | {r['doubled']} | "
        f"{r['half']} | {r['unacked_stored']} | {r['verify']} | {r['seconds']:.0f} |"
        for r in results
    ]
    ing, rep = loaded["ingest"], loaded["report"]
    load_rows = [
        "| measure | value | target |",
        "|---|---:|---:|",
        f"| duration | {loaded['seconds']:.0f} s | {args.load_seconds:.0f} s |",
        f"| sustained ingest | {loaded['events_per_s']:,.0f} events/s "
        f"({args.rate:g} batches of 1,000 a second offered) | |",
        f"| ingest, 1,000-event batches: requests, p50, p99 | {ing[0]:,}, {ing[1]:.1f} ms, "
        f"{ing[2]:.1f} ms | p99 ≤ 100 ms |",
        f"| report reads: requests, p50, p99 | {rep[0]:,}, {rep[1]:.1f} ms, {rep[2]:.1f} ms | |",
        f"| errors | {loaded['errors']} | 0 |",
        # The machine is shared: other people's test runs weigh on the latencies.
        "| machine load average (1 min), before and after | "
        f"{loaded['load_average'][0]:.1f}, {loaded['load_average'][1]:.1f} | ≤ {os.cpu_count()} |",
    ]
    notes = [f"- {n}" for r in results for n in r["notes"]]
    text = (
        "\n".join(rows)
        + "\n\nAfter each API kill: `renderledger verify`, then the API is started again. After "
        "each postmaster kill: `renderledger db start` at once (the dead postmaster still a "
        "zombie), then `renderledger verify` while the clients keep resending. A client sends "
        f"{EVENTS} events per batch with fresh ids and resends an unacknowledged batch with the "
        "same ids (`ingest.client.HttpTransport`); missing and doubled compare the acknowledged "
        "ids with `cost_events`."
        + ("\n\nFailures seen:\n\n" + "\n".join(notes) if notes else "")
        + "\n\n### Bounded load (one API process, loopback)\n\n"
        + "\n".join(load_rows)
        + f"\n\nWhole run: {(time.perf_counter() - began) / 60:.1f} minutes, machine load average "
        f"{start_load:.1f} at its start (`python -m bench.reliability {' '.join(sys.argv[1:])}`)."
    )
    print(text)
    if args.write:
        write_section(
            args.write,
            "reliability",
            "## Crash safety and load (issues 7 and 11)\n\n" + text,
            "make reliability",
        )


if __name__ == "__main__":
    main()

"""Rollups at scale: a full rebuild over N events (10 million by default), an incremental
update for 100,000 new ones, the same aggregation as SQL GROUP BY in PostgreSQL side by
side, and the report endpoint's latency under a bounded local load.

The events are generated inside PostgreSQL (generate_series), nine per render as the
renderer emits them, over 1,000 tenants, a render a second from 1 October 2026 (10 million
events cover 12.9 days); they bypass ``append`` because what
is measured here is the read path, not ingest (see append_throughput.py for that).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import Engine

from bench.processes import api_server, free_port
from bench.report import write_section
from ledger import database
from ledger.connections import connection
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.jobs import run_rollup
from reports.source import read_events, read_events_adbc
from service.cli.main import DEFAULT_PRICES
from service.keys import create_key

TENANTS = 1000
_GENERATE = """
INSERT INTO cost_events (seq, event_id, tenant_id, use_case, render_id, stage, sku, quantity,
    occurred_at, cache, baseline_quantity, outcome, reverses, attributes, price_version,
    unit_price_nanos, cost_nanos, baseline_cost_nanos, currency, content_hash, block_id)
SELECT g, gen_random_uuid(), 't' || lpad((r % {tenants})::text, 4, '0'),
       (ARRAY['ecommerce', 'social', 'game_assets', 'architecture'])[1 + (r / 7) % 4],
       md5(r::text)::uuid, s.stage, s.sku, s.q * (1 + (r % 7) / 100.0),
       timestamptz '2026-10-01' + (r % 2592000) * interval '1 second',
       CASE WHEN x.k = 2 THEN CASE WHEN r % 10 < 8 THEN 'hit' ELSE 'miss' END END,
       CASE WHEN x.k = 2 THEN s.q END,
       CASE WHEN x.k = 8 THEN CASE WHEN r % 33 = 0 THEN 'failed' ELSE 'delivered' END END,
       NULL,
       CASE WHEN x.k = 8 THEN jsonb_build_object('latency_ms', 1800 + r % 900, 'gpu_type', 'h100')
            ELSE '{{}}'::jsonb END,
       1, s.price, round(s.q * (1 + (r % 7) / 100.0) * s.price)::bigint,
       CASE WHEN x.k = 2 THEN round(s.q * s.price)::bigint END, 'USD', '\\x00'::bytea, {block}
FROM generate_series({lo}, {hi}) AS g,
     LATERAL (SELECT (g - 1) / 9 AS r, (g - 1) % 9 AS k) AS x,
     LATERAL (SELECT * FROM (VALUES
        (0, 'caption_llm', 'llm.gpt-4o-mini.input_token', 60.0, 150),
        (1, 'caption_llm', 'llm.gpt-4o-mini.output_token', 120.0, 600),
        (2, 'text_encoder', 'gpu.h100.second', 0.02, 1100000),
        (3, 'unet', 'gpu.h100.second', 2.6, 1100000),
        (4, 'vae_decode', 'gpu.h100.second', 0.15, 1100000),
        (5, 'postprocess', 'cpu.vcpu.second', 0.05, 12400),
        (6, 'storage', 's3.put_request', 1, 5000),
        (7, 'storage', 's3.standard.gb_month', 0.0012, 23000000),
        (8, 'render', 'render.image', 1, 0)) AS v(k, stage, sku, q, price)
        WHERE v.k = x.k) AS s
"""
_KEYS = """
INSERT INTO event_keys (tenant_id, event_id, content_hash, block_id, reverses, seq)
SELECT tenant_id, event_id, content_hash, block_id, reverses, seq FROM cost_events
WHERE seq BETWEEN %s AND %s
"""
_OWNERS = """
INSERT INTO render_owners (render_id, tenant_id, use_case)
SELECT DISTINCT ON (render_id) render_id, tenant_id, use_case FROM cost_events
WHERE seq BETWEEN %s AND %s ORDER BY render_id, seq
ON CONFLICT (render_id) DO NOTHING
"""
_SQL_DAILY = """
CREATE TEMP TABLE sql_daily AS
SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, tenant_id, use_case, stage, sku,
       coalesce(outcome, '') AS outcome, count(*) AS events, sum(quantity) AS quantity,
       sum(cost_nanos) AS cost_nanos, sum(coalesce(baseline_cost_nanos, cost_nanos)) AS baseline,
       count(*) FILTER (WHERE cache = 'hit') AS hits, count(cache) AS lookups
FROM cost_events GROUP BY 1, 2, 3, 4, 5, 6
"""
_SQL_RENDERS = """
CREATE TEMP TABLE sql_renders AS
SELECT render_id, min(tenant_id) AS tenant_id, sum(cost_nanos) AS total,
       sum(cost_nanos) FILTER (WHERE stage = 'unet') AS unet,
       max(outcome) AS outcome, max((attributes->>'latency_ms')::float8) AS latency_ms
FROM cost_events GROUP BY render_id
"""


def generate(
    owner: str, lo: int, hi: int, block: int, tenants: int = TENANTS, *, settle: bool = True
) -> None:
    """Events ``lo..hi`` as block ``block``; ``settle``: then vacuum, analyze and checkpoint
    (and register new tenants), so what is measured next does not pay for the generation."""
    with psycopg.connect(database.libpq_url(owner), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        step = 2_000_000
        for start in range(lo, hi + 1, step):
            end = min(start + step - 1, hi)
            conn.execute(_GENERATE.format(lo=start, hi=end, block=block, tenants=tenants))
            # What the append writes beside each event: its key, and each new render's owner.
            conn.execute(_KEYS, (start, end))
            conn.execute(_OWNERS, (start, end))
            print(f"  generated up to seq {end:,}", file=sys.stderr)
        conn.execute(
            "INSERT INTO blocks (block_id, prev_hash, hash, first_seq, last_seq, event_count) "
            "VALUES (%s, '\\x00', '\\x00', %s, %s, %s)",
            (block, lo, hi, hi - lo + 1),
        )
        if not settle:
            return
        conn.execute(
            "INSERT INTO tenants SELECT DISTINCT tenant_id FROM cost_events ON CONFLICT DO NOTHING"
        )
        conn.execute("VACUUM ANALYZE cost_events, event_keys, render_owners")
        # The generator's gigabytes of WAL are flushed here, not during what is measured next.
        conn.execute("CHECKPOINT")


@contextmanager
def generated_ledger(
    n: int, tenants: int = TENANTS, prefix: str = "renderledger-bench-"
) -> Iterator[tuple[str, Engine, float]]:
    """A throwaway migrated server with the default prices and ``n`` generated events: its
    URL, an engine as the application role, and the seconds the generation took."""
    with database.throwaway_server(prefix) as url:
        database.migrate(url)
        engine = database.make_engine(url, app_role="renderledger_app")
        Ledger(engine).load_prices(load_price_book_file(DEFAULT_PRICES))
        print(f"generating {n:,} events over {tenants:,} tenants in PostgreSQL…", file=sys.stderr)
        t0 = time.perf_counter()
        generate(url, 1, n, 1, tenants)
        try:
            yield url, engine, time.perf_counter() - t0
        finally:
            engine.dispose()


def sql_side_by_side(owner: str) -> tuple[float, float]:
    with psycopg.connect(database.libpq_url(owner)) as conn:
        t0 = time.perf_counter()
        conn.execute(_SQL_DAILY)
        t1 = time.perf_counter()
        conn.execute(_SQL_RENDERS)
        t2 = time.perf_counter()
        conn.rollback()
    return t1 - t0, t2 - t1


def report_latency(
    url: str, requests: int, clients: int, extra: dict[str, str] | None = None
) -> list[float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    engine = database.make_engine(url)
    auth = {"authorization": f"Bearer {create_key(engine, None, ['admin'], 'bench')}"}
    engine.dispose()
    latencies: list[float] = []

    def run(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=10, headers=auth) as client:
            for _ in range(requests // clients):
                tenant = f"t{rng.randrange(TENANTS):04d}"
                params = {"from": "2026-10-01", "to": "2026-11-01", "group_by": "use_case,stage"}
                params |= extra or {}
                t0 = time.perf_counter()
                r = client.get(f"/v1/tenants/{tenant}/report", params=params)
                latencies.append(time.perf_counter() - t0)
                r.raise_for_status()

    with api_server(url, port):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return sorted(latencies)


def _phases(phases: dict[str, float]) -> str:
    """A job's seconds by phase, as a table cell."""
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--incremental", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=2_000_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--scatter-runs", type=int, default=50)
    parser.add_argument("--scatter-events", type=int, default=10_008)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    n = args.events - args.events % 9
    with generated_ledger(n, prefix="renderledger-rollup-") as (url, engine, gen_s):
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("rebuild…", file=sys.stderr)
        rebuild = run_rollup(engine, rebuild=True, chunk_events=args.chunk)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("read paths…", file=sys.stderr)
        sample = min(n, 1_000_000)
        t0 = time.perf_counter()
        with connection(engine) as raw:
            read_events(raw, 1, sample)
        csv_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        read_events_adbc(database.libpq_url(url), 1, sample, None)
        adbc_s = time.perf_counter() - t0
        print("SQL GROUP BY…", file=sys.stderr)
        sql_daily_s, sql_renders_s = sql_side_by_side(url)
        # New events continue the log; a third of them are late events of renders already rolled up.
        generate(url, n + 1, n + args.incremental, 2)
        incremental = run_rollup(engine, chunk_events=args.chunk)
        print("report load…", file=sys.stderr)
        lat = report_latency(url, args.requests, clients=2)
        compared = report_latency(url, args.requests, clients=2, extra={"compare": "previous"})
        # Incremental runs append rows in time order, interleaving tenants: the layout a
        # rebuild left degrades run by run. Measured again after that many runs.
        print(f"{args.scatter_runs} incremental runs…", file=sys.stderr)
        lo = n + args.incremental + 1
        runs: list[float] = []
        for i in range(args.scatter_runs):
            generate(url, lo, lo + args.scatter_events - 1, 3 + i, settle=False)
            runs.append(run_rollup(engine, chunk_events=args.chunk).seconds)
            lo += args.scatter_events
        scattered = report_latency(url, args.requests, clients=2)
    load = os.getloadavg()

    def p(q: float, values: list[float] | None = None) -> float:
        values = lat if values is None else values
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    table = "\n".join(
        [
            "| measure | value | target |",
            "|---|---:|---:|",
            f"| events in the ledger | {n:,} ({gen_s:.0f} s to generate in SQL) | |",
            "| full rebuild, Polars (ADBC read, aggregate, COPY write) "
            f"| {rebuild.seconds:.1f} s ({rebuild.events / rebuild.seconds:,.0f} events/s) "
            "| ≤ 30 s |",
            f"| peak memory of the rebuilding process (max RSS; {rss_before / 1024:.0f} MiB "
            f"before) | {peak_mb:,.0f} MiB | |",
            "| same daily aggregation as SQL GROUP BY in PostgreSQL (no write-back) "
            f"| {sql_daily_s:.1f} s | |",
            f"| reading {sample:,} events into Polars: COPY to CSV (psycopg) / ADBC "
            f"| {csv_s:.2f} s / {adbc_s:.2f} s | |",
            "| same per-render aggregation as SQL GROUP BY (no write-back) "
            f"| {sql_renders_s:.1f} s | |",
            f"| incremental update, {incremental.events:,} new events "
            f"| {incremental.seconds:.2f} s ({_phases(incremental.phases)}) | ≤ 0.5 s |",
            f"| report endpoint, {len(lat):,} requests from 2 local clients: p50 / p99 | "
            f"{p(0.5):.1f} ms / {p(0.99):.1f} ms | p99 ≤ 10 ms |",
            "| the same with `compare=previous` (the period before, a second pass): p50 / p99 "
            f"| {p(0.5, compared):.1f} ms / {p(0.99, compared):.1f} ms | |",
            f"| {args.scatter_runs} more incremental runs of {args.scatter_events:,} events: "
            f"median / slowest | {statistics.median(runs):.2f} s / {max(runs):.2f} s | |",
            "| report endpoint after them (rows scattered by the runs): p50 / p99 "
            f"| {p(0.5, scattered):.1f} ms / {p(0.99, scattered):.1f} ms | p99 ≤ 10 ms |",
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Rollups and reports (issue 4)\n\n"
            f"{n:,} generated events (nine per render, {TENANTS:,} tenants, a render a second "
            "from 1 October 2026), rebuilt from PostgreSQL alone in one transaction (the rows "
            "streamed in chunks and written while the next is read; incremental runs in "
            f"{args.chunk:,}-event chunks, each one transaction with its checkpoint). The SQL rows "
            "compute the same aggregates inside PostgreSQL without writing them back, for "
            "comparison. Report requests: random tenants, `group_by=use_case,stage`, one month. "
            f"Load average (1/5/15 min) at the end: {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} on {os.cpu_count()} cores.\n\n" + table
        )
        write_section(args.write, "rollup", body, "make bench")


if __name__ == "__main__":
    main()

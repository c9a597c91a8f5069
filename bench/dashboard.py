"""The dashboard's tenant page over a large tenant: N events (1 million by default) of one
tenant, generated in PostgreSQL as ``bench.rollup_rebuild`` does (nine per render, a render
every ~2.6 s over October 2026), rolled up, then the page for the whole month requested
through a real ``renderledger serve`` with a signed-in cookie. The figure is the server's
own time for the page (its ``Server-Timing`` header: the queries and the HTML), and the
client's round trip beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx

from bench import rollup_rebuild
from bench.processes import api_server, free_port
from bench.report import write_section
from bench.rollup_rebuild import generated_ledger
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.jobs import run_rollup
from service.cli.main import DEFAULT_PRICES
from service.keys import create_key

TARGET_MS = 300.0
TENANT = "t0000"  # the generator's first tenant; with one tenant, every event is its
SPACING_S = 23  # a render every 23 s: 111,111 renders (a million events) fill October
_SECOND = "(r % 2592000) * interval '1 second'"
_START = "timestamptz '2026-10-01'"


def spread_over_the_month(previous: bool) -> None:
    """The generator puts a render a second from 1 October; a page of one month should see
    a month, so its renders are spaced out (the same SQL, another clock). With ``previous``
    September holds as many, so the tiles' comparison with the period before is a full
    pass too, as on a tenant's real page."""
    assert _SECOND in rollup_rebuild._GENERATE
    assert _START in rollup_rebuild._GENERATE
    days = 61 if previous else 30
    spaced = f"((r * {SPACING_S}) % {days * 86400}) * interval '1 second'"
    start = "timestamptz '2026-09-01'" if previous else _START
    rollup_rebuild._GENERATE = rollup_rebuild._GENERATE.replace(_SECOND, spaced).replace(
        _START, start
    )


def _server_ms(response: httpx.Response) -> float:
    timing = response.headers["server-timing"]  # "app;dur=12.3"
    return float(timing.split("dur=")[1])


def measure(base: str, key: str, paths: list[str]) -> tuple[list[float], list[float]]:
    """(server ms, round-trip ms) of a GET of each path, signed in as ``key``."""
    server, trip = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        login = client.post(
            "/dashboard/login",
            content=f"api_key={key}&next=/dashboard",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert login.status_code == 303, login.text
        client.get("/dashboard", follow_redirects=True).raise_for_status()  # templates, pool
        for path in paths:
            t0 = time.perf_counter()
            r = client.get(path)
            trip.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            assert 'class="mark"' in r.text
            server.append(_server_ms(r))
    return sorted(server), sorted(trip)


def first_views(page: str, n: int) -> list[str]:
    """``n`` pages never viewed before (each a day longer, all of October in each), so none
    is answered from the rows a view keeps: what the first view after a rollup costs."""
    return [f"{page}?from=2026-10-01&to={date(2026, 11, 1) + timedelta(i)}" for i in range(n)]


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument(
        "--no-previous",
        dest="previous",
        action="store_false",
        help="leave September empty (the period before then costs nothing to read)",
    )
    args = parser.parse_args()
    n = args.events - args.events % 9
    spread_over_the_month(args.previous)
    total = n * 61 // 30 if args.previous else n
    total -= total % 9
    generated = generated_ledger(total, tenants=1, prefix="renderledger-dashboard-")
    with generated as (url, engine, gen_s):
        ledger = Ledger(engine)
        for book in sorted((DEFAULT_PRICES.parent / "whatif").glob("*.toml")):
            ledger.load_prices(load_price_book_file(book))
        t0 = time.perf_counter()
        run_rollup(engine)
        rollup_s = time.perf_counter() - t0
        with engine.connect() as conn:
            october = conn.exec_driver_sql(
                "SELECT count(*) FILTER (WHERE day >= '2026-10-01'), count(*) FROM render_rollup"
            ).one()
        tenant_key = create_key(engine, TENANT, ["read"], "bench")
        admin_key = create_key(engine, None, ["admin"], "bench")
        port = free_port()
        month = "from=2026-10-01&to=2026-11-01"
        print("requesting pages…", file=sys.stderr)
        load = [os.getloadavg()[0]]
        with api_server(url, port):
            base = f"http://127.0.0.1:{port}"
            page = f"/dashboard/tenants/{TENANT}"
            cold, trip = measure(base, tenant_key, first_views(page, args.requests))
            warm, _ = measure(base, tenant_key, [f"{page}?{month}"] * args.requests)
            one_use_case = [f"{p}&use_case=ecommerce" for p in first_views(page, args.requests)]
            filtered, _ = measure(base, tenant_key, one_use_case)
            admin, _ = measure(base, admin_key, [f"/dashboard?{month}"] * (args.requests // 2))
        load.append(os.getloadavg()[0])
    table = "\n".join(
        [
            "| measure | value | target |",
            "|---|---:|---:|",
            f"| events of the tenant: October / all | {october[0] * 9:,} / {total:,} "
            f"({gen_s:.0f} s to generate, {rollup_s:.0f} s to roll up) | |",
            "| tenant page, October, first view (three report passes), server time: p50 / p95 / "
            f"max | {pct(cold, 0.5):.0f} ms / {pct(cold, 0.95):.0f} ms / {cold[-1]:.0f} ms "
            f"| p95 ≤ {TARGET_MS:.0f} ms |",
            f"| the same, round trip from a local client: p50 / p95 | {pct(trip, 0.5):.0f} ms / "
            f"{pct(trip, 0.95):.0f} ms | |",
            "| tenant page viewed again, rollups unchanged (rows kept; alerts, invoices, "
            f"budgets read live), server time: p50 / p95 | {pct(warm, 0.5):.0f} ms / "
            f"{pct(warm, 0.95):.0f} ms | p95 ≤ {TARGET_MS:.0f} ms |",
            f"| tenant page for one use case, first view, server time: p50 / p95 | "
            f"{pct(filtered, 0.5):.0f} ms / {pct(filtered, 0.95):.0f} ms | |",
            f"| admin overview (every tenant, pools), server time: p50 / p95 | "
            f"{pct(admin, 0.5):.0f} ms / {pct(admin, 0.95):.0f} ms | |",
        ]
    )
    print(table)
    print(f"mean first-view server time {statistics.mean(cold):.1f} ms", file=sys.stderr)
    if args.write:
        body = (
            "## Dashboard (issue 17)\n\n"
            f"One tenant with {october[0] * 9:,} generated events in October 2026 (nine per "
            f"render, four use cases, a render every {SPACING_S} s)"
            + (f" and as many in September ({total:,} in all)" if args.previous else "")
            + ", rolled up; the tenant page for "
            "the month (tiles and the period before, cost per render by stage and day, spend, "
            "savings and waste, what-if, alerts, invoices, budgets) requested one at a time "
            f"through `renderledger serve` with a signed-in cookie: {args.requests} first views "
            "(each a period not viewed before, so computed), then the same page "
            f"{args.requests} times. "
            "Server time is the page's `Server-Timing` (queries over the rollups and the "
            "HTML). The machine's 1-minute load average (other work on it included) when the "
            f"requests began and ended: {load[0]:.1f} and {load[1]:.1f}.\n\n" + table
        )
        write_section(args.write, "dashboard", body, f"python -m bench.dashboard --events {n}")


if __name__ == "__main__":
    main()

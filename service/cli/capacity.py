"""``renderledger pools …``, ``allocate`` and ``break-even``: capacity paid and where it goes."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from ledger.capacity import load_pools, read_pools
from ledger.connections import connection
from ledger.errors import LedgerError
from ledger.money import format_nanos
from ledger.pools import PoolError, parse_pool_file
from reports.allocation_job import run_allocation
from reports.break_even import BreakEvenRefused, assess
from reports.capacity_report import pool_rows, tenant_rows, unallocated
from service.cli.common import err, fail, open_ledger, out, plain
from service.settings import get_settings

pools_app = typer.Typer(help="GPU pools: capacity held, busy or idle.", no_args_is_help=True)
From = Annotated[str, typer.Option("--from", help="First day, UTC (YYYY-MM-DD)")]
To = Annotated[str, typer.Option("--to", help="Day after the last, UTC (YYYY-MM-DD)")]


def _days(start: str, end: str) -> tuple[date, date]:
    try:
        lo, hi = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise fail(f"--from/--to: {exc}", 2) from exc
    if lo >= hi:
        raise fail("--from must be before --to", 2)
    return lo, hi


@pools_app.command("load")
def pools_load(file: Annotated[Path, typer.Argument(help="A pools TOML file")]) -> None:
    """Declare the pools of FILE (see service/books/example_pools.toml), then re-allocate.

    A pool already loaded with the same terms is skipped; other terms at the same
    effective_from are refused (give the change a later effective_from)."""
    try:
        parsed = parse_pool_file(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from exc
    except PoolError as exc:
        raise fail(f"{file}: {exc}") from exc
    ledger = open_ledger(get_settings())
    try:
        added = load_pools(ledger.engine, parsed)
    except LedgerError as exc:
        raise fail(str(exc)) from exc
    names = ", ".join(d.name for d in parsed.definitions)
    out.print(f"{len(added)} new of {len(parsed.definitions)} pool(s): {plain(names)}")
    if added:  # hours already allocated may have used these pools' GPUs: all again
        result = run_allocation(ledger.engine)
        out.print(f"re-allocated {result.hours} hour(s) in {result.seconds:.2f}s")


@pools_app.command("list")
def pools_list() -> None:
    """The newest version of each pool, with its monthly cost (the break-even F)."""
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        pools = read_pools(raw)
    table = Table("pool", "GPU SKU", "GPUs", "pays", "idle", "per month", "from")
    for name in pools.names:
        p = pools.latest(name)
        assert p is not None
        table.add_row(
            plain(name),
            p.gpu_sku,
            str(p.gpus),
            p.payment.model,
            p.idle,
            f"{p.monthly_cost():.2f} {p.currency}",
            p.effective_from.date().isoformat(),
        )
    out.print(table)


@pools_app.command("report")
def pools_report(
    start: From,
    end: To,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Per pool: GPU-seconds held and busy, utilisation, paid, idle variance and where it
    went; per tenant: direct and fully-loaded cost per delivered render."""
    lo, hi = _days(start, end)
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        pools, tenants, kept = (
            pool_rows(raw, lo, hi),
            tenant_rows(raw, lo, hi),
            unallocated(raw, lo, hi),
        )
    if as_json:
        body = {
            "pools": [asdict(p) for p in pools],
            "tenants": [asdict(t) for t in tenants],
            "unallocated_nanos": kept,
        }
        out.print_json(orjson.dumps(body).decode())
        return
    table = Table("pool", "cur", "utilisation", "paid", "standard", "variance", "to tenants")
    for p in pools:
        util = "-" if p.utilisation is None else f"{p.utilisation:.1%}"
        money = (p.paid_nanos, p.standard_nanos, p.variance_nanos, p.allocated_nanos)
        table.add_row(plain(p.pool), p.currency, util, *(format_nanos(n) for n in money))
    out.print(table)
    table = Table("tenant", "use case", "cur", "renders", "direct/render", "loaded/render")
    for t in tenants:
        per = (t.direct_per_render_nanos, t.fully_loaded_per_render_nanos)
        table.add_row(
            plain(t.tenant_id),
            plain(t.use_case or "(tenant)"),
            t.currency,
            str(t.renders_delivered),
            *("-" if n is None else format_nanos(n) for n in per),
        )
    out.print(table)
    for currency, nanos in sorted(kept.items()):
        out.print(f"unallocated (platform): {format_nanos(nanos)} {currency}")


def allocate(
    full: Annotated[
        bool, typer.Option(help="Rebuild hourly usage and re-allocate every hour")
    ] = False,
) -> None:
    """Allocate capacity and overheads to tenants now (the API also does it on a schedule)."""
    ledger = open_ledger(get_settings())
    result = run_allocation(ledger.engine, full=full)
    if not result.ran:
        raise fail("another process is allocating; try again when it is done", 3)
    out.print(
        f"{result.events} event(s), {result.actual_costs} actual cost(s): {result.hours} hour(s) "
        f"re-allocated, {result.rows_written} row(s) written in {result.seconds:.2f}s"
    )


def break_even(
    pool: Annotated[str, typer.Option(help="The pool to self-host on")],
    api_book: Annotated[str, typer.Option(help="A what-if book with the API's per-image price")],
    start: From,
    end: To,
    api_sku: Annotated[str, typer.Option(help="The API's per-image SKU")] = "render.image",
) -> None:
    """The monthly volume from which self-hosting POOL beats the API, at the observed
    throughput, and how it moves with utilisation."""
    lo, hi = _days(start, end)
    ledger = open_ledger(get_settings())
    book = ledger.price_version(api_book)
    try:
        with connection(ledger.engine) as raw:
            r, others = assess(raw, book, pool, api_book, api_sku, lo, hi)
    except BreakEvenRefused as exc:
        hint = ": `renderledger pools list`" if exc.field == "pool" else ""
        raise fail(f"{exc}{hint}") from exc
    if others:
        err.print(f"left out: renders on {plain(pool)} priced in {', '.join(others)}")
    cur = r.currency
    volume = r.break_even_renders_per_month
    out.print(
        f"pool {plain(pool)}: fixed {r.fixed_monthly:.2f} {cur}/month; API {r.api_price} {cur}"
    )
    out.print(f"variable cost per render besides the GPU: {r.variable_per_render:.6f} {cur}")
    out.print(
        "break-even: "
        + ("never (the API costs less than the variable cost)" if volume is None else f"{volume:,}")
        + " renders/month"
    )
    now = r.renders_per_month_now
    out.print(
        f"this period runs at {now if now is not None else '-'} renders/month"
        + (
            ""
            if r.self_hosting_pays is None
            else f": self-hosting {'pays' if r.self_hosting_pays else 'does not pay yet'}"
        )
    )
    table = Table("utilisation", "max renders/month", "loaded cost/render", "breaks even")
    for s in r.scenarios:
        table.add_row(
            f"{s.utilisation:.0%}",
            "-" if s.max_renders_per_month is None else f"{s.max_renders_per_month:,}",
            "-" if s.fully_loaded_per_render is None else f"{s.fully_loaded_per_render:.6f}",
            {None: "-", True: "yes", False: "no"}[s.breaks_even],
        )
    out.print(table)
    if r.utilisation is not None:
        err.print(f"observed utilisation {r.utilisation:.1%}")

"""``renderledger fx …`` (exchange-rate versions) and ``renderledger report tenants``."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ledger.connections import connection
from ledger.fx import FxError, fx_table, load_rates_file, versions
from reports.report_rows import earlier
from reports.tenant_ranking import rank_tenants
from service.cli.common import fail, open_ledger, out, plain
from service.settings import get_settings

fx_app = typer.Typer(help="Exchange rates (versioned, append-only).", no_args_is_help=True)
report_app = typer.Typer(help="Reports across tenants.", no_args_is_help=True)


@fx_app.command("load")
def fx_load(
    file: Annotated[Path, typer.Argument(help="date,currency,rate CSV, or the ECB's")],
) -> None:
    """Add FILE's rates (units per 1 EUR) as a new version; the same rates again change nothing.

    A bad row stops the load with its line number, and nothing is written."""
    try:
        version, created = load_rates_file(open_ledger(get_settings()).engine, file)
    except (FxError, OSError, UnicodeDecodeError) as exc:
        raise fail(f"{file}: {exc}") from exc
    out.print(f"{'loaded' if created else 'already loaded'}: FX version {version}")


@fx_app.command("list")
def fx_list() -> None:
    """Every FX version: number, file, base, rates, when loaded."""
    table = Table("version", "name", "base", "rates", "loaded")
    with connection(open_ledger(get_settings()).engine) as raw:
        for version, name, base, count, loaded in versions(raw):
            table.add_row(str(version), plain(name), base, str(count), f"{loaded:%Y-%m-%d %H:%M}")
    out.print(table)


def _day(text: str, option: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()  # noqa: DTZ007  # a calendar date
    except ValueError as exc:
        raise fail(f"{option}: a date as YYYY-MM-DD, got {text!r}", 2) from exc


@report_app.command("tenants")
def report_tenants(
    start: Annotated[str, typer.Option("--from", help="First day, UTC (YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Day after the last, UTC")],
    currency: Annotated[str | None, typer.Option(help="Convert to this currency")] = None,
    fx_version: Annotated[int | None, typer.Option(help="FX version (the newest)")] = None,
) -> None:
    """Every tenant's spend, ranked, with cost per delivered render and its change against
    the period of equal length before."""
    first, last = _day(start, "--from"), _day(end, "--to")
    if first >= last:
        raise fail("--from must be before --to", 2)
    with connection(open_ledger(get_settings()).engine) as raw:
        try:
            fx = None
            if currency is not None:
                fx = fx_table(
                    raw, fx_version, earlier(first, last - first), last - timedelta(days=1)
                )
            lines = rank_tenants(raw, first, last, currency, fx)
        except FxError as exc:
            raise fail(str(exc)) from exc
    title = f"{first} to {last}" + (f", in {currency} (FX version {fx.version})" if fx else "")
    table = Table(
        "#",
        "tenant",
        "currency",
        "spend",
        "delivered",
        "per render",
        "before",
        "change",
        title=title,
    )
    for line in lines:
        per = line.cost_per_delivered_render
        before = line.previous_cost_per_delivered_render
        moved = line.cost_per_delivered_render_change
        table.add_row(
            str(line.rank),
            plain(line.tenant),
            line.currency,
            line.cost.amount,
            str(line.renders_delivered),
            per.amount if per else "",
            before.amount if before else "",
            f"{moved:+.1%}" if moved is not None else "",
        )
    out.print(table)

"""``renderledger budgets …``: monthly spend limits and their alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from ledger.connections import connection
from reports.budgets import Budget, BudgetError, current, judge, set_budgets, statuses
from service.cli.common import fail, open_ledger, out, plain
from service.settings import get_settings

budgets_app = typer.Typer(
    help="Budgets: a monthly amount per tenant or use case, alerted at 50/80/100 % and on "
    "a month-end forecast above it.",
    no_args_is_help=True,
)
UseCaseOpt = Annotated[
    str | None, typer.Option("--use-case", help="One use case; without it, the whole tenant")
]


@budgets_app.command("set")
def budgets_set(
    tenant: Annotated[str, typer.Argument(help="The tenant")],
    amount: Annotated[str, typer.Option("--amount", help="Per month, e.g. 1000.00")],
    currency: Annotated[str, typer.Option("--currency", help="e.g. EUR")],
    use_case: UseCaseOpt = None,
    thresholds: Annotated[
        str, typer.Option("--thresholds", help="Percents that alert, comma-separated")
    ] = "50,80,100",
) -> None:
    """Add or replace one budget of TENANT (its other budgets stay as they are)."""
    try:
        value = Decimal(amount)
        percents = tuple(int(t) for t in thresholds.split(",") if t.strip())
        budget = Budget(use_case=use_case, amount=value, currency=currency, thresholds=percents)
    except (InvalidOperation, ValueError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(str(p) for p in first["loc"]) if first else "--amount/--thresholds"
        raise fail(f"{where}: {first['msg'] if first else exc}", 2) from None
    _replace(tenant, use_case, budget)


@budgets_app.command("clear")
def budgets_clear(
    tenant: Annotated[str, typer.Argument(help="The tenant")], use_case: UseCaseOpt = None
) -> None:
    """Remove one budget of TENANT (the tenant-wide one without --use-case)."""
    _replace(tenant, use_case, None)


def _replace(tenant: str, use_case: str | None, budget: Budget | None) -> None:
    ledger = open_ledger(get_settings())
    try:
        with connection(ledger.engine, transaction=True) as raw:
            found = current(raw, tenant).get(tenant, (0, []))[1]
            kept = [b for b in found if b.use_case != use_case]
            if budget is None and len(kept) == len(found):
                raise fail(f"{plain(tenant)}: no such budget")
            version = set_budgets(raw, tenant, kept + ([budget] if budget else []), "cli")
    except BudgetError as exc:
        raise fail(str(exc)) from None
    out.print(f"{plain(tenant)}: budgets version {version}")


@budgets_app.command("show")
def budgets_show(tenant: Annotated[str, typer.Argument(help="The tenant")]) -> None:
    """This month's spend against each budget of TENANT, and the month-end forecast."""
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        found = statuses(raw, tenant, datetime.now(UTC))
    if not found:
        out.print(f"{plain(tenant)}: no budgets")
        return
    table = Table("scope", "month", "budget", "spent", "used", "forecast", "thresholds")
    for s in found:
        d = s.as_dict()
        b = s.budget
        table.add_row(
            plain(b.use_case or "whole tenant"),
            d["month"],
            f"{b.amount} {b.currency}",
            d["spent"] or plain(s.error or ""),
            "" if s.used is None else f"{s.used:.0%}",
            "" if d["forecast"] is None else f"{d['forecast']} ({s.forecast_ratio:.0%})",
            ",".join(f"{t}%" for t in b.thresholds),
        )
    out.print(table)


@budgets_app.command("run")
def budgets_run() -> None:
    """Judge every budget now (the API's scheduler does it after every rollup)."""
    result = judge(open_ledger(get_settings()).engine)
    if not result.ran:
        raise fail("another process is judging budgets; try again in a moment")
    out.print(
        f"{result.budgets} budget(s) judged, {result.opened} alert(s) opened, "
        f"{result.resolved} resolved"
    )

"""What every ``renderledger`` command shares: consoles, failing cleanly, the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ledger import database
from ledger.store import Ledger
from service.settings import Settings

BOOKS = Path(__file__).parent.parent / "books"
DEFAULT_PRICES = BOOKS / "default_prices.toml"
EXAMPLE_PLANS = BOOKS / "example_plans.toml"
EXAMPLE_PROFILES = BOOKS / "example_profiles.toml"

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as is (brackets in a regex or a file name are not markup) and give
    the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def plain(value: object) -> str:
    """``value`` for a markup string or a table cell: rich would eat ``[x]`` in user text."""
    return escape(str(value))


def database_url(settings: Settings) -> str:
    try:
        return database.resolve_url(settings.database_url, settings.data_dir)
    except database.DatabaseUnavailable as exc:
        raise fail(str(exc)) from exc


def open_ledger(settings: Settings) -> Ledger:
    engine = database.make_engine(database_url(settings), app_role=settings.db.app_role)
    current, head = database.current_revision(engine), database.head_revision()
    if current != head:
        raise fail(
            f"the database schema is at revision {current}, the code needs {head}: "
            "run `renderledger migrate`"
        )
    return Ledger(engine, max_batch_events=settings.ingest.max_batch_events)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def s3_client(settings: Settings) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=settings.effective_s3_endpoint, region_name=settings.s3.region
    )

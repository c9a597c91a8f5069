"""``renderledger invoice events``: billing events and their webhook delivery, as a table."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer
from rich.table import Table

from ledger.connections import connection
from reports.billing.notices import events
from service.cli.common import fail, open_ledger, out, plain
from service.settings import get_settings


def invoice_events(
    after: Annotated[int, typer.Option(help="Only events after this event id")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many")] = 100,
) -> None:
    """Invoice finalized and credit note issued events, oldest first, and their delivery."""
    if after < 0 or not 1 <= limit <= 10_000:
        raise fail("--after ≥ 0 and 1 ≤ --limit ≤ 10000", 2)
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        found = events(raw, after, limit)
    if not found:
        out.print("no billing events")
        return
    table = Table("id", "document", "tenant", "at (UTC)", "delivery")
    for e in found:
        tried = f"{e.attempts} attempt{'s' if e.attempts != 1 else ''}"
        if e.last_status is not None:
            tried += f", last {e.last_status}"
        elif e.last_error:
            tried += f": {e.last_error}"
        table.add_row(
            str(e.event_id),
            f"{plain(e.number)}\n{e.type}",
            f"{plain(e.tenant)}\n{e.period}",
            e.at.astimezone(UTC).strftime("%Y-%m-%d\n%H:%M:%S"),
            f"{'delivered' if e.delivered else 'not delivered'}\n{plain(tried)}",
        )
    out.print(table)

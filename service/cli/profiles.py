"""``renderledger profiles …``: who each tenant's invoices are addressed to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ledger.connections import connection
from reports.billing.parties import ProfileError, profiles_of, read_profiles, store_profile
from service.cli.common import fail, open_ledger, out, plain
from service.settings import get_settings

profiles_app = typer.Typer(
    help="Billing profiles: the customer's legal name, address, tax terms and payment terms.",
    no_args_is_help=True,
)


@profiles_app.command("load")
def profiles_load(
    file: Annotated[Path, typer.Argument(help="A TOML file of [[profile]] tables")],
) -> None:
    """Add the profile versions in FILE; all are checked first and written in one
    transaction; versions already loaded are left as they are."""
    try:
        profiles = read_profiles(file)
        ledger = open_ledger(get_settings())
        with connection(ledger.engine, transaction=True) as raw:
            added = [p for p in profiles if store_profile(raw, p)]
    except ProfileError as exc:
        raise fail(str(exc)) from None
    out.print(f"{len(added)} profile(s) added, {len(profiles) - len(added)} already loaded")


@profiles_app.command("list")
def profiles_list(tenant: Annotated[str, typer.Argument(help="The tenant")]) -> None:
    """A tenant's profile versions, oldest first."""
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        profiles = profiles_of(raw, tenant)
    if not profiles:
        out.print(f"{plain(tenant)}: no billing profile; invoices name the tenant id only")
        return
    table = Table("from", "legal name", "country", "tax id", "currency", "terms", "tax")
    for p in profiles:
        tax = (
            "reverse charge"
            if p.reverse_charge
            else ", ".join(f"{r.label} {r.percent}%" for r in p.tax_rates)
        )
        table.add_row(
            str(p.effective_from),
            plain(p.legal_name),
            p.country or "",
            plain(p.tax_id or ""),
            p.currency or "(plan's)",
            f"{p.payment_terms_days} days",
            plain(tax) or "none",
        )
    out.print(table)

"""``renderledger plans …`` and ``renderledger invoice …``: billing from the command line."""

from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ledger.connections import connection
from reports import history
from reports.billing.credit_notes import issue_credit_note
from reports.billing.exports import FORMATS, export, render
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import draft_all, finalize_all, invoice
from reports.billing.months import parse_period
from reports.billing.parties import Issuer, NoIssuer, require_issuer
from reports.billing.plans import PlanError, plans_of, read_file, store_grant, store_plan
from reports.billing.views import View
from service.cli.common import err, fail, open_ledger, out, plain, progress_bar, s3_client
from service.settings import get_settings

plans_app = typer.Typer(help="Billing plans and prepaid credits.", no_args_is_help=True)
invoice_app = typer.Typer(
    help="Monthly invoices: show, finalize, export, credit.", no_args_is_help=True
)

MonthOpt = Annotated[str, typer.Option("--month", help="The billing month, YYYY-MM")]
TenantsOpt = Annotated[
    list[str] | None, typer.Option("--tenant", help="A tenant (repeatable)", show_default=False)
]
AllOpt = Annotated[bool, typer.Option("--all-tenants", help="Every tenant")]
ViewOpt = Annotated[
    str,
    typer.Option(
        "--view",
        help="customer: the document sent (no cost or audit fields); internal: all of it",
    ),
]


def _view(text: str) -> View:
    if text not in ("customer", "internal"):
        raise fail("--view: customer or internal", 2)
    return "customer" if text == "customer" else "internal"


def _issuer() -> Issuer:
    try:
        return require_issuer(get_settings().billing.issuer)
    except NoIssuer as exc:
        raise fail(str(exc)) from None


def _period(text: str) -> date:
    try:
        return parse_period(text)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def _tenants(tenants: list[str] | None, all_tenants: bool) -> list[str] | None:
    if bool(tenants) == all_tenants:
        raise fail("give --tenant T (one or more) or --all-tenants", 2)
    return None if all_tenants else list(tenants or [])


@plans_app.command("load")
def plans_load(
    file: Annotated[Path, typer.Argument(help="A TOML file of [[plan]] and [[credit]]")],
) -> None:
    """Add the plans and credit grants in FILE; entries already loaded are left as they are.

    Every entry is checked before any is written, and all are written in one transaction.
    """
    try:
        plans, grants = read_file(file)
        ledger = open_ledger(get_settings())
        with connection(ledger.engine, transaction=True) as raw:
            added = [p for p in plans if store_plan(raw, p)]
            granted = [g for g in grants if store_grant(raw, g)]
    except PlanError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"{len(added)} plan(s) added, {len(plans) - len(added)} already loaded; "
        f"{len(granted)} credit grant(s) added, {len(grants) - len(granted)} already loaded"
    )


@plans_app.command("list")
def plans_list(tenant: Annotated[str, typer.Argument(help="The tenant")]) -> None:
    """Show a tenant's plan versions."""
    ledger = open_ledger(get_settings())
    with connection(ledger.engine) as raw:
        plans = plans_of(raw, tenant)
    table = Table("from", "name", "currency", "time zone", "minimum", "default", "use cases")
    for p in plans:
        default = f"+{p.default.markup}" if p.default.markup is not None else "tiers"
        table.add_row(
            p.effective_from.isoformat(),
            p.name,
            p.currency,
            p.timezone,
            str(p.minimum_commitment),
            default,
            ", ".join(sorted(p.use_cases)),
        )
    out.print(table if plans else f"{tenant}: no plan; billed at cost in USD")


@invoice_app.command("show")
def invoice_show(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant")],
    month: MonthOpt,
    fmt: Annotated[str, typer.Option("--format", help="json, csv or pdf")] = "json",
    output: Annotated[Path | None, typer.Option("--out", help="Write here, not to stdout")] = None,
    view: ViewOpt = "customer",
) -> None:
    """Print a month's invoice: the finalized one, or a draft computed from the log now."""
    chosen = _view(view)
    if fmt not in FORMATS:
        raise fail(f"--format: one of {', '.join(FORMATS)}", 2)
    if fmt == "pdf" and output is None:
        raise fail("--format pdf needs --out FILE", 2)
    settings = get_settings()
    ledger = open_ledger(settings)
    try:
        with connection(ledger.engine) as raw:
            doc = invoice(raw, tenant, _period(month), settings.billing.issuer)
    except InvoiceError as exc:
        raise fail(str(exc)) from None
    issuer = settings.billing.issuer
    body = render(doc, fmt, chosen, issuer.logo if issuer else None)
    if output:
        output.write_bytes(body)
        err.print(f"wrote {output}")
    else:
        sys.stdout.buffer.write(body + b"\n")


@invoice_app.command("finalize")
def invoice_finalize(
    month: MonthOpt, tenant: TenantsOpt = None, all_tenants: AllOpt = False
) -> None:
    """Make invoices immutable and number them; finalizing again changes nothing."""
    period = _period(month)
    chosen = _tenants(tenant, all_tenants)
    issuer = _issuer()
    settings = get_settings()
    ledger = open_ledger(settings)
    with progress_bar() as progress:
        task = progress.add_task("finalizing invoices", total=None)
        outcomes = finalize_all(
            ledger.engine,
            period,
            chosen,
            progress=lambda d, n: progress.update(task, completed=d, total=n),
            issuer=issuer,
            archive=settings,  # drafts read archived history from the Iceberg table
        )
    failed = 0
    for o in outcomes:
        if o.document is None:
            failed += 1
            err.print(f"[red]{o.tenant}[/]: {plain(o.error)}", highlight=False)
            continue
        verb = "finalized" if o.created else "already final"
        doc = o.document
        due = f"due {doc.due_on}" if doc.due_on else ""
        out.print(
            f"{o.tenant}: {verb} {doc.number} total {doc.total} {doc.currency}, "
            f"amount due {doc.amount_due or doc.total} {due}".rstrip()
        )
    if failed:
        raise fail(f"{failed} of {len(outcomes)} invoice(s) not finalized")


@invoice_app.command("export")
def invoice_export(
    month: MonthOpt,
    to: Annotated[str, typer.Option("--to", help="A folder or s3://bucket/prefix/")],
    tenant: TenantsOpt = None,
    all_tenants: AllOpt = False,
    formats: Annotated[str, typer.Option("--formats", help="Any of pdf,csv,json")] = "pdf,csv,json",
    view: ViewOpt = "customer",
) -> None:
    """Write each invoice as PDF, CSV and JSON; for S3, print a presigned link to each file.

    Finalized invoices are written as finalized; the others as drafts (marked DRAFT).
    """
    period = _period(month)
    chosen = _tenants(tenant, all_tenants)
    shown = _view(view)
    wanted = [f.strip() for f in formats.split(",") if f.strip()]
    if not wanted or any(f not in FORMATS for f in wanted):
        raise fail(f"--formats: any of {', '.join(FORMATS)}", 2)
    settings = get_settings()
    ledger = open_ledger(settings)
    s3 = s3_client(settings) if to.startswith("s3://") else None
    with progress_bar() as progress:
        task = progress.add_task("drafting invoices", total=None)
        refused: dict[str, str] = {}
        with history.opened(ledger.engine, settings) as past, connection(ledger.engine) as raw:
            docs = draft_all(
                raw,
                period,
                chosen,
                lambda d, n: progress.update(task, completed=d, total=n),
                issuer=settings.billing.issuer,
                refused=refused,
                past=past,  # archived history from the Iceberg table, the tail from here
            )
        task = progress.add_task("writing documents", total=len(docs))
        try:
            issuer = settings.billing.issuer
            written = export(
                docs,
                to,
                s3,
                wanted,
                shown,
                logo=issuer.logo if issuer else None,
                progress=lambda: progress.advance(task),
            )
        except Exception as exc:  # boto3's and the file system's errors alike: say which
            raise fail(f"export to {to} failed: {exc}") from exc
    for item in written:
        out.print(item.link or item.location, highlight=False, soft_wrap=True)
    # Per currency: one sum across currencies would mean nothing.
    totals: dict[str, Decimal] = {}
    for d in docs:
        totals[d.currency] = totals.get(d.currency, Decimal(0)) + Decimal(d.total)
    by_currency = ", ".join(f"{t} {c}" for c, t in sorted(totals.items())) or "nothing"
    err.print(f"{len(docs)} invoice(s), {len(written)} file(s); totals: {by_currency}")
    for t, why in sorted(refused.items()):
        err.print(f"[red]{t}[/]: not exported: {plain(why)}", highlight=False)
    if refused:
        raise fail(f"{len(refused)} invoice(s) could not be drafted")


@invoice_app.command("credit-note")
def invoice_credit_note(
    tenant: Annotated[str, typer.Option("--tenant", help="The tenant")],
    month: MonthOpt,
    amount: Annotated[str, typer.Option("--amount", help="In the invoice's currency, e.g. 12.50")],
    reason: Annotated[str, typer.Option("--reason", help="Why; printed on the note")],
) -> None:
    """Credit part of a finalized invoice; notes never exceed its total."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise fail(f"--amount: not a number: {amount!r}", 2) from None
    ledger = open_ledger(get_settings())
    try:
        with connection(ledger.engine, transaction=True) as raw:
            note = issue_credit_note(raw, tenant, _period(month), value, reason)
    except InvoiceError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"{note.number} (credits {note.invoice_number}): {note.amount} {note.currency}, "
        f"of which tax {note.tax} — {plain(note.reason)}"
    )

"""``renderledger``: the command line. Every command exits non-zero with a message on failure."""

from __future__ import annotations

import itertools
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from ledger import database
from ledger.chain import verify as verify_chain
from ledger.cli_alerts import alerts_app
from ledger.cli_billing import invoice_app, plans_app
from ledger.cli_common import (
    database_url,
    err,
    fail,
    open_ledger,
    out,
    progress_bar,
    s3_client,
)
from ledger.cli_render import render, render_demo, spool_app
from ledger.connections import connection
from ledger.errors import EventConflict, LedgerError
from ledger.prices import PriceBookError, load_price_book_file
from ledger.sample import sample_events
from ledger.settings import Settings, get_settings
from ledger.store import Ledger
from reports.billing.plans import read_file as read_plans
from reports.billing.plans import store_grant, store_plan

DEFAULT_PRICES = Path(__file__).with_name("default_prices.toml")
EXAMPLE_PLANS = Path(__file__).with_name("example_plans.toml")

app = typer.Typer(
    help="renderledger: the cost ledger for diffusion image generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(
    help="The embedded PostgreSQL server (unused when DATABASE_URL is set).", no_args_is_help=True
)
prices_app = typer.Typer(help="Cost price books.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(prices_app, name="prices")
app.add_typer(spool_app, name="spool")
keys_app = typer.Typer(help="API keys (printed once, stored as a hash).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(plans_app, name="plans")
app.add_typer(invoice_app, name="invoice")
app.add_typer(alerts_app, name="alerts")
app.command()(render)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server (data in RENDERLEDGER_DATA_DIR/pg) and print its URL."""
    settings = get_settings()
    if settings.database_url:
        raise fail("DATABASE_URL is set; renderledger uses that server, not an embedded one")
    out.print(database_url(settings), highlight=False)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    stopped = database.stop_embedded(get_settings().data_dir)
    out.print("stopped" if stopped else "not running")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    out.print(database_url(get_settings()), highlight=False)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str | None, typer.Option(help="The tenant the key acts for")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, read, admin")] = "read",
    name: Annotated[str, typer.Option(help="A label to recognise the key by")] = "",
) -> None:
    """Make a key and print it; only its hash is stored, so keep it now."""
    from ledger.keys import KeyRefused, create_key

    try:
        key = create_key(
            open_ledger(get_settings()).engine,
            tenant,
            [s.strip() for s in scopes.split(",") if s.strip()],
            name,
        )
    except KeyRefused as exc:
        raise fail(str(exc)) from exc
    out.print(key, highlight=False)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key or its id")]) -> None:
    """Revoke a key at once; it stays listed, marked revoked."""
    from ledger.keys import revoke_key

    if not revoke_key(open_ledger(get_settings()).engine, key_id):
        raise fail(f"no live key {key_id!r}")
    out.print("revoked")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, tenant, scopes, name, created, revoked."""
    from ledger.keys import list_keys

    table = Table("id", "tenant", "scopes", "name", "created", "revoked")
    for key_id, tenant, scopes, name, created, revoked in list_keys(
        open_ledger(get_settings()).engine
    ):
        table.add_row(key_id, tenant or "(admin)", ",".join(scopes), name, created, revoked or "")
    out.print(table)


@app.command()
def migrate() -> None:
    """Run the Alembic migrations up to the newest revision."""
    database.migrate(database_url(get_settings()))
    out.print("database is at the newest revision")


@prices_app.command("load")
def prices_load(file: Annotated[Path, typer.Argument(help="A price book TOML file")]) -> None:
    """Add FILE as a new price book version; loading the same file again changes nothing."""
    try:
        book = load_price_book_file(file)
        version, created = open_ledger(get_settings()).load_prices(book)
    except (PriceBookError, LedgerError) as exc:
        raise fail(f"{file}: {exc}") from exc
    verb = "loaded" if created else "already loaded"
    out.print(
        f"{verb}: version {version.version} {version.name!r}, {len(version.prices)} SKUs, "
        f"{version.currency}, effective from {version.effective_from.isoformat()}"
    )


@prices_app.command("list")
def prices_list() -> None:
    """Show every price book version and its SKUs."""
    book = open_ledger(get_settings()).price_book()
    table = Table("version", "name", "effective from", "currency", "SKUs")
    for v in book.versions:
        table.add_row(
            str(v.version), v.name, v.effective_from.isoformat(), v.currency, str(len(v.prices))
        )
    out.print(table)


@app.command()
def ingest(
    location: Annotated[str, typer.Argument(help="A file path or s3://bucket/key")],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="ndjson, csv, parquet or cdn-log (from the file name if unset)"
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Events per append")] = None,
) -> None:
    """Import cost events from NDJSON, CSV or Parquet, or CDN egress from a CDN access log
    (CloudFront standard format; see ingest/cdn_log.py), in batches, with a progress bar."""
    from ingest.cdn_log import CdnStats
    from ingest.importer import ImportFailed, import_events, open_source

    settings = get_settings()
    size = batch_size or settings.ingest.import_batch_size
    if not 1 <= size <= settings.ingest.max_batch_events:
        raise fail(f"--batch-size must be between 1 and {settings.ingest.max_batch_events}")
    ledger = open_ledger(settings)
    with ExitStack() as stack:
        try:
            s3 = s3_client(settings) if "://" in location else None
            cdn = CdnStats()
            source = open_source(location, fmt, stack, s3, engine=ledger.engine, cdn_stats=cdn)
        except (ValueError, OSError) as exc:
            raise fail(str(exc)) from exc
        with progress_bar() as progress:
            unit = "rows" if source.format == "parquet" else "bytes"
            task = progress.add_task(f"{source.name} ({unit})", total=source.total)
            try:
                report = import_events(
                    ledger, source, batch_size=size, on_progress=lambda n: progress.advance(task, n)
                )
            except ImportFailed as exc:
                raise fail(str(exc)) from exc
    out.print(
        f"{report.rows} rows: {report.accepted} accepted, {report.duplicates} duplicates, "
        f"{report.batches} batches"
        + (f"; {cdn.unmatched} log lines matched no known render" if cdn.unmatched else "")
    )


@app.command()
def verify() -> None:
    """Recompute the hash chain over every event; name the first broken block."""
    ledger = open_ledger(get_settings())
    from ledger.journal import last_seq

    with progress_bar() as progress:
        task = progress.add_task("verifying events", total=last_seq(ledger.engine))
        result = verify_chain(ledger.engine, progress=lambda n: progress.advance(task, n))
    if not result.ok:
        where = f"block {result.broken_block}" if result.broken_block else "the log"
        raise fail(f"chain broken at {where}: {result.reason}", code=2)
    out.print(f"ok: {result.blocks_checked} blocks, {result.events_checked} events verified")


@app.command()
def rollup(
    rebuild: Annotated[bool, typer.Option(help="Empty the rollups and rebuild from seq 0")] = False,
) -> None:
    """Run the rollup job once; the API runs it on its own every 60 s (configurable)."""
    from reports.jobs import run_rollup

    settings = get_settings()
    ledger = open_ledger(settings)
    with progress_bar() as progress:
        task = progress.add_task("rolling up events", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = run_rollup(
            ledger.engine,
            rebuild=rebuild,
            progress=advance,
            chunk_events=settings.reports.rollup_chunk_events,
        )
    if not result.ran:
        raise fail("another rollup holds the lock (an API process?); try again shortly", code=3)
    out.print(
        f"rolled up {result.events} events in {result.chunks} chunk(s), "
        f"{result.seconds:.2f}s; checkpoint at seq {result.last_seq}"
    )


@app.command()
def sample(
    file: Annotated[Path, typer.Argument(help="Where to write NDJSON events")],
    renders: Annotated[int, typer.Option(help="Renders to generate (~9 events each)")] = 1000,
    seed: Annotated[int, typer.Option(help="Same seed, same event_ids")] = 7,
) -> None:
    """Write a generated sample of cost events as NDJSON, e.g. to try `renderledger ingest`."""
    with file.open("wb") as fh:
        n = 0
        for event in sample_events(renders, seed=seed):
            fh.write(orjson.dumps(event.model_dump(mode="json")) + b"\n")
            n += 1
    out.print(f"wrote {n} events of {renders} renders to {file}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (parsing is CPU-bound)")] = 1,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = get_settings()
    if workers > 1 and not settings.database_url:
        # Workers re-read the settings from the environment: hand them the resolved URL.
        os.environ["DATABASE_URL"] = database_url(settings)
    uvicorn.run(
        "ledger.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


@app.command()
def demo(
    renders: Annotated[int, typer.Option(help="Sample renders to ingest")] = 2000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after ingesting")] = False,
    render_images: Annotated[bool, typer.Option(help="Render a few images (tiny preset)")] = True,
) -> None:
    """What `make run` does: database, migrations, default prices, a sample, then the API."""
    settings = get_settings()
    url = database_url(settings)
    out.print(f"[bold]database[/] {url}", highlight=False)
    database.migrate(url)
    ledger = Ledger(database.make_engine(url, app_role=settings.db.app_role))
    version, created = ledger.load_prices(load_price_book_file(DEFAULT_PRICES))
    out.print(f"[bold]price book[/] {version.name!r} ({'loaded' if created else 'present'})")
    events = sample_events(renders)
    accepted = duplicates = 0
    first_render = None
    with progress_bar() as progress:
        task = progress.add_task("ingesting sample events", total=None)
        while chunk := list(itertools.islice(events, 5000)):
            first_render = first_render or chunk[0].render_id
            try:
                receipt = ledger.append(chunk)
            except EventConflict:
                err.print("an older sample with the same ids is already in the ledger; kept it")
                break
            accepted += receipt.accepted
            duplicates += receipt.duplicates
            progress.advance(task, len(chunk))
    out.print(f"[bold]sample[/] {accepted} events accepted, {duplicates} already there")
    images = settings.data_dir / "images"
    rendered = render_demo(settings, ledger, images) if render_images else []
    if rendered:
        out.print(
            f"[bold]renders[/] {len(rendered)} images in {images}, their events in the ledger"
        )
    result = verify_chain(ledger.engine)
    out.print(
        f"[bold]verify[/] {'ok' if result.ok else result.reason}: {result.events_checked} events"
    )
    for whatif in sorted((DEFAULT_PRICES.parent / "whatif").glob("*.toml")):
        ledger.load_prices(load_price_book_file(whatif))
    from reports.jobs import run_rollup

    rolled = run_rollup(ledger.engine)
    out.print(f"[bold]rollup[/] {rolled.events} new events rolled up")
    plans, grants = read_plans(EXAMPLE_PLANS)
    with connection(ledger.engine, transaction=True) as raw:
        added = sum(store_plan(raw, p) for p in plans) + sum(store_grant(raw, g) for g in grants)
    out.print(f"[bold]billing[/] example plans {'loaded' if added else 'present'}")
    if no_serve:
        return
    key = _demo_key(settings, ledger)
    base = f"http://{host}:{port}"
    out.print(
        f"""
[bold green]renderledger is serving[/] (Ctrl-C to stop; `renderledger db stop` ends PostgreSQL)
Every endpoint but /healthz wants a key; here is an admin one ({settings.data_dir}/demo-admin.key):
  export RL_KEY={key}
  curl -H "Authorization: Bearer $RL_KEY" '{base}/v1/tenants/acme/report?group_by=use_case'
In the API docs, "Authorize" takes the same key.
  API docs     {base}/docs
  health       {base}/healthz
  event log    {base}/v1/events?limit=20
  one render   {base}/v1/renders/{rendered[0] if rendered else first_render}
  report       {base}/v1/tenants/acme/report?from=2026-10-01&to=2026-12-01&group_by=use_case,stage
  vs an API    {base}/v1/tenants/acme/report?group_by=use_case&what_if=openai-dalle3-standard
  as CSV       {base}/v1/tenants/acme/report?group_by=day&format=csv
  invoice      {base}/v1/tenants/acme/invoices/2026-10  (a draft; add ?format=pdf or csv)
  in EUR       {base}/v1/tenants/globex/invoices/2026-10?format=pdf
  alerts       {base}/v1/alerts?status=open  (and `renderledger alerts evaluate` for the harness)
  metrics      {base}/metrics
""",
        highlight=False,
    )
    import uvicorn

    from ledger.app import create_app

    uvicorn.run(create_app(settings, ledger), host=host, port=port, log_level="warning")


def _demo_key(settings: Settings, ledger: Ledger) -> str:
    """The demo's admin key, reused across runs while it stays valid."""
    from ledger.keys import authenticate, create_key

    path = settings.data_dir / "demo-admin.key"
    if path.exists() and authenticate(ledger.engine, key := path.read_text().strip()):
        return key
    key = create_key(ledger.engine, None, ["admin"], "make run demo")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

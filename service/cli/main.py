"""``renderledger``: the command line. Every command exits non-zero with a message on failure."""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from ingest.sample import sample_events
from ledger import database
from ledger.chain import verify as verify_chain
from ledger.connections import connection
from ledger.errors import LedgerError
from ledger.money import canonical_decimal
from ledger.prices import PriceBookError, load_price_book_file
from service.cli.alerts import alerts_app
from service.cli.archive import archive_app, verify_history
from service.cli.billing import invoice_app, plans_app
from service.cli.billing_events import invoice_events
from service.cli.budgets import budgets_app
from service.cli.capacity import allocate, break_even, pools_app
from service.cli.common import DEFAULT_PRICES as DEFAULT_PRICES  # tests and scripts use it here
from service.cli.common import (
    database_url,
    err,
    fail,
    open_ledger,
    out,
    plain,
    progress_bar,
    s3_client,
)
from service.cli.demo import DEMO_SEED, demo
from service.cli.fx import fx_app, report_app
from service.cli.profiles import profiles_app
from service.cli.render import ingest_capacity, render, spool_app
from service.observability import uvicorn_log_config
from service.settings import get_settings

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
app.add_typer(profiles_app, name="profiles")
app.add_typer(budgets_app, name="budgets")
app.add_typer(alerts_app, name="alerts")
app.add_typer(fx_app, name="fx")
app.add_typer(report_app, name="report")
app.add_typer(pools_app, name="pools")
app.add_typer(archive_app, name="archive")
app.command()(allocate)
app.command("break-even")(break_even)
invoice_app.command("events")(invoice_events)
app.command()(render)
app.command()(demo)
SHOWN_REFUSED = 20  # refused rows printed; the rest are counted (and all go to --rejects)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded server (data in RENDERLEDGER_DATA_DIR/pg) and print its URL."""
    settings = get_settings()
    if settings.database_url:
        raise fail("DATABASE_URL is set; renderledger uses that server, not an embedded one")
    out.print(plain(database_url(settings)), highlight=False)


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    stopped = database.stop_embedded(get_settings().data_dir)
    out.print("stopped" if stopped else "not running")


@db_app.command("url")
def db_url() -> None:
    """Print the database URL in use (starting the embedded server if needed)."""
    out.print(plain(database_url(get_settings())), highlight=False)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str | None, typer.Option(help="The tenant the key acts for")] = None,
    scopes: Annotated[str, typer.Option(help="Comma-separated: ingest, read, admin")] = "read",
    name: Annotated[str, typer.Option(help="A label to recognise the key by")] = "",
) -> None:
    """Make a key and print it; only its hash is stored, so keep it now."""
    from service.keys import KeyRefused, create_key

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
    from service.keys import revoke_key

    if not revoke_key(open_ledger(get_settings()).engine, key_id):
        raise fail(f"no live key {key_id!r}")
    out.print("revoked")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, tenant, scopes, name, created, revoked."""
    from service.keys import list_keys

    table = Table("id", "tenant", "scopes", "name", "created", "revoked")
    for key_id, tenant, scopes, name, created, revoked in list_keys(
        open_ledger(get_settings()).engine
    ):
        shown = ",".join(scopes)
        if tenant is not None and "admin" in scopes:
            shown += " (admin void: a tenant's key)"  # made before such keys were refused
        table.add_row(
            key_id, plain(tenant or "(admin)"), shown, plain(name), created, revoked or ""
        )
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
        f"{verb}: version {version.version} {plain(repr(version.name))}, "
        f"{len(version.prices)} SKUs, {version.currency}, "
        f"effective from {version.effective_from.isoformat()}",
        highlight=False,
    )


_VERSIONS_SQL = """
SELECT v.version, v.name, v.kind, v.effective_from, v.currency,
       p.sku, p.unit, p.unit_price_nanos, p.description
FROM price_versions v LEFT JOIN prices p USING (version)
WHERE %(name)s::text IS NULL OR v.name = %(name)s OR v.version::text = %(name)s
ORDER BY v.kind, v.effective_from, v.version, p.sku
"""


@prices_app.command("list")
def prices_list(
    version: Annotated[
        str | None, typer.Option("--version", help="Only this book (its name or number)")
    ] = None,
) -> None:
    """Every price book version, cost and what-if (which never rates events), and each one's
    SKUs with their unit prices."""
    with connection(open_ledger(get_settings()).engine) as raw:
        rows = raw.execute(_VERSIONS_SQL, {"name": version}).fetchall()
    if not rows:
        raise fail(f"no price book {version!r}" if version else "no price book loaded")
    books: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        books.setdefault(row[0], []).append(row)
    summary = Table("version", "name", "kind", "effective from", "currency", "SKUs")
    for number, skus in books.items():
        _, name, kind, start, currency, *_ = skus[0]
        counted = str(sum(r[5] is not None for r in skus))
        kind = kind.replace("_", "-")  # as the TOML file spells it
        summary.add_row(str(number), plain(name), kind, start.isoformat(), currency, counted)
    out.print(summary)
    for number, skus in books.items():
        _, name, kind, _, currency, *_ = skus[0]
        title = f"version {number}: {plain(name)} ({kind.replace('_', '-')})"
        table = Table("SKU", "unit", f"price ({currency})", "description", title=title)
        for *_, sku, unit, nanos, description in skus:
            if sku is not None:
                units = canonical_decimal(nanos.scaleb(-9))
                table.add_row(plain(sku), plain(unit), units, plain(description or ""))
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
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad", help="Skip and report bad rows instead of stopping at the first"
        ),
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(help="Write every refused row here as NDJSON (implies --skip-bad)"),
    ] = None,
    capacity: Annotated[
        bool,
        typer.Option(
            "--capacity", help="LOCATION is a capacity schedule CSV (pool,start,end,gpus)"
        ),
    ] = False,
) -> None:
    """Import cost events from NDJSON, CSV or Parquet, or CDN egress from a CDN access log
    (CloudFront standard format; see ingest/cdn_log.py), in batches, with a progress bar.

    A bad row stops the import, exit 1: the batches before it stay written.

    With --skip-bad (always, for a CDN log) bad rows are skipped and printed,
    the first 20 then a count; every good row is written, and the exit is 4.

    With --capacity, a local CSV of capacity held outside the renderer (header
    pool,start,end,gpus, optional event_id,description; ISO-8601 times with a zone):
    all or nothing, a bad row named by line and column, exit 1.
    """
    if capacity:
        return ingest_capacity(get_settings(), Path(location))
    from ingest.cdn_log import CdnStats
    from ingest.importer import ImportFailed, import_events, open_source
    from ingest.parsing import RowError

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
            sink = stack.enter_context(rejects.open("wb")) if rejects else None
        except (ValueError, OSError) as exc:
            raise fail(str(exc)) from exc

        def refused(error: RowError) -> None:
            if sink is not None:
                row = {"line": error.line, "field": error.field, "message": error.message}
                sink.write(orjson.dumps(row) + b"\n")

        with progress_bar() as progress:
            unit = "rows" if source.format == "parquet" else "bytes"
            task = progress.add_task(f"{source.name} ({unit})", total=source.total)
            try:
                report = import_events(
                    ledger,
                    source,
                    batch_size=size,
                    on_progress=lambda n: progress.advance(task, n),
                    skip_bad=skip_bad or rejects is not None or None,  # None: the format's
                    on_refused=refused,
                )
            except ImportFailed as exc:
                raise fail(str(exc)) from exc
    for error in sorted(report.first_refused, key=lambda e: e.line)[:SHOWN_REFUSED]:
        err.print(f"refused: {plain(error)}", highlight=False)
    hidden = report.refused - min(report.refused, SHOWN_REFUSED)
    if hidden:
        where = f"all in {rejects}" if rejects else "--rejects FILE keeps them all"
        err.print(f"… and {hidden} more refused rows ({plain(where)})", highlight=False)
    why = (
        " (already in the ledger with the same event_id and content, so not stored again: "
        "this file, or one with the same ids such as a sample of the same --seed, was "
        "imported before)"
        if report.duplicates
        else ""
    )
    out.print(
        f"{report.rows} rows: {report.accepted} accepted, {report.duplicates} duplicates{why}, "
        f"{report.refused} refused, {report.batches} batches"
        + (f"; {cdn.unmatched} log lines matched no known render" if cdn.unmatched else ""),
        highlight=False,
    )
    if report.refused:
        raise fail(f"{report.refused} row(s) refused and skipped; the others are written", 4)


@app.command()
def verify() -> None:
    """Recompute the hash chain over every event, in PostgreSQL and in the archive; name
    every broken block (exit 2)."""
    ledger = open_ledger(get_settings())
    from ledger.journal import last_seq

    with progress_bar() as progress:
        task = progress.add_task("verifying events", total=last_seq(ledger.engine))
        result = verify_chain(ledger.engine, progress=lambda n: progress.advance(task, n))
    if not result.ok:
        for broken in result.broken:
            where = f"block {broken.block_id}" if broken.block_id else "the log"
            err.print(f"broken: {where}: {plain(broken.reason)}", highlight=False)
        raise fail(
            f"{len(result.broken)} broken block(s) of {result.blocks_checked}; "
            f"{result.events_checked} events read",
            code=2,
        )
    pruned = (
        f" in PostgreSQL from seq {result.first_seq} (block {result.first_block}); the range "
        "before was pruned"
        if result.first_seq > 1
        else ""
    )
    out.print(
        f"ok: {result.blocks_checked} blocks, {result.events_checked} events verified{pruned}"
    )
    verify_history(ledger.engine, get_settings(), result)


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
            archive=settings,  # a rebuild reads archived history from the Iceberg table
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
    seed: Annotated[
        int, typer.Option(help=f"Same seed, same event_ids (`make run` used {DEMO_SEED})")
    ] = 1,
) -> None:
    """Write a generated sample of cost events as NDJSON, e.g. to try `renderledger ingest`.

    The default seed is not the demo's, so after `make run` these events are new ones.
    """
    with file.open("wb") as fh:
        n = 0
        for event in sample_events(renders, seed=seed):
            fh.write(orjson.dumps(event.model_dump(mode="json")) + b"\n")
            n += 1
    out.print(f"wrote {n} events of {renders} renders to {plain(file)}", highlight=False)


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
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker counts in files here; /metrics from any worker sums them all. Emptied
        # first: counts of a previous run would be added to this one's.
        shared = settings.data_dir / "prometheus"
        shutil.rmtree(shared, ignore_errors=True)
        shared.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared.resolve())
    os.environ.setdefault("RENDERLEDGER_LOG_FORMAT", "json")  # the workers read it too
    uvicorn.run(
        "service.http.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=uvicorn_log_config(),
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

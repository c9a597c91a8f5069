"""``renderledger demo``: what ``make run`` does, from an empty database to a serving API."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated
from uuid import NAMESPACE_URL, uuid5

import typer

from ingest.sample import regression_events, sample_events
from ledger import database
from ledger.chain import verify as verify_chain
from ledger.connections import connection
from ledger.errors import EventConflict
from ledger.events import CostEvent
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.billing.parties import Issuer
from service.cli.common import (
    DEFAULT_PRICES,
    EXAMPLE_PLANS,
    EXAMPLE_PROFILES,
    database_url,
    err,
    out,
    plain,
    progress_bar,
)
from service.cli.render import render_demo
from service.settings import Settings, get_settings

DEMO_ISSUER = Issuer(
    legal_name="Renderledger Demo Ltd",
    address=("1 Demo Street", "London EC1A 1AA"),
    country="GB",
    tax_id="GB123456789",
    email="billing@renderledger.example",
    payment_instructions=("Bank transfer to IBAN GB33 BUKB 2020 1555 5555 55",),
)
DEMO_SEED = 7  # `renderledger sample` defaults to another seed, so its events are new


def _append_all(ledger: Ledger, events: Iterator[CostEvent], label: str) -> tuple[int, int, str]:
    """(accepted, already there, first render id) for events appended 5,000 at a time."""
    accepted = duplicates = 0
    first_render = ""
    with progress_bar() as progress:
        task = progress.add_task(label, total=None)
        while chunk := list(itertools.islice(events, 5000)):
            first_render = first_render or str(chunk[0].render_id)
            try:
                receipt = ledger.append(chunk)
            except EventConflict:
                err.print("an older sample with the same ids is already in the ledger; kept it")
                break
            accepted += receipt.accepted
            duplicates += receipt.duplicates
            progress.advance(task, len(chunk))
    return accepted, duplicates, first_render


def _alerts(ledger: Ledger, settings: Settings) -> None:
    """A detection pass over the demo's recent series, so an alert is there to be seen."""
    from reports.alerts.config import rules
    from reports.alerts.service import run_detection
    from reports.alerts.store import alerts

    # Backfill: the baseline days arrived just now, after any earlier pass refreshed them.
    result = run_detection(ledger.engine, rules(settings.alerts), backfill=True)
    with connection(ledger.engine) as raw:
        found = alerts(raw, status="open")
    out.print(
        f"[bold]alerts[/] {result.series} series judged, {len(result.opened)} opened, "
        f"{len(found)} open:",
        highlight=False,
    )
    for a in found[:3]:
        out.print(f"  {plain(a['message'])}", highlight=False)


POOL_DAY = datetime(2026, 10, 20, 8, tzinfo=UTC)


def _capacity(ledger: Ledger) -> None:
    """The example pools, two H100s held four hours on 20 October and rendered on about 45 %
    of the time, and two overheads; then the allocation of what that cost to tenants."""
    from ingest.sample import pooled_events
    from ledger.actual_costs import CapacityHeld, OverheadIncurred, schedule_event_id
    from ledger.capacity import load_pools, record
    from ledger.pools import parse_pool_file
    from reports.allocation_job import run_allocation
    from service.cli.common import BOOKS

    load_pools(ledger.engine, parse_pool_file((BOOKS / "example_pools.toml").read_text()))
    pool, end = "h100-ondemand", POOL_DAY + timedelta(hours=4)
    held = CapacityHeld(
        event_id=schedule_event_id(pool, POOL_DAY, end, Decimal(2)),
        pool=pool,
        starts_at=POOL_DAY,
        ends_at=end,
        gpus=Decimal(2),
        description="demo: two H100s rented by the hour",
    )
    month = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    overheads = [
        OverheadIncurred(
            event_id=uuid5(NAMESPACE_URL, "renderledger-demo/checkpoints-2026-10"),
            account="platform",
            category="checkpoint_storage",
            amount=Decimal("23.00"),
            currency="USD",
            starts_at=month[0],
            ends_at=month[1],
            allocate_by="renders",
            description="demo: 1 TB of checkpoints, October",
        ),
        OverheadIncurred(
            event_id=uuid5(NAMESPACE_URL, "renderledger-demo/acme-lora-2026-10"),
            account="tenant:acme",
            category="training",
            amount=Decimal("41.25"),
            currency="USD",
            starts_at=datetime(2026, 10, 5, tzinfo=UTC),
            ends_at=datetime(2026, 10, 5, 6, tzinfo=UTC),
            description="demo: acme's LoRA fine-tune, 6 A100-hours",
        ),
    ]
    record(ledger.engine, [held, *overheads])
    accepted, _, _ = _append_all(
        ledger, pooled_events(POOL_DAY, 4, 2, 0.45, pool), "ingesting renders on the H100 pool"
    )
    result = run_allocation(ledger.engine)
    out.print(
        f"[bold]capacity[/] 3 pools, 2 H100s held 4 h on 2026-10-20 with {accepted} events on "
        f"them, 2 overheads; {result.hours} hours allocated"
    )


def demo(
    renders: Annotated[int, typer.Option(help="Sample renders to ingest")] = 2000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after ingesting")] = False,
    render_images: Annotated[bool, typer.Option(help="Render a few images (tiny preset)")] = True,
) -> None:
    """What `make run` does: database, migrations, default prices, a sample of October, a
    recent series with a cost regression (and its alert), then the API."""
    settings = get_settings()
    url = database_url(settings)
    out.print(f"[bold]database[/] {plain(url)}", highlight=False)
    database.migrate(url)
    ledger = Ledger(database.make_engine(url, app_role=settings.db.app_role))
    version, created = ledger.load_prices(load_price_book_file(DEFAULT_PRICES))
    state = "loaded" if created else "present"
    out.print(f"[bold]price book[/] {plain(repr(version.name))} ({state})")
    accepted, duplicates, first_render = _append_all(
        ledger, sample_events(renders, seed=DEMO_SEED), "ingesting sample events"
    )
    out.print(f"[bold]sample[/] {accepted} events accepted, {duplicates} already there")
    accepted, duplicates, _ = _append_all(
        ledger, regression_events(datetime.now(UTC)), "ingesting the last 7 days of acme"
    )
    out.print(
        f"[bold]recent[/] {accepted} events of acme/architecture over the last 7 days, "
        f"{duplicates} already there; its UNet went from int8 to fp16 two hours ago"
    )
    images = settings.data_dir / "images"
    rendered = render_demo(settings, ledger, images) if render_images else []
    if rendered:
        out.print(
            f"[bold]renders[/] {len(rendered)} images in {plain(images)}, "
            "their events in the ledger"
        )
    result = verify_chain(ledger.engine)
    verdict = "ok" if result.ok else plain(result.reason)
    out.print(f"[bold]verify[/] {verdict}: {result.events_checked} events")
    for whatif in sorted((DEFAULT_PRICES.parent / "whatif").glob("*.toml")):
        ledger.load_prices(load_price_book_file(whatif))
    from reports.billing.parties import read_profiles, store_profile
    from reports.billing.plans import read_file as read_plans
    from reports.billing.plans import store_grant, store_plan
    from reports.jobs import run_rollup

    _capacity(ledger)
    rolled = run_rollup(ledger.engine)
    out.print(f"[bold]rollup[/] {rolled.events} new events rolled up")
    _alerts(ledger, settings)
    plans, grants = read_plans(EXAMPLE_PLANS)
    profiles = read_profiles(EXAMPLE_PROFILES)
    with connection(ledger.engine, transaction=True) as raw:
        added = sum(store_plan(raw, p) for p in plans) + sum(store_grant(raw, g) for g in grants)
        added += sum(store_profile(raw, p) for p in profiles)
    out.print(f"[bold]billing[/] example plans and profiles {'loaded' if added else 'present'}")
    if settings.billing.issuer is None:
        settings.billing.issuer = DEMO_ISSUER
        out.print(
            "[bold]billing[/] issuer: a demo one; set RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME "
            "and its address before sending invoices"
        )
    if no_serve:
        return
    _serve(settings, ledger, host, port, rendered[0] if rendered else first_render)


def _serve(settings: Settings, ledger: Ledger, host: str, port: int, render: str) -> None:
    key = _demo_key(settings, ledger)
    base = f"http://{host}:{port}"
    where = plain(settings.data_dir / "demo-admin.key")
    october = "from=2026-10-01&to=2026-11-01"
    out.print(
        f"""
[bold green]renderledger is serving[/] (Ctrl-C to stop; `renderledger db stop` ends PostgreSQL)
Every endpoint but /healthz and the API docs wants a key; here is an admin one ({where}):
  export RL_KEY={key}
  curl -H "Authorization: Bearer $RL_KEY" '{base}/v1/tenants/acme/report?group_by=use_case'
In the API docs, "Authorize" takes the same key.
  API docs     {base}/docs
  dashboard    {base}/dashboard  (sign in with the key above; acme: {base}/dashboard/tenants/acme)
  health       {base}/healthz
  event log    {base}/v1/events?limit=20
  one render   {base}/v1/renders/{render}
  report       {base}/v1/tenants/acme/report?from=2026-10-01&to=2026-12-01&group_by=use_case,stage
  vs an API    {base}/v1/tenants/acme/report?group_by=use_case&what_if=openai-dalle3-standard
  as CSV       {base}/v1/tenants/acme/report?group_by=day&format=csv
  invoice      {base}/v1/tenants/acme/invoices/2026-10  (a draft; add ?format=pdf or csv)
  in EUR       {base}/v1/tenants/globex/invoices/2026-10?format=pdf  (VAT 19 %)
  internal     {base}/v1/tenants/globex/invoices/2026-10?view=internal  (cost basis, admin)
  alerts       {base}/v1/alerts?status=open  (`renderledger alerts list` shows the same)
  pools        {base}/v1/pools/report?{october}
  fully loaded {base}/v1/tenants/acme/fully-loaded?{october}
  break-even   {base}/v1/break-even?pool=a100-reserved&api_book=sdxl-api-0004&{october}
  metrics      {base}/metrics
""",
        highlight=False,
    )
    import uvicorn

    from service.http.app import create_app
    from service.observability import uvicorn_log_config

    settings.log_format, settings.log_level = "json", "WARNING"  # JSON lines; warnings up
    app = create_app(settings, ledger)
    uvicorn.run(app, host=host, port=port, log_level="warning", log_config=uvicorn_log_config())


def _demo_key(settings: Settings, ledger: Ledger) -> str:
    """The demo's admin key, reused across runs while it stays valid."""
    from service.keys import authenticate, create_key

    path = settings.data_dir / "demo-admin.key"
    if path.exists() and authenticate(ledger.engine, key := path.read_text().strip()):
        return key
    key = create_key(ledger.engine, None, ["admin"], "make run demo")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key

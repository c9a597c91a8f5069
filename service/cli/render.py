"""The renderer's commands: composed here, so ``render/`` knows nothing of settings or the CLI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ingest.client import Emitter, HttpTransport, LedgerTransport, Spool, Transport
from ledger import database
from ledger.capacity import read_pools
from ledger.connections import connection
from ledger.pools import POOL_PATTERN
from ledger.store import Ledger
from render.caches import CacheStore
from render.heartbeat import CapacitySink, Heartbeat, HttpCapacitySink, LedgerCapacitySink
from service.cli.common import err, fail, open_ledger, out, plain, progress_bar, s3_client
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    from render.renderer import Renderer

spool_app = typer.Typer(help="The local spool of events not yet delivered.", no_args_is_help=True)


def connect(
    settings: Settings, ledger: Ledger | None = None
) -> tuple[Transport, CacheStore | None]:
    """Where the renderer's events go, and where its caches live.

    Sending over HTTP, the ledger's database is never opened: a render host needs only the
    API's URL and key (and, for caches, ``render.cache_url``).
    """
    if settings.render.ledger_url:
        transport = HttpTransport(
            settings.render.ledger_url, api_key=settings.render.ledger_api_key
        )
        url = settings.render.cache_url
        return transport, CacheStore(database.make_engine(url, pool_size=2)) if url else None
    ledger = ledger or open_ledger(settings)
    return LedgerTransport(ledger), CacheStore(ledger.engine)


def make_heartbeat(settings: Settings, pool: str, ledger: Ledger | None = None) -> Heartbeat:
    """A heartbeat for ``pool``, not started, to where the renderer's events go.

    In-process, the pool must be declared already (checked here, so a typo fails before the
    first render); over HTTP the API checks it, and a refusal is reported when it stops."""
    if not re.match(POOL_PATTERN, pool):
        raise ValueError(f"--pool {pool!r}: lowercase letters, digits, '_', '.' and '-' only")
    sink: CapacitySink
    r = settings.render
    if r.ledger_url:
        sink = HttpCapacitySink(r.ledger_url, api_key=r.capacity_api_key or r.ledger_api_key)
    else:
        ledger = ledger or open_ledger(settings)
        with connection(ledger.engine) as raw:
            declared = read_pools(raw).names
        if pool not in declared:
            raise ValueError(
                f"--pool {pool!r} is not declared (declared: {', '.join(declared) or 'none'}); "
                "declare it with `renderledger pools load FILE`"
            )
        sink = LedgerCapacitySink(ledger.engine)
    return Heartbeat(sink, pool, gpus=r.pool_gpus, interval_s=r.heartbeat_s)


def make_renderer(
    settings: Settings,
    ledger: Ledger | None = None,
    *,
    preset: str = "tiny",
    weights: Path | None = None,
    precision: str = "fp32",
    out_dir: Path | None = None,
    bucket: str | None = None,
    gpu_sku: str | None = None,
    pool: str | None = None,
) -> Renderer:
    """The renderer, its heartbeat started when it holds a pool (``pool`` or
    ``render.pool``): ``Renderer.close()`` stops it with a final beat."""
    from render.caption import CaptionClient
    from render.presets import build
    from render.renderer import Renderer
    from render.storage import ImageStore, LocalStore, S3Store

    transport, cache = connect(settings, ledger)
    if isinstance(transport, LedgerTransport):
        ledger = transport.ledger
    pool = pool or settings.render.pool
    heartbeat = make_heartbeat(settings, pool, ledger) if pool else None
    store: ImageStore | None = None
    if bucket:
        store = S3Store(s3_client(settings), bucket)
    elif out_dir is not None:
        store = LocalStore(out_dir)
    renderer = Renderer(
        build(preset, weights=weights, precision=precision),
        Emitter(transport, Spool(settings.spool_dir)),
        captions=CaptionClient(settings.caption.providers, cache, retries=settings.caption.retries),
        cache=cache,
        store=store,
        gpu_sku=gpu_sku or settings.render.gpu_sku,
        storage_months=settings.render.storage_months,
        precision=precision,
        pool=pool,
        heartbeat=heartbeat,
    )
    if heartbeat is not None:  # the GPU is held from here until close()
        heartbeat.start()
    return renderer


def close_renderer(renderer: Renderer) -> int:
    """Stop the heartbeat and the emitter; say what the heartbeat recorded. Batches spooled."""
    left = renderer.close()
    hb = renderer.heartbeat
    if hb is not None:
        held = hb.acknowledged_until
        missing = hb.unacknowledged.total_seconds()
        if missing > 0:
            err.print(
                f"warning: {missing:.1f}s of capacity held on pool {plain(hb.pool)} not "
                f"recorded: {plain(hb.last_error)}",
                highlight=False,
            )
        elif held is not None:
            out.print(
                f"pool {plain(hb.pool)}: capacity recorded up to {held.isoformat()} "
                f"in {hb.beats} heartbeat(s)",
                highlight=False,
            )
    return left


def render(
    tenant: Annotated[str, typer.Option(help="Tenant the renders are for")],
    prompt: Annotated[str, typer.Option(help="What to render")],
    use_case: Annotated[str, typer.Option(help="e.g. ecommerce, social")] = "default",
    n: Annotated[int, typer.Option("--n", help="Images (each is its own render)")] = 1,
    preset: Annotated[str, typer.Option(help="tiny (CPU, seconds) or sdxl (GPU)")] = "tiny",
    weights: Annotated[Path | None, typer.Option(help="A local diffusers folder")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps")] = 25,
    size: Annotated[int | None, typer.Option(help="Width and height (64 tiny, 1024 sdxl)")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale")] = 5.0,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call")] = 1,
    precision: Annotated[str, typer.Option(help="fp32, fp16 (GPU) or bf16")] = "fp32",
    image_format: Annotated[str, typer.Option("--format", help="webp, jpeg or png")] = "webp",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the images")] = None,
    bucket: Annotated[str | None, typer.Option(help="S3 bucket for the images")] = None,
    seed: Annotated[int | None, typer.Option(help="For reproducible images")] = None,
    gpu_sku: Annotated[str | None, typer.Option(help="SKU for an unknown GPU")] = None,
    pool: Annotated[
        str | None,
        typer.Option(help="The GPU pool this renderer holds: heartbeats record its capacity"),
    ] = None,
) -> None:
    """Render images; every stage of every render lands in the ledger as priced events."""
    from ledger.events import TENANT_RE
    from render.renderer import RenderRequest

    settings = get_settings()
    if not TENANT_RE.match(tenant):
        raise fail(f"--tenant {tenant!r}: lowercase letters, digits, '_' and '-' only")
    if n < 1 or batch_size < 1 or steps < 1:
        raise fail("--n, --batch-size and --steps must be at least 1")
    try:
        renderer = make_renderer(
            settings,
            preset=preset,
            weights=weights,
            precision=precision,
            out_dir=out_dir or Path("out"),
            bucket=bucket or settings.render.bucket,
            gpu_sku=gpu_sku,
            pool=pool,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    side = size or (1024 if preset == "sdxl" else 64)
    request = RenderRequest(
        tenant,
        use_case,
        prompt,
        n=n,
        steps=steps,
        width=side,
        height=side,
        guidance=guidance,
        batch_size=batch_size,
        seed=seed,
        image_format=image_format,
    )
    try:
        with progress_bar() as bar:
            task = bar.add_task("rendering", total=n)
            results = renderer.render(request, on_done=lambda k: bar.advance(task, k))
    finally:
        left = close_renderer(renderer)  # the held GPU stops paying here
    for r in results:
        status = r.uri if r.outcome.value == "delivered" else f"FAILED {r.error}"
        status = plain(status)  # errors quote shapes like [1, 4, 64, 64]: not markup
        out.print(
            f"{r.render_id}  {r.outcome.value:9}  {r.latency_s:6.2f}s  {status}", highlight=False
        )
    failed = sum(r.outcome.value != "delivered" for r in results)
    out.print(
        f"{len(results) - failed} delivered, {failed} failed; "
        f"{sum(len(r.events) for r in results)} cost events"
        + (f", {left} batch(es) spooled until the ledger is back" if left else "")
    )
    if failed:
        raise typer.Exit(1)


@spool_app.command("flush")
def spool_flush() -> None:
    """Deliver spooled events now (to DATABASE_URL, or RENDERLEDGER_RENDER__LEDGER_URL).

    Waits for a renderer or another flush already delivering from the same spool.
    """
    settings = get_settings()
    spool = Spool(settings.spool_dir)
    if not spool.pending():
        out.print("spool is empty")
        return
    set_aside = len(spool.rejected())
    transport, _ = connect(settings)
    try:
        delivered, left = spool.flush(transport)
    finally:
        if isinstance(transport, HttpTransport):
            transport.close()
    refused = len(spool.rejected()) - set_aside
    out.print(
        f"{delivered} batch(es) delivered, {left} left"
        + (f", {refused} refused and moved to {spool.rejected_dir}" if refused > 0 else "")
    )
    if left:
        raise fail("the ledger is still unreachable; the events stay spooled")


@spool_app.command("requeue")
def spool_requeue() -> None:
    """Put refused batches back in the spool, e.g. after fixing the API key; then flush."""
    moved = Spool(get_settings().spool_dir).requeue()
    out.print(f"{moved} batch(es) back in the spool")


DEMO_JOBS = (
    ("acme", "ecommerce", "white sneaker on a beach, product photo"),
    ("acme", "social", "a cat astronaut, poster"),
    ("globex", "game_assets", "isometric stone tower, game sprite"),
    ("initech", "architecture", "glass office lobby at dusk"),
)


def render_demo(settings: Settings, ledger: Ledger, out_dir: Path, per_job: int = 2) -> list[str]:
    """A few real renders with the tiny preset, so the ledger holds the renderer's own events."""
    from render.renderer import RenderRequest

    renderer = make_renderer(settings, ledger, out_dir=out_dir)
    render_ids = []
    try:
        with progress_bar() as bar:
            total = per_job * len(DEMO_JOBS)
            task = bar.add_task("rendering demo images (tiny preset)", total=total)
            for tenant, use_case, prompt in DEMO_JOBS:
                request = RenderRequest(tenant, use_case, prompt, n=per_job, steps=12, seed=1)
                results = renderer.render(request, on_done=lambda k: bar.advance(task, k))
                render_ids += [str(r.render_id) for r in results]
    finally:
        renderer.close()
    return render_ids


def ingest_capacity(settings: Settings, file: Path) -> None:
    """``renderledger ingest --capacity FILE.csv``: a capacity schedule, all or nothing."""
    from ingest.capacity_schedule import ScheduleInvalid, load_schedule

    ledger = open_ledger(settings)
    try:
        loaded = load_schedule(ledger.engine, file)
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror}") from exc
    except ScheduleInvalid as exc:
        for error in exc.errors:
            err.print(f"refused: {plain(error)}", highlight=False)
        more = exc.total - len(exc.errors)
        raise fail(
            f"{file}: {exc.total} bad row(s)"
            + (f" ({more} not shown)" if more else "")
            + "; nothing written"
        ) from exc
    out.print(
        f"{loaded.rows} capacity rows: {loaded.accepted} accepted, {loaded.duplicates} "
        "duplicates"
        + (" (already recorded: this schedule was imported before)" if loaded.duplicates else ""),
        highlight=False,
    )

"""The API process: one engine, one ledger, the routers of each package."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.parsing import EVENT
from ledger.database import make_engine, resolve_url
from ledger.store import Ledger
from reports.alerts.config import after_rollup, deliver_webhooks
from reports.archive_export import export_sealed
from reports.billing.notices import deliver_billing_webhooks
from reports.budgets import judge as judge_budgets
from reports.metrics import Metrics
from reports.scheduler import start as start_scheduler
from service.cli.common import s3_client
from service.http.admin import router as admin_router
from service.http.alerts import router as alerts_router
from service.http.billing_events import router as billing_events_router
from service.http.budgets import router as budgets_router
from service.http.capacity import router as capacity_router
from service.http.dashboard import install_dashboard
from service.http.dashboard_docs import install_docs
from service.http.deps import AdminKey, LedgerDep
from service.http.errors import UNAVAILABLE, database_unavailable, responses, validation_error
from service.http.events import router as events_router
from service.http.invoices import router as billing_router
from service.http.profiles import router as profiles_router
from service.http.reports import router as reports_router
from service.observability import RequestIds, configure_logging, instrument
from service.settings import Settings, get_settings

_YOUNG_THRESHOLD = 50_000  # objects allocated, net, between young-generation collections


def create_app(
    settings: Settings | None = None, ledger: Ledger | None = None, *, schedule: bool = True
) -> FastAPI:
    """Build the app; a ``ledger`` handed in (tests, the demo) is used as is and not disposed.

    With ``schedule`` (and a non-zero ``reports.rollup_interval_s``) the rollup runs in this
    process on an interval.
    """
    settings = settings or get_settings()
    if settings.log_format == "json":
        configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = ledger is None
        if own:
            url = resolve_url(settings.database_url, settings.data_dir)
            engine = make_engine(
                url, app_role=settings.db.app_role, pool_size=settings.db.pool_size
            )
            app.state.ledger = Ledger(engine, max_batch_events=settings.ingest.max_batch_events)
        else:
            app.state.ledger = ledger
        app.state.settings = settings
        app.state.metrics = Metrics(app.state.ledger.engine, settings.reports.metrics_currency)
        # Everything alive after start-up lives as long as the process: keep it out of the
        # collector's full passes, which otherwise walk it on every Nth ingest request.
        gc.collect()
        gc.freeze()
        # An ingest request holds thousands of young objects (its events and rows) until it
        # answers, and they die by reference count. At the default threshold (700) the
        # collector scanned and promoted them about ten times a 1,000-event request; above
        # what two requests in flight hold, it runs on what outlives them.
        gc.set_threshold(_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        scheduler = None
        if schedule:
            target = settings.invoice_drafts_to
            scheduler = start_scheduler(
                app.state.ledger.engine,
                settings.reports.rollup_interval_s,
                settings.reports.rollup_chunk_events,
                invoices_to=target,
                s3=s3_client(settings) if target and target.startswith("s3://") else None,
                after_rollup=(
                    after_rollup(app.state.ledger.engine, settings.alerts)
                    if settings.alerts.enabled
                    else None
                ),
                webhooks=(
                    deliver_webhooks(app.state.ledger.engine, settings.alerts)
                    if settings.alerts.enabled
                    else None
                ),
                utilisation_floor=(
                    settings.alerts.utilisation_floor if settings.alerts.enabled else None
                ),
                billing_webhooks=deliver_billing_webhooks(
                    app.state.ledger.engine, settings.billing
                ),
                budgets=(
                    partial(judge_budgets, app.state.ledger.engine)
                    if settings.alerts.enabled
                    else None
                ),
                issuer=settings.billing.issuer,
                archive=partial(export_sealed, app.state.ledger.engine, settings),
                archive_interval_s=settings.archive.interval_s,
                history=settings,  # the monthly drafts read the archive + hot tail
            )
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.shutdown(wait=True)
            if app.state.tracer_provider is not None:
                app.state.tracer_provider.force_flush()
            if own:
                app.state.ledger.engine.dispose()

    # The docs (/docs, /redoc, /openapi.json) are public like /healthz: the schema is no
    # secret, and "Authorize" in /docs is how a key holder tries the API.
    app = FastAPI(
        title="renderledger",
        version="0.1.0",
        summary="Cost ledger for diffusion image generation: priced, append-only, verifiable.",
        lifespan=lifespan,
        responses=responses(503),
        docs_url=None,  # served from the package's files by install_docs: no CDN
        redoc_url=None,
    )
    app.add_middleware(IngestTiming)
    app.add_middleware(RequestIds)
    app.state.tracer_provider = instrument(app)
    app.add_exception_handler(RequestValidationError, validation_error)
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)
    app.include_router(events_router)
    app.include_router(reports_router)
    app.include_router(admin_router)
    app.include_router(billing_router)
    app.include_router(billing_events_router)
    app.include_router(profiles_router)
    app.include_router(budgets_router)
    app.include_router(alerts_router)
    app.include_router(capacity_router)
    install_docs(app)
    install_dashboard(app)

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        responses=responses(401, 403),
        response_class=PlainTextResponse,
    )
    def metrics(request: Request, _key: AdminKey) -> Response:
        return Response(request.app.state.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    def index() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/healthz", tags=["ops"], summary="Liveness and database reachability")
    def healthz(ledger: LedgerDep) -> dict[str, Any]:
        with ledger.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok"}

    _publish_event_schema(app)
    return app


class IngestTiming:
    """Times each ``POST /v1/events`` and counts the events it accepted, into the app's
    metrics. Pure ASGI: Starlette's ``@app.middleware("http")`` wrapped every request of
    every route in a task and a stream (0.3 ms a report request, for a metric of one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/events" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics = scope["app"].state.metrics
                metrics.observe_ingest(started, message["status"])
                headers = dict(message.get("headers", []))
                accepted = headers.get(b"x-accepted-events")
                if accepted:
                    metrics.ingested.inc(int(accepted))
            await send(message)

        await self.app(scope, receive, send_timed)


def _publish_event_schema(app: FastAPI) -> None:
    """The events body is read raw (for speed and NDJSON), so its schema is added by hand."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        event_schema = EVENT.json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event_schema.pop("$defs", {}))
        components["CostEvent"] = event_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override hook

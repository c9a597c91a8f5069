"""``/dashboard``: a tenant's costs in the browser, and every tenant's for an admin.

Server-rendered HTML (Jinja2) with charts drawn as SVG on the server (``dashboard_charts``):
no script, no CDN, no build step, so it works offline. The view is in the query string
(``from``, ``to``, ``use_case``, ``currency``, ``what_if``) and can be shared; the key is in
an HttpOnly cookie (``dashboard_auth``) and never in a URL. Pages read the report API's
query functions (``dashboard_data``) and write numbers with one formatter
(``dashboard_format``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ledger.connections import connection
from ledger.events import TENANT_RE
from reports.alerts.store import AlertError, acknowledge, alerts
from reports.billing.exports import MEDIA_TYPES, file_stem, render
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import invoice
from reports.billing.months import MonthError, parse_period
from service.http import dashboard_format
from service.http.dashboard_auth import (
    PATH,
    LoginRefused,
    check_key,
    forget,
    local_target,
    read_form,
    remember,
    same_origin,
    signed_in,
    to_login,
)
from service.http.dashboard_data import FilterError, Filters, admin_view, tenant_view
from service.http.dashboard_views import (
    admin_charts,
    budget_chart,
    pools_chart,
    tenant_charts,
    what_if_chart,
)
from service.http.deps import ensure_tenant, get_app_settings, get_ledger
from service.keys import Principal

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    money=dashboard_format.money,
    amount=dashboard_format.amount,
    percent=dashboard_format.percent,
    change=dashboard_format.change,
    ms=dashboard_format.milliseconds,
    count=dashboard_format.count,
    nanos=dashboard_format.nanos,
    decimal=dashboard_format.decimal,
)
templates.env.globals.update(
    points=dashboard_format.points,
    minor=dashboard_format.minor,
    api_value=dashboard_format.api_value,
    DASH=dashboard_format.DASH,
)
router = APIRouter(prefix=PATH, include_in_schema=False)


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(f"{PATH}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")


def _page(
    request: Request, name: str, code: int = 200, started: float | None = None, **context: Any
) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=code)
    response.headers["cache-control"] = "no-store"  # figures of a tenant: never cached
    response.headers["referrer-policy"] = "same-origin"
    if started is not None:
        elapsed = (time.perf_counter() - started) * 1000
        response.headers["server-timing"] = f"app;dur={elapsed:.1f}"
    return response


def _error(request: Request, status: int, message: str, who: Principal | None) -> HTMLResponse:
    return _page(request, "error.html", status, who=who, status=status, message=message)


def _message(exc: HTTPException) -> str:
    detail = exc.detail
    return str(detail.get("message", detail)) if isinstance(detail, dict) else str(detail)


def _filters(request: Request) -> Filters:
    return Filters.parse(dict(request.query_params))


@router.get("/login", response_model=None)
def login_form(request: Request, next: str | None = None) -> Response:
    if signed_in(request) is not None:
        return RedirectResponse(local_target(next), status_code=303)
    return _page(request, "login.html", target=local_target(next), error=None)


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    form = await read_form(request)
    target = local_target(form.get("next"))
    if not same_origin(request):
        return _page(request, "login.html", 403, target=target, error="another site's form")
    try:
        await run_in_threadpool(check_key, request, form.get("api_key", ""))
    except LoginRefused as exc:
        return _page(request, "login.html", 401, target=target, error=str(exc))
    response = RedirectResponse(target, status_code=303)
    remember(response, request, form.get("api_key", ""))
    return response


@router.post("/logout", response_model=None)
def logout(request: Request) -> Response:
    response = RedirectResponse(f"{PATH}/login", status_code=303)
    forget(response, request)
    return response


@router.get("", response_model=None)
def home(request: Request) -> Response:
    """An admin's overview of every tenant; a tenant's key goes to its own page."""
    started = time.perf_counter()
    who = signed_in(request)
    if who is None:
        return to_login(request)
    try:
        f = _filters(request)
    except FilterError as exc:
        return _error(request, 422, str(exc), who)
    if not who.is_admin:
        return RedirectResponse(f"{PATH}/tenants/{who.tenant_id}?{f.query()}", status_code=303)
    try:
        with connection(get_ledger(request).engine) as raw:
            view = admin_view(raw, f)
    except HTTPException as exc:
        return _error(request, exc.status_code, _message(exc), who)
    charts = {
        c: admin_charts(view, c, lambda t: f"{PATH}/tenants/{t}?{f.query()}")
        for c in view.currencies
    }
    return _page(
        request,
        "admin.html",
        started=started,
        who=who,
        view=view,
        f=f,
        charts=charts,
        pools=pools_chart(view),
    )


@router.get("/tenants/{tenant}", response_model=None)
def tenant_page(request: Request, tenant: str) -> Response:
    started = time.perf_counter()
    who = signed_in(request)
    if who is None:
        return to_login(request)
    if not TENANT_RE.match(tenant):
        return _error(request, 404, f"no tenant {tenant!r}", who)
    try:
        f = _filters(request)
    except FilterError as exc:
        return _error(request, 422, str(exc), who)
    ledger = get_ledger(request)
    try:
        with connection(ledger.engine) as raw:
            ensure_tenant(raw, who, tenant)  # another tenant's page is an unknown one: 404
            view = tenant_view(raw, ledger, tenant, f, admin=who.is_admin)
    except HTTPException as exc:
        return _error(request, exc.status_code, _message(exc), who)
    f = view.filters
    sections = [
        {
            "view": v,
            "charts": tenant_charts(v, f),
            "what_if": what_if_chart(v.row, f.what_if),
        }
        for v in view.currencies
    ]
    return _page(
        request,
        "tenant.html",
        started=started,
        who=who,
        view=view,
        f=f,
        sections=sections,
        budgets=budget_chart(view.budgets),
    )


@router.post("/tenants/{tenant}/alerts/{alert_id}/ack", response_model=None)
async def ack(request: Request, tenant: str, alert_id: str) -> Response:
    """The page's ack button: a plain form POST, checked as ``POST /v1/alerts/{id}/ack``."""
    form = await read_form(request)
    return await run_in_threadpool(_ack, request, tenant, alert_id, form)


def _ack(request: Request, tenant: str, alert_id: str, form: dict[str, str]) -> Response:
    who = signed_in(request)
    if who is None:
        return to_login(request)
    if not same_origin(request):
        return _error(request, 403, "this form was sent from another site", who)
    try:
        wanted = uuid.UUID(alert_id)
    except ValueError:
        return _error(request, 404, f"no alert {alert_id}", who)
    engine = get_ledger(request).engine
    with connection(engine) as raw:
        found = alerts(raw, alert_id=wanted)
    if not found or not who.can_see(found[0]["tenant"]) or found[0]["tenant"] != tenant:
        return _error(request, 404, f"no alert {alert_id}", who)
    try:
        with connection(engine, transaction=True) as raw:
            acknowledge(raw, wanted, f"key:{who.key_id}")
    except AlertError as exc:
        return _error(request, 409, str(exc), who)
    back = form.get("back", "")
    return RedirectResponse(local_target(f"{PATH}/tenants/{tenant}?{back}"), status_code=303)


@router.get("/tenants/{tenant}/invoices/{name}", response_model=None)
def invoice_file(request: Request, tenant: str, name: str) -> Response:
    """``2026-10.pdf`` or ``2026-10.csv``: the customer's copy, as the API serves it."""
    who = signed_in(request)
    if who is None:
        return to_login(request)
    month, _, fmt = name.rpartition(".")
    if fmt not in ("pdf", "csv") or not TENANT_RE.match(tenant):
        return _error(request, 404, f"no invoice {name!r}", who)
    try:
        period = parse_period(month)
    except MonthError as exc:
        return _error(request, 404, str(exc), who)
    issuer = get_app_settings(request).billing.issuer
    try:
        with connection(get_ledger(request).engine) as raw:
            ensure_tenant(raw, who, tenant)
            doc = invoice(raw, tenant, period, issuer)
    except HTTPException as exc:
        return _error(request, exc.status_code, _message(exc), who)
    except InvoiceError as exc:
        return _error(request, 422, str(exc), who)
    stem = file_stem(doc).replace("/", "-")
    return Response(
        render(doc, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "content-disposition": f'attachment; filename="{stem}.{fmt}"',
            "cache-control": "no-store",
        },
    )

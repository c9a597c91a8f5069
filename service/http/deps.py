"""``Annotated`` dependencies the routers share: the ledger, the settings, the caller's key."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.store import Ledger
from service.http.errors import http_error
from service.keys import Principal, authenticate
from service.settings import Settings


def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# The dependencies that do no I/O are ``async``: FastAPI runs a plain ``def`` one in its
# thread pool, a hop per dependency per request.
async def _ledger(request: Request) -> Ledger:
    return get_ledger(request)


async def _settings(request: Request) -> Settings:
    return get_app_settings(request)


LedgerDep = Annotated[Ledger, Depends(_ledger)]
SettingsDep = Annotated[Settings, Depends(_settings)]


bearer = HTTPBearer(
    auto_error=False,
    description="An `rlk_…` key from `renderledger keys create`; `X-API-Key` works too.",
)


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    presented = credentials.credentials if credentials else request.headers.get("x-api-key")
    challenge = {"WWW-Authenticate": "Bearer"}
    if not presented:
        raise http_error(
            "an API key is required: Authorization: Bearer rlk_…", 401, headers=challenge
        )
    principal = authenticate(request.app.state.ledger.engine, presented)
    if principal is None:
        raise http_error("unknown or revoked API key", 401, headers=challenge)
    return principal


def require(scope: str) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency that lets through keys with ``scope`` (admin keys have every scope)."""

    async def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.has(scope):
            raise http_error(f"this key lacks the {scope!r} scope", 403)
        return principal

    return check


def ensure_tenant(raw: psycopg.Connection[Any], key: Principal, tenant: str) -> None:
    """404 unless the key may see ``tenant`` and it exists: another tenant's answers exactly
    like one never seen, so a key cannot probe which tenants exist."""
    if key.can_see(tenant):
        row = raw.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant,)).fetchone()
        if row is not None:
            return
    raise http_error(f"no tenant {tenant!r}", 404)


IngestKey = Annotated[Principal, Depends(require("ingest"))]
ReadKey = Annotated[Principal, Depends(require("read"))]
AdminKey = Annotated[Principal, Depends(require("admin"))]

"""One error shape for every endpoint: ``{"detail": {"message", "errors", "event_ids"}}``."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import psycopg
import sqlalchemy.exc
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ledger.database import DatabaseUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5  # a restart or failover is seconds; clients back off from there


class FieldErrorOut(BaseModel):
    index: int
    field: str
    message: str


class ErrorOut(BaseModel):
    message: str
    errors: list[FieldErrorOut] = []
    event_ids: list[UUID] = []


class ErrorBody(BaseModel):
    detail: ErrorOut


def http_error(
    message: str, status: int = 422, *, headers: dict[str, str] | None = None, **extra: object
) -> HTTPException:
    """An error of our own in the shape above (the handler wraps ``detail``); ``extra`` are
    its other fields (``errors``, ``event_ids``, ``errors_not_shown``)."""
    return HTTPException(status_code=status, detail={"message": message, **extra}, headers=headers)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Body is not JSON / NDJSON",
        401: "No key, or an unknown or revoked one",
        403: "The key lacks the scope, or acts for another tenant",
        404: "Not found (or another tenant's)",
        409: "A known event_id with different content",
        413: "Body or batch too large",
        422: "Invalid input, each error with its index and field",
        503: "The database is unreachable; retry after Retry-After seconds",
    }
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 (bad query or path parameters) in the same shape as ours."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"index": 0, "field": ".".join(str(p) for p in e["loc"]), "message": str(e["msg"])}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    body = {"detail": {"message": f"{first['field']}: {first['message']}", "errors": errors}}
    return JSONResponse(status_code=422, content=body)


# Connection failures, however they surface: the driver's own error on a raw connection,
# SQLAlchemy's wrapping of it (connecting, or a pooled connection found dead), a full pool,
# or the embedded server failing to start.
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    sqlalchemy.exc.DBAPIError,
    sqlalchemy.exc.TimeoutError,
    DatabaseUnavailable,
)


def _is_unavailable(exc: Exception) -> bool:
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.OperationalError)
    return isinstance(exc, UNAVAILABLE)


async def database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """503 with Retry-After, not 500: nothing is wrong with the request, and nothing was
    written (appends are one transaction), so the same request may simply be sent again."""
    if not _is_unavailable(exc):
        raise exc  # a database error that is a bug: the usual 500 and traceback
    log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else exc)
    message = "the database cannot answer now (unreachable, restarting or overloaded); retry"
    body = {"detail": {"message": message, "errors": []}}
    return JSONResponse(status_code=503, content=body, headers={"Retry-After": str(RETRY_AFTER_S)})

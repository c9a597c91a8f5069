"""One error shape for every endpoint: ``{"detail": {"message", "errors", "event_ids"}}``."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


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


def http_error(message: str, status: int = 422) -> HTTPException:
    """An error of our own in the shape above (the handler wraps ``detail``)."""
    return HTTPException(status_code=status, detail={"message": message})


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "Body is not JSON / NDJSON",
        401: "No key, or an unknown or revoked one",
        403: "The key lacks the scope, or acts for another tenant",
        404: "Not found (or another tenant's)",
        409: "A known event_id with different content",
        413: "Body or batch too large",
        422: "Invalid input, each error with its index and field",
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

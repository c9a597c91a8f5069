"""``/v1/pools``, ``/v1/capacity`` and ``/v1/break-even``: what the platform pays, where it
goes, and when self-hosting pays. Admin keys only, except a tenant's own fully-loaded cost."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, TypeAdapter, ValidationError

from ledger.actual_costs import ActualCost
from ledger.capacity import Recorded, load_pools, read_pools, record
from ledger.connections import connection
from ledger.errors import BatchInvalid, BatchTooLarge, EventConflict, LedgerError
from ledger.events import TENANT_PATTERN
from ledger.money import format_nanos
from ledger.pools import POOL_PATTERN, PoolDefinition
from reports.allocation_job import run_allocation
from reports.break_even import BreakEvenRefused, assess
from reports.capacity_report import pool_rows, tenant_rows, unallocated
from service.http.deps import AdminKey, LedgerDep, ReadKey, SettingsDep, ensure_tenant
from service.http.errors import http_error, responses
from service.http.events import read_capped

router = APIRouter(prefix="/v1", tags=["capacity"], responses=responses(401, 403, 404, 422))
_RECORDS = TypeAdapter(list[ActualCost])
From = Annotated[date, Query(alias="from", description="First day, UTC")]
To = Annotated[date, Query(alias="to", description="Day after the last, UTC")]


class RecordedOut(BaseModel):
    accepted: int
    duplicates: int
    first_seq: int | None
    last_seq: int | None


def _money(nanos: int | None) -> dict[str, Any] | None:
    return None if nanos is None else {"nanos": nanos, "amount": format_nanos(nanos)}


def _check_range(start: date, end: date) -> None:
    if start >= end:
        raise http_error("from must be before to")


@router.get("/pools", summary="Declared GPU pools, the newest version of each")
def list_pools(ledger: LedgerDep, _key: AdminKey) -> list[dict[str, Any]]:
    with connection(ledger.engine) as raw:
        pools = read_pools(raw)
    return [p.model_dump(mode="json") for n in pools.names if (p := pools.latest(n))]


@router.put(
    "/pools/{name}",
    summary="Declare a pool, or a new version of it from a later effective_from",
    description="The body is a pool definition as in `service/books/example_pools.toml`.",
)
def put_pool(
    ledger: LedgerDep,
    _key: AdminKey,
    name: Annotated[str, Path(pattern=POOL_PATTERN)],
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    if body.get("name", name) != name:
        raise http_error(f"name: the body names {body.get('name')!r}, the path {name!r}")
    try:
        definition = PoolDefinition.model_validate(body | {"name": name})
    except ValidationError as exc:
        errors = [
            {"index": 0, "field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        raise http_error(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors) from exc
    try:
        added = load_pools(ledger.engine, [definition])
    except LedgerError as exc:
        raise http_error(str(exc), 409) from exc
    # A new version makes the next scheduled allocation run re-allocate every hour.
    return {
        "pool": definition.model_dump(mode="json"),
        "added": bool(added),
        "reallocation": "at the next allocation run" if added else None,
    }


def _record(ledger: Any, body: bytes) -> Recorded:
    try:
        records = _RECORDS.validate_json(body)
    except ValidationError as exc:
        errors = []
        for e in exc.errors()[:100]:
            loc = list(e["loc"])
            index = loc.pop(0) if loc and isinstance(loc[0], int) else 0
            loc = [p for p in loc if p not in ("capacity", "overhead")]
            errors.append({"index": index, "field": ".".join(map(str, loc)), "message": e["msg"]})
        first = errors[0] if errors else {"index": 0, "field": "body", "message": "invalid"}
        raise http_error(
            f"{len(exc.errors())} error(s); first at index {first['index']}, field "
            f"{first['field']}: {first['message']}",
            errors=errors,
        ) from exc
    return record(ledger.engine, records)


@router.post(
    "/capacity",
    response_model=RecordedOut,
    responses=responses(400, 409, 413),
    summary="Record held capacity (heartbeats, schedules) and overheads, all or nothing",
)
async def post_capacity(
    request: Request, ledger: LedgerDep, settings: SettingsDep, _key: AdminKey
) -> RecordedOut:
    body = await read_capped(request, settings.ingest.max_body_bytes)
    try:
        done = await run_in_threadpool(_record, ledger, body)
    except BatchTooLarge as exc:
        raise http_error(str(exc), 413) from exc
    except BatchInvalid as exc:
        errors = [{"index": e.index, "field": e.field, "message": e.message} for e in exc.errors]
        raise http_error(str(exc), 422, errors=errors) from exc
    except EventConflict as exc:
        raise http_error(str(exc), 409, event_ids=[str(i) for i in exc.event_ids]) from exc
    return RecordedOut(**asdict(done))


@router.post("/allocation/run", summary="Run the allocation job now (it also runs on a schedule)")
def post_allocation(
    ledger: LedgerDep, _key: AdminKey, full: Annotated[bool, Query()] = False
) -> dict[str, Any]:
    return asdict(run_allocation(ledger.engine, full=full))


@router.get("/pools/report", summary="Per pool: utilisation, paid, idle variance, where it went")
def pools_report(ledger: LedgerDep, _key: AdminKey, start: From, end: To) -> dict[str, Any]:
    _check_range(start, end)
    with connection(ledger.engine) as raw:
        pools = pool_rows(raw, start, end)
        tenants = tenant_rows(raw, start, end)
        kept = unallocated(raw, start, end)
    return {
        "from": start,
        "to": end,
        "pools": [_with_money(asdict(p)) for p in pools],
        "tenants": [_with_money(asdict(t)) for t in tenants],
        "unallocated": {c: _money(n) for c, n in sorted(kept.items())},
    }


@router.get("/tenants/{tenant}/fully-loaded", summary="A tenant's direct and fully-loaded cost")
def tenant_fully_loaded(
    ledger: LedgerDep,
    key: ReadKey,
    tenant: Annotated[str, Path(pattern=TENANT_PATTERN)],
    start: From,
    end: To,
) -> dict[str, Any]:
    _check_range(start, end)
    with connection(ledger.engine) as raw:
        ensure_tenant(raw, key, tenant)
        rows = tenant_rows(raw, start, end, tenant)
    return {
        "tenant": tenant,
        "from": start,
        "to": end,
        "rows": [_with_money(asdict(r)) for r in rows],
    }


def _with_money(row: dict[str, Any]) -> dict[str, Any]:
    """``x_nanos`` fields become ``x: {nanos, amount}``: exact, and readable."""
    return {
        (k.removesuffix("_nanos")): (_money(v) if k.endswith("_nanos") else v)
        for k, v in row.items()
    }


@router.get("/break-even", summary="Where self-hosting a pool costs the same as an API")
def get_break_even(
    ledger: LedgerDep,
    _key: AdminKey,
    pool: Annotated[str, Query(pattern=POOL_PATTERN)],
    api_book: Annotated[str, Query(description="A price book with the API's render.image price")],
    start: From,
    end: To,
    api_sku: Annotated[str, Query(description="The SKU the API bills per image")] = "render.image",
) -> dict[str, Any]:
    _check_range(start, end)
    book = ledger.price_version(api_book)
    try:
        with connection(ledger.engine) as raw:
            result, others = assess(raw, book, pool, api_book, api_sku, start, end)
    except BreakEvenRefused as exc:
        raise http_error(f"{exc.field}: {exc}", 404 if exc.missing else 422) from exc
    # Renders on the pool priced in another currency are left out, and named.
    return {"from": start, "to": end, **_decimals(asdict(result)), "left_out_currencies": others}


def _decimals(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    return value

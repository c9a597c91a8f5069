"""``/v1/tenants/{tenant}/report``: cost per tenant from the rollups, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from ledger import encoding
from ledger.connections import connection
from ledger.events import TENANT_PATTERN as TENANT
from ledger.fx import FxError, FxTable, MissingRate, fx_table
from reports.report_attributes import AttributeGroupingError, check
from reports.report_rows import ReportRow
from reports.tenant_report import GROUPS, STAGES, ReportQuery, WhatIfBook, report
from service.http.deps import LedgerDep, ReadKey, ensure_tenant
from service.http.errors import http_error, responses

router = APIRouter(prefix="/v1", tags=["reports"], responses=responses(401, 403, 404, 422))

CURRENCY = r"^[A-Z]{3}$"
Start = Annotated[date, Query(alias="from", description="First day, UTC")]
End = Annotated[date, Query(alias="to", description="Day after the last, UTC")]
Currency = Annotated[
    str | None,
    Query(
        pattern=CURRENCY,
        description="Convert every amount to this currency at each day's rate; without it, "
        "a row per currency",
    ),
]
FxVersion = Annotated[
    int | None, Query(ge=1, description="The FX version to convert with (the newest if unset)")
]


class Report(BaseModel):
    tenant: str
    start: date
    end: date
    group_by: list[str]
    currency: str | None  # the target; None: each row names its own
    fx_version: int | None
    what_if: str | None
    rows: list[ReportRow]


def _parse_groups(text: str, what_if: bool = False) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise http_error(f"group_by: use distinct names from {', '.join(GROUPS)}; got {text!r}")
    try:
        check(groups, what_if)
    except AttributeGroupingError as exc:
        raise http_error(str(exc)) from exc
    return groups


def fx_for(
    raw: psycopg.Connection[Any], currency: str | None, version: int | None, start: date, end: date
) -> FxTable | None:
    """The rates a report converting to ``currency`` needs from ``start`` to ``end``
    (exclusive); 422 on ``currency`` when none are loaded, 404 for an unknown version."""
    if currency is None:
        return None
    try:
        return fx_table(raw, version, start, end - timedelta(days=1))
    except FxError as exc:
        if version is not None:
            raise http_error(f"fx_version: {exc}", 404) from exc
        raise http_error(f"currency: {exc}") from exc


def missing_rate(exc: MissingRate) -> Exception:
    return http_error(f"currency: {exc}", 422)


@router.get("/tenants/{tenant}/report", response_model=Report, summary="A tenant's cost report")
def tenant_report(
    ledger: LedgerDep,
    key: ReadKey,
    tenant: Annotated[str, Path(pattern=TENANT)],
    start: Start = date(2026, 1, 1),
    end: End = date(2100, 1, 1),
    group_by: Annotated[
        str,
        Query(
            description="Any of use_case, stage, day, or a pipeline attribute: model, "
            "precision, gpu_type, pipeline_version (not with stage)"
        ),
    ] = "use_case",
    what_if: Annotated[str | None, Query(description="Also price with this book")] = None,
    currency: Currency = None,
    fx_version: FxVersion = None,
    # Opt-in: the period before is a second pass over the rollups (measured in BENCHMARKS.md).
    compare: Annotated[
        str, Query(pattern="^(previous|none)$", description="Add the period just before")
    ] = "none",
    fmt: Annotated[str, Query(alias="format", pattern="^(json|csv)$")] = "json",
) -> Any:
    if not key.can_see(tenant):
        raise http_error(f"no tenant {tenant!r}", 404)  # the same answer as for a tenant never seen
    if start >= end:
        raise http_error("from must be before to")
    groups = _parse_groups(group_by, what_if is not None)
    book = None
    if what_if is not None:
        version = ledger.price_version(what_if)
        if version is None:
            raise http_error(f"what_if: no price book named {what_if!r}", 404)
        prices = {sku: p.unit_price_nanos for sku, p in version.prices.items()}
        book = WhatIfBook(version.currency, prices)
    q = ReportQuery(tenant, start, end, groups, currency)
    with connection(ledger.engine) as raw:
        ensure_tenant(raw, key, tenant)
        first = q.previous().start if compare == "previous" else start
        fx = fx_for(raw, currency, fx_version, first, end)
        try:
            rows = report(raw, q, book, fx, compare=compare == "previous")
        except MissingRate as exc:
            raise missing_rate(exc) from exc
    body = Report(
        tenant=tenant,
        start=start,
        end=end,
        group_by=list(groups),
        currency=currency,
        fx_version=fx.version if fx else None,
        what_if=what_if,
        rows=rows,
    )
    plain = _plain(body.rows, groups)
    if fmt == "csv":
        return Response(to_csv(plain, _columns(groups)), media_type="text/csv")
    # Built and typed above; skip a second validation pass on the way out.
    head = body.model_dump(mode="json", exclude={"rows"})
    return Response(encoding.dumps(head | {"rows": plain}), media_type="application/json")


def _plain(rows: list[ReportRow], groups: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows as JSON objects: the keys grouped by first, in the order asked for (the CSV's
    columns follow it), then the figures; a row leaves out what it was not given."""
    out = []
    for row in rows:
        fields = row.model_dump(mode="json", exclude_unset=True)
        out.append({g: fields[g] for g in groups} | fields)
    return out


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        else:
            flat[name] = value
    return flat


def _columns(groups: tuple[str, ...]) -> list[str]:
    """The CSV's columns, the same for every row whatever it holds: the keys, then every
    field of a row in order, a dict spread over every stage."""
    money = ("nanos", "amount")
    spread = {
        "stage_share": STAGES,
        "stage_wall_share": STAGES,
        "what_if": [
            f"{f}_{p}"
            for f in ("cost", "cost_per_delivered_render", "difference_per_delivered_render")
            for p in money
        ],
        "fully_loaded": [
            f"{f}_{p}"
            for f in ("idle", "overhead", "cost", "cost_per_delivered_render")
            for p in money
        ],
        "previous": [
            *(f"{f}_{p}" for f in ("cost", "cost_per_delivered_render") for p in money),
            "cost_change",
            "cost_per_delivered_render_change",
        ],
    }
    columns = list(groups)
    for name, info in ReportRow.model_fields.items():
        if name in GROUPS:
            continue
        if name in spread:
            columns += [f"{name}_{part}" for part in spread[name]]
        elif info.annotation is not None and "Money" in str(info.annotation):
            columns += [f"{name}_{part}" for part in money]
        else:
            columns.append(name)
    return columns


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as CSV with the given columns (a row without one leaves its cell empty), or the
    columns of the rows. Only columns some row fills are written, so no column is empty."""
    flat = [_flatten(r) for r in rows]
    if columns is None:
        columns = []
        for r in flat:
            columns += [c for c in r if c not in columns]
    filled = [c for c in columns if any(r.get(c) is not None for r in flat)]
    out = io.StringIO()
    writer = csv.DictWriter(out, filled, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()

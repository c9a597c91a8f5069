"""``/v1/tenants/{tenant}/report``: cost per tenant from the rollups, as JSON or CSV."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from ledger import encoding
from ledger.connections import connection
from ledger.events import TENANT_PATTERN as TENANT
from reports.tenant_report import GROUPS, ReportQuery, ReportRow, report
from service.http.deps import LedgerDep, ReadKey, ensure_tenant
from service.http.errors import http_error, responses

router = APIRouter(prefix="/v1", tags=["reports"], responses=responses(401, 403, 404, 422))


class Report(BaseModel):
    tenant: str
    start: date
    end: date
    group_by: list[str]
    currency: str
    what_if: str | None
    rows: list[ReportRow]


def _parse_groups(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or len(set(groups)) != len(groups):
        raise http_error(f"group_by: use distinct names from {', '.join(GROUPS)}; got {text!r}")
    return groups


@router.get("/tenants/{tenant}/report", response_model=Report, summary="A tenant's cost report")
def tenant_report(
    ledger: LedgerDep,
    key: ReadKey,
    tenant: Annotated[str, Path(pattern=TENANT)],
    start: Annotated[date, Query(alias="from", description="First day, UTC")] = date(2026, 1, 1),
    end: Annotated[date, Query(alias="to", description="Day after the last, UTC")] = date(
        2100, 1, 1
    ),
    group_by: Annotated[str, Query(description="Any of use_case, stage, day")] = "use_case",
    what_if: Annotated[str | None, Query(description="Also price with this book")] = None,
    fmt: Annotated[str, Query(alias="format", pattern="^(json|csv)$")] = "json",
) -> Any:
    if not key.can_see(tenant):
        raise http_error(f"no tenant {tenant!r}", 404)  # the same answer as for a tenant never seen
    if start >= end:
        raise http_error("from must be before to")
    groups = _parse_groups(group_by)
    prices = None
    if what_if is not None:
        version = ledger.price_version(what_if)
        if version is None:
            raise http_error(f"what_if: no price book named {what_if!r}", 404)
        prices = {sku: p.unit_price_nanos for sku, p in version.prices.items()}
    with connection(ledger.engine) as raw:
        ensure_tenant(raw, key, tenant)
        rows = report(raw, ReportQuery(tenant, start, end, groups), prices)
    body = Report(
        tenant=tenant,
        start=start,
        end=end,
        group_by=list(groups),
        currency="USD",
        what_if=what_if,
        rows=rows,
    )
    plain = _plain(body.rows, groups)
    if fmt == "csv":
        return Response(to_csv(plain), media_type="text/csv")
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


def to_csv(rows: list[dict[str, Any]]) -> str:
    flat = [_flatten(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns += [c for c in r if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()

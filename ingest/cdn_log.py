"""CDN egress from access logs: each logged object maps back to its render and tenant.

The accepted format is the CloudFront standard log (W3C extended, tab-separated): comment
lines start with ``#``, and a ``#Fields:`` line names the columns. The columns used are
``date``, ``time``, ``sc-bytes``, ``cs-uri-stem`` and ``x-edge-request-id`` (optional:
``x-edge-location``, ``sc-status``). Any CDN whose logs carry these can be converted to it.

Objects are stored as ``tenant/render_id.ext`` (see ``render.storage``), so the path names
the render; its use case comes from the render's events already in the ledger. Each log
line becomes one ``cdn_egress`` event on ``cdn.egress.gb`` whose id is
``uuid5(NAMESPACE, "<tenant>/<x-edge-request-id>")``: within the tenant the object belongs
to, so importing the same log twice stores it once, and no other tenant's events can hold
the id a line of this tenant needs. Lines imported before ids were scoped by tenant carry
``uuid5(NAMESPACE, request id)``; a line whose old id is already this tenant's egress event
keeps it, so re-importing an old log does not bill its egress twice.

A line that cannot be read (wrong column count, a byte count that is not a number, a render
of another tenant) is yielded as a ``RowError`` for the importer to report and skip; a
missing or incomplete ``#Fields:`` header is raised, since no line can be read without it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import psycopg
from sqlalchemy import Engine

from ingest.parsing import RowError
from ledger.connections import connection
from ledger.events import TENANT_ID, Stage
from ledger.journal import events_by_key, render_owners

NAMESPACE = uuid.UUID("5f0d9a54-6c1e-4b8e-9a57-2f1b0c9d3e11")
SKU = "cdn.egress.gb"
REQUIRED = ("date", "time", "sc-bytes", "cs-uri-stem", "x-edge-request-id")
_KEY = re.compile(
    rf"^/?(?P<tenant>{TENANT_ID})/"
    r"(?P<render>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.[A-Za-z0-9]+$"
)


@dataclass
class CdnStats:
    unmatched: int = 0  # objects that are not renders, or renders the ledger does not know


def event_id(tenant: str, request_id: str) -> uuid.UUID:
    """The id of a log line's event: its request id within its tenant."""
    return uuid.uuid5(NAMESPACE, f"{tenant}/{request_id}")


def _legacy_id(request_id: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, request_id)


Line = tuple[int, dict[str, str] | RowError, int]


def _lines(raw: Iterable[bytes]) -> Iterator[Line]:
    fields: list[str] | None = None
    for lineno, line in enumerate(raw, start=1):
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if text.startswith("#Fields:"):
            fields = text.removeprefix("#Fields:").split()
            missing = [f for f in REQUIRED if f not in fields]
            if missing:
                raise RowError(lineno, "#Fields", f"missing column(s): {', '.join(missing)}")
            continue
        if not text or text.startswith("#"):
            continue
        if fields is None:
            raise RowError(lineno, "#Fields", "no #Fields: header before the first entry")
        values = text.split("\t")
        if len(values) != len(fields):
            problem = f"{len(values)} columns, the header names {len(fields)}"
            yield lineno, RowError(lineno, "row", problem), len(line)
            continue
        yield lineno, dict(zip(fields, values, strict=True)), len(line)


def _old_ids_kept(
    raw: psycopg.Connection[Any], wanted: list[tuple[str, uuid.UUID]]
) -> set[tuple[str, uuid.UUID]]:
    """Of these (tenant, pre-scoping id) pairs, those that are that tenant's egress events."""
    if not wanted:
        return set()
    found = events_by_key(raw, wanted)
    return {key for key, e in found.items() if e.stage == Stage.CDN_EGRESS}


def cdn_rows(
    raw: Iterable[bytes], engine: Engine, stats: CdnStats, chunk: int = 2_000
) -> Iterator[tuple[int, Any, int]]:
    """Rows for ``import_events`` in line order: event dicts built from log lines, or the
    ``RowError`` of a line that cannot be one; read a chunk at a time."""
    lines = _lines(raw)
    while block := list(itertools.islice(lines, chunk)):
        keys: dict[int, tuple[str, uuid.UUID, str]] = {}  # line: tenant, render, request id
        for lineno, entry, _ in block:
            if not isinstance(entry, RowError):
                match = _KEY.match(unquote(entry["cs-uri-stem"]))
                if match is not None:
                    request = entry["x-edge-request-id"]
                    keys[lineno] = (match["tenant"], uuid.UUID(match["render"]), request)
        with connection(engine) as conn:
            owners = render_owners(conn, sorted({k[1] for k in keys.values()}))
            old = _old_ids_kept(conn, [(t, _legacy_id(r)) for t, _, r in keys.values()])
        for lineno, entry, size in block:
            if isinstance(entry, RowError):
                yield lineno, entry, size
                continue
            key = keys.get(lineno)
            owner = owners.get(key[1]) if key else None
            if key is None or owner is None:
                stats.unmatched += 1  # not a render, or not one the ledger knows
                continue
            tenant, render_id, request = key
            if owner.tenant_id != tenant:
                problem = f"render {render_id} belongs to {owner.tenant_id}, not {tenant}"
                yield lineno, RowError(lineno, "cs-uri-stem", problem), size
                continue
            legacy = _legacy_id(request)
            eid = legacy if (tenant, legacy) in old else event_id(tenant, request)
            yield lineno, _event(lineno, entry, eid, tenant, owner.use_case, render_id), size


def _event(
    lineno: int, e: dict[str, str], eid: uuid.UUID, tenant: str, use_case: str, render: uuid.UUID
) -> dict[str, Any] | RowError:
    try:
        sent = int(e["sc-bytes"])
    except ValueError:
        return RowError(lineno, "sc-bytes", f"not a byte count: {e['sc-bytes']!r}")
    return {
        "event_id": eid,
        "tenant_id": tenant,
        "use_case": use_case,
        "render_id": render,
        "stage": "cdn_egress",
        "sku": SKU,
        "quantity": Decimal(sent) / Decimal(10**9),
        "occurred_at": f"{e['date']}T{e['time']}Z",
        "attributes": {
            "bytes": sent,
            "edge_location": e.get("x-edge-location", ""),
            "status": e.get("sc-status", ""),
            "request_id": e["x-edge-request-id"],
        },
    }

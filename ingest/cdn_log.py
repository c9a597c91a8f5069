"""CDN egress from access logs: each logged object maps back to its render and tenant.

The accepted format is the CloudFront standard log (W3C extended, tab-separated): comment
lines start with ``#``, and a ``#Fields:`` line names the columns. The columns used are
``date``, ``time``, ``sc-bytes``, ``cs-uri-stem`` and ``x-edge-request-id`` (optional:
``x-edge-location``, ``sc-status``). Any CDN whose logs carry these can be converted to it.

Objects are stored as ``tenant/render_id.ext`` (see ``render.storage``), so the path names
the render; its use case comes from the render's events already in the ledger. Each log
line becomes one ``cdn_egress`` event on ``cdn.egress.gb`` whose id is derived from the
request id, so importing the same log twice stores it once.
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

from sqlalchemy import Engine

from ingest.parsing import RowError
from ledger.journal import render_owners

NAMESPACE = uuid.UUID("5f0d9a54-6c1e-4b8e-9a57-2f1b0c9d3e11")
SKU = "cdn.egress.gb"
REQUIRED = ("date", "time", "sc-bytes", "cs-uri-stem", "x-edge-request-id")
_KEY = re.compile(
    r"^/?(?P<tenant>[a-z0-9][a-z0-9_-]{0,62})/"
    r"(?P<render>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.[A-Za-z0-9]+$"
)


@dataclass
class CdnStats:
    unmatched: int = 0  # objects that are not renders, or renders the ledger does not know


def _lines(raw: Iterable[bytes]) -> Iterator[tuple[int, dict[str, str], int]]:
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
            raise RowError(lineno, "row", f"{len(values)} columns, the header names {len(fields)}")
        yield lineno, dict(zip(fields, values, strict=True)), len(line)


def cdn_rows(
    raw: Iterable[bytes], engine: Engine, stats: CdnStats, chunk: int = 2_000
) -> Iterator[tuple[int, Any, int]]:
    """Rows for ``import_events``: event dicts built from log lines, a chunk at a time."""
    lines = _lines(raw)
    while block := list(itertools.islice(lines, chunk)):
        parsed = []
        for lineno, entry, size in block:
            match = _KEY.match(unquote(entry["cs-uri-stem"]))
            if match is None:
                stats.unmatched += 1
                continue
            parsed.append((lineno, entry, size, match["tenant"], uuid.UUID(match["render"])))
        owners = render_owners(engine, sorted({p[4] for p in parsed}))
        for lineno, entry, size, tenant, render_id in parsed:
            owner = owners.get(render_id)
            if owner is None:
                stats.unmatched += 1
                continue
            if owner[0] != tenant:
                raise RowError(lineno, "cs-uri-stem", f"render {render_id} belongs to {owner[0]}")
            yield lineno, _event(lineno, entry, tenant, owner[1], render_id), size


def _event(lineno: int, e: dict[str, str], tenant: str, use_case: str, render: uuid.UUID) -> Any:
    try:
        sent = int(e["sc-bytes"])
    except ValueError as exc:
        raise RowError(lineno, "sc-bytes", f"not a byte count: {e['sc-bytes']!r}") from exc
    return {
        "event_id": uuid.uuid5(NAMESPACE, e["x-edge-request-id"]),
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

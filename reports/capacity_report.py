"""Pools and tenants after allocation: utilisation, idle cost, fully-loaded cost per render.

Read from ``pool_hourly``, ``usage_hourly`` and ``allocations`` (the allocation job's
tables), never from the logs. Every money figure is per currency; nothing of two currencies
is added. Divisions are rounded once, half-even, to the nano.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import psycopg

_RANGE = "hour >= %(start)s AND hour < %(end)s"


@dataclass(frozen=True)
class PoolRow:
    pool: str
    currency: str
    held_gpu_seconds: float
    busy_gpu_seconds: float
    utilisation: float | None
    paid_nanos: int
    standard_nanos: int
    variance_nanos: int  # paid − standard: idle time plus rate difference
    allocated_nanos: int  # the part of the variance shared to tenants
    kept_nanos: int  # the part left on the platform


@dataclass(frozen=True)
class TenantCostRow:
    tenant_id: str
    use_case: str
    currency: str
    renders_delivered: int
    direct_nanos: int
    idle_nanos: int
    overhead_nanos: int
    fully_loaded_nanos: int
    direct_per_render_nanos: int | None
    fully_loaded_per_render_nanos: int | None


def per(nanos: int, count: int) -> int | None:
    if count <= 0:
        return None
    return int((Decimal(nanos) / count).to_integral_value(ROUND_HALF_EVEN))


def hour_range(start: date, end: date, **extra: Any) -> dict[str, Any]:
    # Hours are instants: a day starts at UTC midnight whatever the session's time zone.
    at = [datetime.combine(d, time(), UTC) for d in (start, end)]
    return {"start": at[0], "end": at[1], **extra}


def pool_rows(
    raw: psycopg.Connection[Any], start: date, end: date, pool: str | None = None
) -> list[PoolRow]:
    only = "AND pool = %(pool)s" if pool else ""
    facts = raw.execute(
        "SELECT pool, currency, sum(held_seconds)::float8, sum(busy_seconds)::float8, "
        f"sum(paid_nanos), sum(standard_nanos) FROM pool_hourly WHERE {_RANGE} {only} "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        hour_range(start, end, pool=pool),
    ).fetchall()
    spread = {
        (r[0], r[1]): (int(r[2]), int(r[3]))
        for r in raw.execute(
            "SELECT substr(source, 6), currency, "
            "coalesce(sum(amount_nanos) FILTER (WHERE tenant_id <> ''), 0), "
            "coalesce(sum(amount_nanos) FILTER (WHERE tenant_id = ''), 0) "
            f"FROM allocations WHERE {_RANGE} AND kind = 'idle' GROUP BY 1, 2",
            hour_range(start, end),
        )
    }
    # Utilisation is of the pool, over every currency its usage was priced in.
    held: dict[str, float] = {}
    busy: dict[str, float] = {}
    for name, _, h, b, _, _ in facts:
        held[name] = held.get(name, 0.0) + h
        busy[name] = busy.get(name, 0.0) + b
    out = []
    for name, currency, h, b, paid, standard in facts:
        allocated, kept = spread.get((name, currency), (0, 0))
        out.append(
            PoolRow(
                pool=name,
                currency=currency,
                held_gpu_seconds=round(h, 6),
                busy_gpu_seconds=round(b, 6),
                utilisation=round(busy[name] / held[name], 6) if held[name] else None,
                paid_nanos=int(paid),
                standard_nanos=int(standard),
                variance_nanos=int(paid) - int(standard),
                allocated_nanos=allocated,
                kept_nanos=kept,
            )
        )
    return out


def tenant_rows(
    raw: psycopg.Connection[Any], start: date, end: date, tenant: str | None = None
) -> list[TenantCostRow]:
    """Per tenant, use case and currency: direct, allocated idle and overhead, fully loaded.
    Overheads a tenant bears with no use case to spread them over show under use case ""."""
    only = "AND tenant_id = %(tenant)s" if tenant else ""
    params = hour_range(start, end, tenant=tenant)
    direct = raw.execute(
        "SELECT tenant_id, use_case, currency, sum(renders), sum(cost_nanos) FROM usage_hourly "
        f"WHERE {_RANGE} {only} GROUP BY 1, 2, 3",
        params,
    ).fetchall()
    allocated = raw.execute(
        "SELECT tenant_id, use_case, currency, "
        "coalesce(sum(amount_nanos) FILTER (WHERE kind = 'idle'), 0), "
        "coalesce(sum(amount_nanos) FILTER (WHERE kind = 'overhead'), 0) "
        f"FROM allocations WHERE {_RANGE} AND tenant_id <> '' {only} GROUP BY 1, 2, 3",
        params,
    ).fetchall()
    rows: dict[tuple[str, str, str], list[int]] = {}
    for t, u, c, renders, cost in direct:
        rows.setdefault((t, u, c), [0, 0, 0, 0])[:2] = [int(renders), int(cost)]
    for t, u, c, idle, overhead in allocated:
        rows.setdefault((t, u, c), [0, 0, 0, 0])[2:] = [int(idle), int(overhead)]
    out = []
    for (t, u, c), (renders, cost, idle, overhead) in sorted(rows.items()):
        loaded = cost + idle + overhead
        out.append(
            TenantCostRow(
                tenant_id=t,
                use_case=u,
                currency=c,
                renders_delivered=renders,
                direct_nanos=cost,
                idle_nanos=idle,
                overhead_nanos=overhead,
                fully_loaded_nanos=loaded,
                direct_per_render_nanos=per(cost, renders),
                fully_loaded_per_render_nanos=per(loaded, renders),
            )
        )
    return out


def unallocated(raw: psycopg.Connection[Any], start: date, end: date) -> dict[str, int]:
    """Per currency: what stays on the platform (kept idle, overheads with no one to bear them)."""
    return {
        c: int(a)
        for c, a in raw.execute(
            "SELECT currency, sum(amount_nanos) FROM allocations "
            f"WHERE {_RANGE} AND tenant_id = '' GROUP BY 1",
            hour_range(start, end),
        )
    }

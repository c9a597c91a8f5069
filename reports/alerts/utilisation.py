"""A pool under its utilisation floor for an hour is a finding, with what the idle cost.

Judged after each allocation run on the last complete hour of every pool that held capacity
(``pool_hourly``): below the floor opens an alert (one per pool while it stays open), at or
above it resolves the open one. Pools are the platform's, so the alert's tenant is ``""``
(admins see it) and its use case names the pool.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from ledger.money import format_nanos
from reports.alerts.store import append, open_alerts

SIGNAL = "utilisation"
PLATFORM = ""


def judge_pools(
    raw: psycopg.Connection[Any], floor: float = 0.5, now: datetime | None = None
) -> list[tuple[str, str]]:
    """Open or resolve utilisation alerts; (pool, "opened" | "resolved") for each change."""
    now = now or datetime.now(UTC)
    last = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    rows = raw.execute(
        "SELECT pool, sum(held_seconds)::float8, sum(busy_seconds)::float8, "
        "array_agg(currency ORDER BY currency), array_agg(paid_nanos - standard_nanos "
        "ORDER BY currency) FROM pool_hourly WHERE hour = %s GROUP BY pool HAVING "
        "sum(held_seconds) > 0",
        (last,),
    ).fetchall()
    opened = {
        a["use_case"].removeprefix("pool:"): a
        for a in open_alerts(raw)
        if a["signal"] == SIGNAL and a["tenant"] == PLATFORM
    }
    changes = []
    for pool, held, busy, currencies, idle in rows:
        utilisation = busy / held
        if utilisation < floor and pool not in opened:
            costs = {c: int(n) for c, n in zip(currencies, idle, strict=True)}
            text = ", ".join(f"{format_nanos(n)} {c}" for c, n in costs.items())
            detail = {
                "message": f"pool {pool} was {utilisation:.1%} busy in the hour from "
                f"{last.isoformat()} (floor {floor:.0%}); idle and rate variance cost {text}",
                "value": round(utilisation, 6),
                "baseline": floor,
                "since": last.isoformat(),
                "idle_cost_nanos": costs,
            }
            append(raw, uuid.uuid4(), PLATFORM, f"pool:{pool}", SIGNAL, "opened", detail)
            changes.append((pool, "opened"))
        elif utilisation >= floor and pool in opened:
            alert_id = uuid.UUID(opened[pool]["alert_id"])
            resolution = {"value": round(utilisation, 6), "baseline": floor}
            append(raw, alert_id, PLATFORM, f"pool:{pool}", SIGNAL, "resolved", resolution)
            changes.append((pool, "resolved"))
    return changes

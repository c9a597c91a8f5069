"""A month's usage read straight from the log, bounded by position.

Invoices read the events, not the rollups: an invoice names the last position it covers
(``through_seq``), and the rollups cannot split a render's cost at a position. The BRIN
index on ``occurred_at`` keeps the read to the month's pages.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from reports.billing.pricing import Usage


@dataclass(frozen=True, slots=True)
class Window:
    """A billing month in a time zone, as UTC instants [start, end)."""

    period: date
    timezone: str

    @property
    def start(self) -> datetime:
        return _midnight(self.period, self.timezone)

    @property
    def end(self) -> datetime:
        return _midnight(next_month(self.period), self.timezone)


def _midnight(day: date, zone: str) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def next_month(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_month(period: date) -> date:
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def parse_period(text: str) -> date:
    """``2026-10`` → 2026-10-01; anything else is a ValueError naming the format."""
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        return date(int(year), int(month), 1)
    except ValueError:
        raise ValueError(f"month: expected YYYY-MM, got {text!r}") from None


_USAGE = """
SELECT tenant_id, use_case, coalesce(outcome, '') AS outcome, count(*) AS renders,
       sum(events)::bigint, sum(cost)::bigint, min(first_seq), max(last_seq)
FROM (
    SELECT tenant_id, use_case, render_id, max(outcome) AS outcome, count(*) AS events,
           sum(cost_nanos) AS cost, min(seq) AS first_seq, max(seq) AS last_seq
    FROM cost_events
    WHERE occurred_at >= %(start)s AND occurred_at < %(end)s
      AND seq > %(after)s AND seq <= %(through)s {tenant_filter}
    GROUP BY tenant_id, use_case, render_id
) AS renders
GROUP BY 1, 2, 3
"""


def read_usage(
    raw: psycopg.Connection[Any],
    window: Window,
    through_seq: int,
    *,
    tenants: list[str] | None = None,
    exclude: list[str] | None = None,
    after_seq: int = 0,
) -> dict[str, list[Usage]]:
    """Usage by tenant: of ``tenants`` if given, else of all but ``exclude``."""
    params: dict[str, Any] = {
        "start": window.start,
        "end": window.end,
        "after": after_seq,
        "through": through_seq,
    }
    tenant_filter = ""
    if tenants is not None:
        tenant_filter, params["tenants"] = "AND tenant_id = ANY(%(tenants)s)", tenants
    elif exclude:
        tenant_filter, params["exclude"] = "AND tenant_id <> ALL(%(exclude)s)", exclude
    out: dict[str, list[Usage]] = defaultdict(list)
    query = _USAGE.format(tenant_filter=tenant_filter)
    for tenant, *fields in raw.execute(query, params):
        out[tenant].append(Usage(*fields))
    return out


def late_months(
    raw: psycopg.Connection[Any],
    tenants: list[str],
    after_seq: int,
    through_seq: int,
    before: datetime,
) -> dict[str, set[date]]:
    """UTC months of events that arrived after ``after_seq`` but happened before ``before``.

    One range scan of the positions since the last finalization, for every tenant at once.
    """
    rows = raw.execute(
        "SELECT tenant_id, date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date "
        "FROM cost_events WHERE seq > %s AND seq <= %s AND occurred_at < %s "
        "AND tenant_id = ANY(%s) GROUP BY 1, 2",
        (after_seq, through_seq, before, tenants),
    ).fetchall()
    out: dict[str, set[date]] = defaultdict(set)
    for tenant, month in rows:
        out[tenant].add(month)
    return out

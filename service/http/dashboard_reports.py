"""The report rows a tenant page draws, read by the report API's own function
(``reports.tenant_report.report``): the period, the period before and the period by day,
three passes over the rollups run side by side on their own connections.

Rows are kept for the next view of the same page until the rollups (or the allocations,
or the FX rates) move: those tables change only when their jobs commit a checkpoint, so a
page is recomputed exactly when what it reads may have changed. What the page reads live
(alerts, invoices, budgets) is never kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.fx import FxTable
from reports.report_rows import ReportRow
from reports.tenant_report import ReportQuery, WhatIfBook, report

# Each checkpoint a job commits with its rows: any change of the rollups, the allocations
# or the FX versions changes this.
_STATE = """
SELECT (SELECT array_agg(ARRAY[job, last_seq::text, updated_at::text] ORDER BY job)
          FROM rollup_checkpoints)::text,
       (SELECT array_agg(ARRAY[job, last_seq::text, last_actual_seq::text, updated_at::text]
                         ORDER BY job) FROM allocation_checkpoints)::text,
       (SELECT max(version) FROM fx_versions), current_database()
"""
WORK_MEM = "64MB"  # the percentiles sort a month of a large tenant's renders in memory
KEPT = 256  # pages kept per process, least recently viewed dropped first


def rollup_state(raw: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return tuple(raw.execute(_STATE).fetchone() or ())


@dataclass(frozen=True)
class PageRows:
    now: list[ReportRow]  # the period, with the what-if book's figures
    before: list[ReportRow]  # the period of equal length just before
    days: list[ReportRow]  # the period by day


class _Kept:
    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: OrderedDict[tuple[Any, ...], PageRows] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> PageRows | None:
        with self.lock:
            found = self.rows.get(key)
            if found is not None:
                self.rows.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], rows: PageRows) -> None:
        with self.lock:
            self.rows[key] = rows
            self.rows.move_to_end(key)
            while len(self.rows) > self.size:
                self.rows.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.rows.clear()


KEPT_ROWS = _Kept(KEPT)


def _report(
    engine: Engine, q: ReportQuery, book: WhatIfBook | None, fx: FxTable | None
) -> list[ReportRow]:
    with connection(engine) as raw:
        raw.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
        # The charts by day show no latency: without percentiles the pass is a parallel sum.
        return report(raw, q, book, fx, latency="day" not in q.group_by)


def page_rows(
    engine: Engine,
    state: tuple[Any, ...],
    q: ReportQuery,
    book: tuple[str, WhatIfBook] | None,
    fx: FxTable | None,
) -> PageRows:
    """The three reports of a page (``MissingRate`` when a day has no FX rate)."""
    # The database is in the key: before its jobs first run, two ledgers' states are alike.
    key = (engine.url, state, q, book[0] if book else None, fx.version if fx else None)
    kept = KEPT_ROWS.get(key)
    if kept is not None:
        return kept
    jobs = [
        (q, book[1] if book else None),
        (q.previous(), None),
        (replace(q, group_by=(*q.group_by, "day")), None),
    ]
    with ThreadPoolExecutor(len(jobs), thread_name_prefix="dashboard") as pool:
        now, before, days = pool.map(lambda job: _report(engine, job[0], job[1], fx), jobs)
    rows = PageRows(now, before, days)
    KEPT_ROWS.put(key, rows)
    return rows

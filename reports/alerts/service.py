"""Detection against the database, after each rollup: bring the hourly series up to date,
judge every series at "now", append what opened and resolved to the alert log.

Renders come from ``render_rollup`` (so detection is as fresh as the last rollup) and go
through the same hourly aggregation, detector and tracker as the harness. A series is a
tenant × use case × currency (``render_rollup`` and ``alert_hourly`` both carry it in their
keys): a tenant whose price book moved from USD to EUR has a USD series that stops and an
EUR series that starts, and neither is ever the sum of both.

A series with a render in the last ``window_hours`` is judged: on the busy path with its
last hours of renders and the same hours of past days; on the low-volume path with its
renders over the horizon and day-long blocks of ``alert_hourly`` before them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import psycopg
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.locks import ALERTS
from reports.alerts.detect import SIGNALS, Rule, measure
from reports.alerts.reading import (
    last_resolved,
    read_blocks,
    read_hourly,
    read_renders,
    refresh_hourly,
    stale_since,
)
from reports.alerts.series import KEYS, Series, build
from reports.alerts.store import append, open_alerts
from reports.alerts.tracker import Decision, OpenAlert, decide

HOUR = timedelta(hours=1)


@dataclass
class DetectionResult:
    ran: bool
    series: int = 0  # judged: busy, or with enough delivered renders in the horizon
    present: int = 0  # with any render in the window
    low_volume: int = 0  # of the judged, those on the low-volume path
    opened: list[Decision] = field(default_factory=list)
    resolved: list[Decision] = field(default_factory=list)
    rebuilt_from: datetime | None = None  # hours before the window rebuilt from here on
    seconds: float = 0.0


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _paths(recent: pl.DataFrame, rule_for: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The series with a render in the window, split by path: (busy, low volume)."""
    delivered = pl.col("outcome") == "delivered"
    counts = recent.group_by(KEYS).agg(delivered.sum().alias("n"))
    busy = [
        n >= rule_for(t, u).min_renders
        for t, u, n in counts.select("tenant_id", "use_case", "n").iter_rows()
    ]
    split = counts.with_columns(pl.Series("busy", busy, dtype=pl.Boolean))
    keys = [*KEYS]
    return split.filter(pl.col("busy")).select(keys), split.filter(~pl.col("busy")).select(keys)


State = dict[tuple[str, str, str | None], dict[str, OpenAlert]]


def _state(raw: psycopg.Connection[Any]) -> State:
    """Open alerts by (tenant, use case, currency), then signal."""
    state: State = {}
    for alert in open_alerts(raw):
        opened = datetime.fromisoformat(alert["opened_at"])
        key = (alert["tenant"], alert["use_case"], alert["currency"])
        state.setdefault(key, {})[alert["signal"]] = OpenAlert(
            uuid.UUID(alert["alert_id"]),
            alert["signal"],
            int(opened.timestamp()),
            float(alert["detail"].get("baseline", 0.0)),
        )
    return state


def _adopt(state: State, judged: list[Series]) -> None:
    """Alerts opened before series had a currency (migration 0013) have none: each goes to
    the judged series of its tenant × use case with the most delivered renders in its window
    (the currency the old, summed series mostly measured), which resolves it in time, so it
    is neither left open for ever nor doubled by a new alert on the same signal."""
    busiest: dict[tuple[str, str], Series] = {}
    for series in judged:
        best = busiest.get((series.tenant, series.use_case))
        if best is None or series.renders.delivered.sum() > best.renders.delivered.sum():
            busiest[(series.tenant, series.use_case)] = series
    for (tenant, use_case), series in busiest.items():
        legacy = state.get((tenant, use_case, None), {})
        mine = state.setdefault((tenant, use_case, series.currency), {})
        for signal in [s for s in legacy if s in SIGNALS and s not in mine]:
            mine[signal] = legacy.pop(signal)


def _bring_up_to_date(
    raw: psycopg.Connection[Any], now: datetime, default: Rule, backfill: bool
) -> tuple[pl.DataFrame, datetime | None]:
    """Refresh ``alert_hourly``: always the window's hours, and from the first hour that
    differs from ``render_rollup`` over the whole period a judgement reads (every hour of
    it with ``backfill``, or when ``alert_hourly`` is empty). Returns the renders read (from
    the window's first hour, or from the rebuilt hours') and where a rebuild began."""
    window = _hour(now - timedelta(hours=default.window_hours))
    lookback = _hour(now) - timedelta(days=default.baseline_days + default.horizon_hours // 24 + 2)
    since = lookback if backfill else stale_since(raw, lookback, window)
    start = window if since is None else min(since, window)
    renders = read_renders(raw, start, now)
    refresh_hourly(raw, renders, start)
    return renders, since


def _series(
    raw: psycopg.Connection[Any],
    renders: pl.DataFrame,
    now: datetime,
    rule_for: Any,
    default: Rule,
    result: DetectionResult,
) -> list[Series]:
    """Every series to judge, with what its path reads."""
    top = _hour(now)
    window = now - timedelta(hours=default.window_hours)
    recent = renders.filter(pl.col("rendered_at") >= window)
    busy, low = _paths(recent, rule_for)
    result.present = busy.height + low.height
    judged = build(
        recent.join(busy, on=KEYS, how="semi"), read_hourly(raw, top, default.baseline_days, busy)
    )
    if low.height:
        horizon = now - timedelta(hours=default.horizon_hours)
        if renders.height and renders["rendered_at"].min() <= horizon:  # type: ignore[operator]
            quiet = renders.filter(pl.col("rendered_at") >= horizon).join(low, on=KEYS, how="semi")
        else:
            quiet = read_renders(raw, horizon, now, low)
        enough = (
            quiet.filter(pl.col("outcome") == "delivered")
            .group_by(KEYS)
            .len()
            .filter(pl.col("len") >= default.low_min_renders)
            .select(KEYS)
        )
        days = default.baseline_days + default.horizon_hours // 24 + 2
        blocks = read_blocks(raw, top, days, enough)
        low_series = build(quiet.join(enough, on=KEYS, how="semi"), blocks.clear(), blocks)
        result.low_volume = len(low_series)
        judged += low_series
    result.series = len(judged)
    return judged


def run_detection(
    engine: Engine,
    rules: Any = None,
    now: datetime | None = None,
    *,
    backfill: bool = False,
) -> DetectionResult:
    """One pass; ``rules(tenant, use_case) -> Rule``. Skips if another process runs it.

    The hourly series is brought up to date first (see ``reading.stale_since``): after a
    bulk import, renders that arrived late or an empty ``alert_hourly``, the hours that
    differ are rebuilt without being asked. ``backfill`` rebuilds the whole period anyway.
    A rule is per tenant and use case and applies to each of its currencies' series alike;
    the periods read are the default rule's.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    rule_for = rules or (lambda _t, _u: Rule())
    default = rule_for("", "")
    result = DetectionResult(True)
    with job_lock(engine, ALERTS) as raw:
        if raw is None:
            return DetectionResult(False)
        with raw.transaction():
            renders, result.rebuilt_from = _bring_up_to_date(raw, now, default, backfill)
            judged = _series(raw, renders, now, rule_for, default, result)
            state = _state(raw)
            resolved = last_resolved(raw, now - timedelta(hours=default.horizon_hours))
            times = np.array([int(now.timestamp())], dtype=np.int64)
            _adopt(state, judged)
            for series in judged:
                rule = rule_for(series.tenant, series.use_case)
                key = (series.tenant, series.use_case, series.currency)
                mine = state.setdefault(key, {})
                m = measure(series, times, rule)
                for d in decide(series, m, 0, rule, mine, resolved.get(key, {})):
                    append(
                        raw,
                        d.alert_id,
                        series.tenant,
                        series.use_case,
                        d.signal,
                        d.kind,
                        d.detail,
                        currency=series.currency,
                    )
                    (result.opened if d.kind == "opened" else result.resolved).append(d)
    result.seconds = time.perf_counter() - started
    return result

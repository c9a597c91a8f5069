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
from reports.alerts.detect import SIGNALS, Rule, fires, measure, value
from reports.alerts.reading import (
    keep_place,
    last_resolved,
    place,
    read_blocks,
    read_hourly,
    read_renders,
    refresh_hourly,
    stale_since,
    touched_since,
)
from reports.alerts.series import KEYS
from reports.alerts.stack import stack
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


def _adopt(state: State, delivered: pl.DataFrame) -> None:
    """Alerts opened before series had a currency (migration 0013) have none: each goes to
    the judged series of its tenant × use case with the most delivered renders read (the
    currency the old, summed series mostly measured), which resolves it in time, so it is
    neither left open for ever nor doubled by a new alert on the same signal."""
    busiest = delivered.sort("n", descending=True).unique(["tenant_id", "use_case"], keep="first")
    for tenant, use_case, currency in busiest.select(KEYS).iter_rows():
        legacy = state.get((tenant, use_case, None), {})
        mine = state.setdefault((tenant, use_case, currency), {})
        for signal in [s for s in legacy if s in SIGNALS and s not in mine]:
            mine[signal] = legacy.pop(signal)


def _stale_since(
    raw: psycopg.Connection[Any], now: datetime, lookback: datetime, window: datetime
) -> datetime | None:
    """The first hour before the window that ``alert_hourly`` holds stale, or None: from
    the events rolled up since the last pass, or (first pass of a day, or the place in the
    event log lost to a rollup rebuild) by comparing the tables."""
    rollup = place(raw, "rollup")
    upto = rollup[0] if rollup else 0
    mine = place(raw, "alert_hourly")
    keep_place(raw, "alert_hourly", upto, now)
    if mine is None or mine[0] > upto or mine[1].astimezone(UTC).date() != now.date():
        return stale_since(raw, lookback, window)
    return touched_since(raw, mine[0], upto, lookback, window) if mine[0] < upto else None


def _bring_up_to_date(
    raw: psycopg.Connection[Any], now: datetime, default: Rule, backfill: bool
) -> tuple[pl.DataFrame, datetime | None]:
    """Refresh ``alert_hourly``: always the window's hours, and from the first stale hour
    before them over the whole period a judgement reads (all of it with ``backfill``, or
    when ``alert_hourly`` is empty). Returns the renders read (from the window's first
    hour, or from the rebuilt hours') and where a rebuild began."""
    window = _hour(now - timedelta(hours=default.window_hours))
    lookback = _hour(now) - timedelta(days=default.baseline_days + default.horizon_hours // 24 + 2)
    empty = raw.execute("SELECT NOT EXISTS (SELECT FROM alert_hourly)").fetchone()
    if backfill or (empty and empty[0]):
        since: datetime | None = lookback
        rollup = place(raw, "rollup")
        keep_place(raw, "alert_hourly", rollup[0] if rollup else 0, now)
    else:
        since = _stale_since(raw, now, lookback, window)
    start = window if since is None else min(since, window)
    renders = read_renders(raw, start, now)
    refresh_hourly(raw, renders, start)
    return renders, since


def _low_volume_due(raw: psycopg.Connection[Any], now: datetime, rebuilt: bool) -> bool:
    """Low-volume series are judged once an hour (their windows span hours to days, and
    reading their horizon is the costly part of a pass), and after hours were rebuilt.
    The hour last judged is kept in ``rollup_checkpoints`` (job ``alert_low_volume``)."""
    hour = int(_hour(now).timestamp())
    last = place(raw, "alert_low_volume")
    if not rebuilt and last is not None and last[0] == hour:
        return False
    keep_place(raw, "alert_low_volume", hour, now)
    return True


def _frames(
    raw: psycopg.Connection[Any],
    renders: pl.DataFrame,
    now: datetime,
    rule_for: Any,
    default: Rule,
    result: DetectionResult,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """What every series to judge reads: (renders, busy hours, low-volume blocks)."""
    judge_low = _low_volume_due(raw, now, result.rebuilt_from is not None)
    top = _hour(now)
    window = now - timedelta(hours=default.window_hours)
    recent = renders.filter(pl.col("rendered_at") >= window)
    busy, low = _paths(recent, rule_for)
    result.present = busy.height + low.height
    parts = [recent.join(busy, on=KEYS, how="semi")]
    hourly = read_hourly(raw, top, default.baseline_days, busy)
    blocks = hourly.clear()
    if low.height and judge_low:
        horizon = now - timedelta(hours=default.horizon_hours)
        first: datetime = renders["rendered_at"].min() if renders.height else now  # type: ignore[assignment]
        if first <= horizon:
            quiet = renders.filter(pl.col("rendered_at") >= horizon).join(low, on=KEYS, how="semi")
        else:  # the hours before those read already
            older = read_renders(raw, horizon, first - timedelta(microseconds=1), low)
            quiet = pl.concat([older, renders.join(low, on=KEYS, how="semi")])
        enough = (
            quiet.filter(pl.col("outcome") == "delivered")
            .group_by(KEYS)
            .len()
            .filter(pl.col("len") >= default.low_min_renders)
            .select(KEYS)
        )
        days = default.baseline_days + default.horizon_hours // 24 + 2
        blocks = read_blocks(raw, top, days, enough)
        parts.append(quiet.join(enough, on=KEYS, how="semi"))
        result.low_volume = enough.height
    result.series = busy.height + result.low_volume
    return pl.concat(parts), hourly, blocks


def _judge(
    raw: psycopg.Connection[Any],
    frames: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
    now: datetime,
    rule_for: Any,
    state: State,
    result: DetectionResult,
) -> None:
    """Measure every series at once (a stack per distinct rule); judge on its own, and log
    what it decides, each series with an alert open or one that would open."""
    renders, hourly, blocks = frames
    resolved = last_resolved(raw, now - timedelta(hours=rule_for("", "").horizon_hours))
    keys = renders.select(KEYS).unique()
    by_rule: dict[Rule, list[tuple[str, str, str]]] = {}
    for t, u, c in keys.iter_rows():
        by_rule.setdefault(rule_for(t, u), []).append((t, u, c))
    times = np.array([int(now.timestamp())], dtype=np.int64)
    for rule, mine in by_rule.items():
        subset = pl.DataFrame(mine, schema=dict.fromkeys(KEYS, pl.String), orient="row")
        st = stack(*(f.join(subset, on=KEYS, how="semi") for f in (renders, hourly, blocks)))
        screen = measure(st.series, st.times(int(times[0])), rule)
        for k, key in enumerate(st.keys):
            alerts = state.setdefault(key, {})
            if not alerts and not any(
                fires(sig, *value(screen, sig, k), rule, screen, k) for sig in SIGNALS
            ):
                continue
            series = st.one(k)
            m = measure(series, times, rule)
            for d in decide(series, m, 0, rule, alerts, resolved.get(key, {})):
                append(raw, d.alert_id, *key[:2], d.signal, d.kind, d.detail, currency=key[2])
                (result.opened if d.kind == "opened" else result.resolved).append(d)


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
            frames = _frames(raw, renders, now, rule_for, default, result)
            state = _state(raw)
            delivered = frames[0].filter(pl.col("outcome") == "delivered").group_by(KEYS).len("n")
            _adopt(state, delivered)
            _judge(raw, frames, now, rule_for, state, result)
    result.seconds = time.perf_counter() - started
    return result

"""Detection against the database, after each rollup: refresh the hourly series, judge every
series at "now", append what opened and resolved to the alert log.

Renders come from ``render_rollup`` (so detection is as fresh as the last rollup) and go
through the same hourly aggregation, detector and tracker as the harness. A series is a
tenant × use case × currency (``render_rollup`` and ``alert_hourly`` both carry it in their
keys): a tenant whose price book moved from USD to EUR has a USD series that stops and an
EUR series that starts, and neither is ever the sum of both.
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
from ledger.tables import STAGE_COLUMNS
from reports.alerts.detect import SIGNALS, Rule, measure
from reports.alerts.series import KEYS, RENDER_FRAME_COLUMNS, Series, build, hourly_frame
from reports.alerts.store import append, open_alerts
from reports.alerts.tracker import Decision, OpenAlert, decide
from reports.source import copy_in, copy_out

_RENDER_SCHEMA: dict[str, Any] = {
    "tenant_id": pl.String,
    "use_case": pl.String,
    "currency": pl.String,
    "rendered_at": pl.Datetime("us", "UTC"),
    "outcome": pl.String,
    # Sums of costs are NUMERIC in the rollups: wider than 64 bits when a tenant makes them so.
    "total_nanos": pl.Int128,
    **dict.fromkeys(STAGE_COLUMNS.values(), pl.Int128),
    "cache_hits": pl.Int64,
    "cache_lookups": pl.Int64,
    "model": pl.String,
    "pipeline_version": pl.String,
    "gpu_type": pl.String,
    "precision": pl.String,
}
HOURLY_COLUMNS = [
    "hour",
    *KEYS,
    "delivered",
    "failed",
    "delivered_nanos",
    *STAGE_COLUMNS.values(),
    "waste_nanos",
    "cache_hits",
    "cache_lookups",
]


@dataclass
class DetectionResult:
    ran: bool
    series: int = 0  # judged: with enough delivered renders in the window
    present: int = 0  # with any render in the window
    opened: list[Decision] = field(default_factory=list)
    resolved: list[Decision] = field(default_factory=list)
    seconds: float = 0.0


def _read_renders(raw: psycopg.Connection[Any], since: datetime, until: datetime) -> pl.DataFrame:
    cols = ", ".join(
        c if c != "rendered_at" else "rendered_at AT TIME ZONE 'UTC' AS rendered_at"
        for c in RENDER_FRAME_COLUMNS
    )
    query = psycopg.ClientCursor(raw).mogrify(
        f"SELECT {cols} FROM render_rollup WHERE rendered_at >= %s AND rendered_at <= %s",
        (since, until),
    )
    schema = {**_RENDER_SCHEMA, "rendered_at": pl.Datetime("us")}
    frame = copy_out(raw, query, schema)
    return frame.with_columns(pl.col("rendered_at").dt.replace_time_zone("UTC"))


def _refresh_hourly(raw: psycopg.Connection[Any], renders: pl.DataFrame, since: datetime) -> None:
    """Replace the hours from ``since`` with sums of the renders read."""
    hours = hourly_frame(renders.lazy()).collect().select(HOURLY_COLUMNS)
    raw.execute("DELETE FROM alert_hourly WHERE hour >= %s", (since,))
    copy_in(raw, "alert_hourly", hours)


def _read_hourly(raw: psycopg.Connection[Any], now: datetime, rule: Rule) -> pl.DataFrame:
    top = now.replace(minute=0, second=0, microsecond=0)
    wanted = [
        top - timedelta(days=k) + timedelta(hours=o)
        for k in range(1, rule.baseline_days + 1)
        for o in (-1, 0, 1)
    ]
    cols = ", ".join(
        c if c != "hour" else "hour AT TIME ZONE 'UTC' AS hour" for c in HOURLY_COLUMNS
    )
    query = psycopg.ClientCursor(raw).mogrify(
        f"SELECT {cols} FROM alert_hourly WHERE hour = ANY(%s)", (wanted,)
    )
    schema = {c: pl.Int128 if c.endswith("_nanos") else pl.Int64 for c in HOURLY_COLUMNS} | {
        "hour": pl.Datetime("us"),
        "tenant_id": pl.String,
        "use_case": pl.String,
        "currency": pl.String,
    }
    return copy_out(raw, query, schema).with_columns(pl.col("hour").dt.replace_time_zone("UTC"))


def _judgeable(
    recent: pl.DataFrame, hourly: pl.DataFrame, rule_for: Any, result: DetectionResult
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Only series with enough delivered renders to be judged (most, at any moment, have
    not): the rest would be measured only to learn that."""
    counts = recent.filter(pl.col("outcome") == "delivered").group_by(KEYS).len()
    result.present = recent.select(KEYS).unique().height
    judged = [(t, u, c) for t, u, c, n in counts.iter_rows() if n >= rule_for(t, u).min_renders]
    enough = pl.DataFrame(judged, schema=dict.fromkeys(KEYS, pl.String), orient="row")
    return recent.join(enough, on=KEYS, how="semi"), hourly.join(enough, on=KEYS, how="semi")


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


def run_detection(
    engine: Engine,
    rules: Any = None,
    now: datetime | None = None,
    *,
    backfill: bool = False,
) -> DetectionResult:
    """One pass; ``rules(tenant, use_case) -> Rule``. Skips if another process runs it.

    The hourly series is refreshed for the last ``window_hours``; on the first run (an empty
    ``alert_hourly``, as migration 0013 leaves it), or with ``backfill`` (after a rollup
    rebuild, or renders that arrived more than hours late), for the whole baseline period.
    A rule is per tenant and use case and applies to each of its currencies' series alike.
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
            latest = raw.execute("SELECT max(hour) FROM alert_hourly").fetchone()
            window = now - timedelta(hours=default.window_hours)
            first_run = backfill or latest is None or latest[0] is None
            since = now - timedelta(days=default.baseline_days + 1) if first_run else window
            since = since.replace(minute=0, second=0, microsecond=0)
            renders = _read_renders(raw, since, now)
            _refresh_hourly(raw, renders, since)
            hourly = _read_hourly(raw, now, default)
            recent = renders.filter(pl.col("rendered_at") >= window)
            state = _state(raw)
            times = np.array([int(now.timestamp())], dtype=np.int64)
            recent, hourly = _judgeable(recent, hourly, rule_for, result)
            judged = build(recent, hourly)
            _adopt(state, judged)
            for series in judged:
                result.series += 1
                rule = rule_for(series.tenant, series.use_case)
                mine = state.setdefault((series.tenant, series.use_case, series.currency), {})
                m = measure(series, times, rule)
                for d in decide(series, m, 0, rule, mine):
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

"""``/metrics`` in Prometheus format: what the ledger holds, read at scrape time, plus this
process's ingest counters."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.fx import FxError, MissingRate, fx_table
from ledger.journal import recorded_at
from ledger.money import EXACT
from ledger.tables import STAGE_COLUMNS
from reports.budgets import current, status
from reports.source import UNREADABLE

log = logging.getLogger(__name__)

_LAG_SQL = """
SELECT (SELECT coalesce(max(last_seq), 0) FROM blocks),
       (SELECT coalesce(max(last_seq), 0) FROM rollup_checkpoints WHERE job = 'rollup')
"""
_STAGES = list(STAGE_COLUMNS)
_COST_SQL = f"""
SELECT tenant_id, use_case, currency, avg(total_nanos)::float8, count(*),
       {", ".join(f"avg({STAGE_COLUMNS[st]})::float8" for st in _STAGES)}
FROM render_rollup WHERE outcome = 'delivered' AND day >= current_date - 1
GROUP BY tenant_id, use_case, currency
"""
_COST_BY_DAY_SQL = """
SELECT tenant_id, use_case, currency, day, sum(total_nanos), count(*)
FROM render_rollup WHERE outcome = 'delivered' AND day >= current_date - 1
GROUP BY tenant_id, use_case, currency, day
"""
# The last complete hour of every pool that held capacity in it.
_UTILISATION_SQL = """
SELECT pool, sum(busy_seconds) / sum(held_seconds) FROM pool_hourly
WHERE hour = date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '1 hour'
GROUP BY pool HAVING sum(held_seconds) > 0
"""


_OPEN_ALERTS_SQL = """
SELECT tenant_id, signal, count(*) FROM (
    SELECT alert_id, min(tenant_id) AS tenant_id, min(signal) AS signal FROM alert_events
    GROUP BY alert_id HAVING bool_and(kind <> 'resolved')
) AS open GROUP BY 1, 2
"""


class LedgerCollector(Collector):
    def __init__(self, engine: Engine, currency: str | None = None) -> None:
        self.engine = engine
        self.currency = currency  # also expose cost per render converted to it

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with connection(self.engine) as raw:
            head, done = raw.execute(_LAG_SQL).fetchone() or (0, 0)
            oldest = recorded_at(raw, done + 1) if head > done else None
            costs = raw.execute(_COST_SQL).fetchall()
            open_alerts = raw.execute(_OPEN_ALERTS_SQL).fetchall()
            converted = self._converted(raw) if self.currency else []
            pools = raw.execute(_UTILISATION_SQL).fetchall()
            now = datetime.now(UTC)
            budgets = [
                (t, status(raw, t, b, now)) for t, (_, bs) in current(raw).items() for b in bs
            ]
        # A count that only grows is a counter (``rate()`` works on it): the log's last seq.
        yield CounterMetricFamily("renderledger_events", "Events in the ledger (last seq)", head)
        yield GaugeMetricFamily(
            "renderledger_rollup_lag_events", "Events not yet in the rollups", head - done
        )
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "renderledger_rollup_lag_seconds", "Age of the oldest event not yet rolled up", age
        )
        # Per currency: a mean of two currencies' costs would mean nothing.
        per_render = GaugeMetricFamily(
            "renderledger_cost_per_render_nanos",
            "Mean cost per delivered render since yesterday (UTC), in nanos of its currency",
            labels=["tenant", "use_case", "currency"],
        )
        renders = GaugeMetricFamily(
            "renderledger_delivered_renders",
            "Delivered renders since yesterday (UTC)",
            labels=["tenant", "use_case", "currency"],
        )
        by_stage = GaugeMetricFamily(
            "renderledger_stage_cost_per_render_nanos",
            "Mean cost of each stage per delivered render since yesterday (UTC), in nanos of "
            "its currency; the stages of a series add up to its cost per render",
            labels=["tenant", "use_case", "stage", "currency"],
        )
        for tenant, use_case, currency, mean, count, *stages in costs:
            per_render.add_metric([tenant, use_case, currency], mean)
            renders.add_metric([tenant, use_case, currency], count)
            for stage, stage_mean in zip(_STAGES, stages, strict=True):
                by_stage.add_metric([tenant, use_case, stage, currency], stage_mean)
        yield per_render
        yield renders
        yield by_stage
        if self.currency:
            target = GaugeMetricFamily(
                "renderledger_cost_per_render_converted_nanos",
                "Mean cost per delivered render since yesterday (UTC), every currency converted "
                "to the label's at each day's FX rate, in its nanos",
                labels=["tenant", "use_case", "currency"],
            )
            for tenant, use_case, mean in converted:
                target.add_metric([tenant, use_case, self.currency], mean)
            yield target
        utilisation = GaugeMetricFamily(
            "renderledger_pool_utilisation",
            "Busy share of the GPU-seconds a pool held in the last complete hour (UTC)",
            labels=["pool"],
        )
        for pool, share in pools:
            utilisation.add_metric([pool], float(share))
        yield utilisation
        used = GaugeMetricFamily(
            "renderledger_budget_used_ratio",
            "This month's (UTC) spend over its budget; 1 is the whole budget",
            labels=["tenant", "use_case", "currency"],
        )
        ahead = GaugeMetricFamily(
            "renderledger_budget_forecast_ratio",
            "This month's spend forecast at its end, over its budget",
            labels=["tenant", "use_case", "currency"],
        )
        for tenant, st in budgets:
            labels = [tenant, st.budget.use_case or "*", st.budget.currency]
            if st.used is not None:
                used.add_metric(labels, st.used)
            if st.forecast_ratio is not None:
                ahead.add_metric(labels, st.forecast_ratio)
        yield used
        yield ahead
        alerts = GaugeMetricFamily(
            "renderledger_open_alerts",
            "Alerts opened and not resolved (acknowledged ones included)",
            labels=["tenant", "signal"],
        )
        for tenant, signal, count in open_alerts:
            alerts.add_metric([tenant, signal], count)
        yield alerts
        unreadable = CounterMetricFamily(
            "renderledger_unreadable_attributes",
            "Attribute values the rollups of this process could not read and treated as absent",
            labels=["attribute"],
        )
        for name, count in sorted(UNREADABLE.items()):
            unreadable.add_metric([name], count)
        yield unreadable

    def _converted(self, raw: psycopg.Connection[Any]) -> list[tuple[str, str, float]]:
        """(tenant, use case, mean) in ``self.currency``; a series with a day the FX table
        has no rate for is left out (and logged), never shown in the wrong currency."""
        assert self.currency is not None
        rows = raw.execute(_COST_BY_DAY_SQL).fetchall()
        if not rows:
            return []
        days = [r[3] for r in rows]
        try:
            fx = fx_table(raw, None, min(days), max(days))
        except FxError as exc:
            log.warning("metrics: no cost per render in %s: %s", self.currency, exc)
            return []
        sums: dict[tuple[str, str], list[Decimal]] = {}
        skipped: set[tuple[str, str]] = set()
        for tenant, use_case, currency, day, nanos, count in rows:
            key = (tenant, use_case)
            try:
                amount = fx.convert(nanos, currency, self.currency, day)
            except MissingRate as exc:
                log.warning("metrics: %s/%s left out: %s", tenant, use_case, exc)
                skipped.add(key)
                continue
            total = sums.setdefault(key, [Decimal(0), Decimal(0)])
            total[0] += amount
            total[1] += count
        return [
            (t, u, float(EXACT.divide(total, count)))
            for (t, u), (total, count) in sorted(sums.items())
            if (t, u) not in skipped and count
        ]


class Metrics:
    """One registry per app, so tests and several apps in a process do not collide.

    Under ``serve --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set before any worker starts),
    each worker's counters and histograms live in files there, and a scrape answered by any
    worker sums every worker's (prometheus_client's multiprocess mode); the ledger's own
    figures are read from the database, the same whichever worker answers.
    """

    def __init__(self, engine: Engine, currency: str | None = None) -> None:
        self.ledger = LedgerCollector(engine, currency)
        self.registry = CollectorRegistry()
        self.registry.register(self.ledger)
        self.ingested = Counter(
            "renderledger_ingested_events",
            "Events accepted by this process",
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "renderledger_ingest_request_seconds",
            "POST /v1/events latency",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )

    def scrape(self) -> bytes:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        registry.register(self.ledger)
        return generate_latest(registry)

    def observe_ingest(self, started: float, status: int) -> None:
        self.ingest_seconds.labels(str(status)).observe(time.perf_counter() - started)

"""``/metrics`` in Prometheus format: what the ledger holds, read at scrape time, plus this
process's ingest counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.journal import recorded_at
from reports.source import UNREADABLE

_LAG_SQL = """
SELECT (SELECT coalesce(max(last_seq), 0) FROM blocks),
       (SELECT coalesce(max(last_seq), 0) FROM rollup_checkpoints WHERE job = 'rollup')
"""
_COST_SQL = """
SELECT tenant_id, use_case, currency, avg(total_nanos)::float8, count(*)
FROM render_rollup WHERE outcome = 'delivered' AND day >= current_date - 1
GROUP BY tenant_id, use_case, currency
"""


_OPEN_ALERTS_SQL = """
SELECT tenant_id, signal, count(*) FROM (
    SELECT alert_id, min(tenant_id) AS tenant_id, min(signal) AS signal FROM alert_events
    GROUP BY alert_id HAVING bool_and(kind <> 'resolved')
) AS open GROUP BY 1, 2
"""


class LedgerCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        with connection(self.engine) as raw:
            head, done = raw.execute(_LAG_SQL).fetchone() or (0, 0)
            oldest = recorded_at(raw, done + 1) if head > done else None
            costs = raw.execute(_COST_SQL).fetchall()
            open_alerts = raw.execute(_OPEN_ALERTS_SQL).fetchall()
        yield GaugeMetricFamily("renderledger_events", "Events in the ledger (last seq)", head)
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
        for tenant, use_case, currency, mean, count in costs:
            per_render.add_metric([tenant, use_case, currency], mean)
            renders.add_metric([tenant, use_case, currency], count)
        yield per_render
        yield renders
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


class Metrics:
    """One registry per app, so tests and several apps in a process do not collide."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(engine))
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

    def observe_ingest(self, started: float, status: int) -> None:
        self.ingest_seconds.labels(str(status)).observe(time.perf_counter() - started)

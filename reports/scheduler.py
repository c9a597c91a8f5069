"""APScheduler inside the API process: the rollup every N seconds, one run at a time.

The job takes a PostgreSQL advisory lock, so any number of API processes may schedule it
and only one runs it; the others skip that tick.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from reports.jobs import run_rollup

log = logging.getLogger(__name__)


def _rollup(engine: Engine, chunk_events: int) -> None:
    try:
        result = run_rollup(engine, chunk_events=chunk_events)
    except Exception:  # a failed tick must not kill the scheduler; the next one retries
        log.exception("rollup failed; retrying at the next interval")
        return
    if result.ran and result.events:
        log.info("rollup: %d events in %.2fs", result.events, result.seconds)


def start(engine: Engine, interval_s: int, chunk_events: int = 1_000_000) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        daemon=True, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    )
    scheduler.add_job(
        _rollup,
        "interval",
        seconds=interval_s,
        id="rollup",
        args=(engine, chunk_events),
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return scheduler

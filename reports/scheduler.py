"""APScheduler inside the API process: the rollup and the allocation every N seconds, one
run at a time each, alert and billing webhooks every few seconds as jobs of their own, and
last month's draft invoices on the 1st.

Each job takes its PostgreSQL advisory lock (ledger/locks.py), so any number of API
processes may schedule it and only one runs it; the others skip that tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.locks import ALERTS
from reports.alerts.utilisation import judge_pools
from reports.allocation_job import run_allocation
from reports.archive_settings import HasArchive
from reports.billing.monthly import draft_last_month
from reports.billing.parties import Issuer
from reports.jobs import run_rollup

log = logging.getLogger(__name__)


Step = tuple[str, Callable[[], object]]


def _rollup(engine: Engine, chunk_events: int, after: tuple[Step, ...]) -> None:
    try:
        result = run_rollup(engine, chunk_events=chunk_events)
    except Exception:  # a failed tick must not kill the scheduler; the next one retries
        log.exception("rollup failed; retrying at the next interval")
        return
    if result.ran and result.events:
        log.info("rollup: %d events in %.2fs", result.events, result.seconds)
    if not result.ran:
        return
    for name, step in after:  # each on its own: a failed detection still judges budgets
        try:
            step()
        except Exception:  # the same: retried at the next tick
            log.exception("after the rollup, %s failed", name)


def _allocation(engine: Engine, floor: float | None) -> None:
    try:
        result = run_allocation(engine)
        if result.ran and floor is not None:
            with job_lock(engine, ALERTS) as raw:
                if raw is not None:
                    with raw.transaction():
                        judge_pools(raw, floor)
    except Exception:  # the checkpoint did not move; the next tick repeats the run whole
        log.exception("allocation failed; retrying at the next interval")
        return
    if result.ran and result.rows_written:
        log.info(
            "allocation: %d hours, %d rows in %.2fs",
            result.hours,
            result.rows_written,
            result.seconds,
        )


def _webhooks(job_id: str, deliver: Callable[[], None]) -> None:
    try:
        deliver()
    except Exception:  # the outbox keeps the events; the next tick tries again
        log.exception("%s: delivery failed", job_id)


def _archive(export: Callable[[], object]) -> None:
    try:
        export()
    except Exception:  # nothing is lost: the next run starts after the last snapshot
        log.exception("archive export failed; retrying at the next interval")


def _invoices(
    engine: Engine, target: str, s3: Any, issuer: Issuer | None, history: HasArchive | None
) -> None:
    try:
        draft_last_month(engine, target, s3, issuer=issuer, archive=history)
    except Exception:  # logged; the drafts can be made by hand with `invoice export`
        log.exception("monthly invoice drafts failed")


def start(
    engine: Engine,
    interval_s: int,
    chunk_events: int = 1_000_000,
    invoices_to: str | None = None,
    s3: Any = None,
    after_rollup: Callable[[], object] | None = None,
    webhooks: Callable[[], None] | None = None,
    webhook_interval_s: float = 5.0,
    utilisation_floor: float | None = None,
    billing_webhooks: Callable[[], None] | None = None,
    budgets: Callable[[], object] | None = None,
    issuer: Issuer | None = None,
    archive: Callable[[], object] | None = None,
    archive_interval_s: int = 0,
    history: HasArchive | None = None,
) -> BackgroundScheduler:
    """The rollup every ``interval_s`` (0: none), then ``after_rollup`` (alert detection)
    and ``budgets`` (budget judging), so both see the spend just rolled up;
    ``webhooks`` (alerts) and ``billing_webhooks`` every ``webhook_interval_s``, each a job of
    its own on a thread of its own (one run at a time, late ticks coalesced), so a slow
    receiver delays only later webhooks to it; with ``invoices_to``,
    last month's draft invoices at 00:30 UTC on the 1st; with ``archive``, the export of
    sealed blocks to the columnar history every ``archive_interval_s`` (the drafts read
    that history through ``history``'s settings). After each
    allocation run, pools under ``utilisation_floor`` for the last hour are judged
    (reports/alerts/utilisation.py)."""
    scheduler = BackgroundScheduler(
        daemon=True, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    )
    steps = tuple(
        (name, step)
        for name, step in (("alert detection", after_rollup), ("budgets", budgets))
        if step is not None
    )
    if interval_s > 0:
        scheduler.add_job(
            _rollup,
            "interval",
            seconds=interval_s,
            id="rollup",
            args=(engine, chunk_events, steps),
            next_run_time=datetime.now(UTC),
        )
        # Its own job: capacity and overheads arrive without any event to roll up.
        scheduler.add_job(
            _allocation,
            "interval",
            seconds=interval_s,
            id="allocation",
            args=(engine, utilisation_floor),
        )
    for job_id, deliver in (("webhooks", webhooks), ("billing-webhooks", billing_webhooks)):
        if deliver is not None:
            scheduler.add_job(
                _webhooks,
                "interval",
                seconds=webhook_interval_s,
                id=job_id,
                args=(job_id, deliver),
                max_instances=1,
                coalesce=True,
            )
    if archive is not None and archive_interval_s > 0:
        # Its own job: an export of a large backlog must not hold up the rollup.
        scheduler.add_job(
            _archive, "interval", seconds=archive_interval_s, id="archive", args=(archive,)
        )
    if invoices_to:
        scheduler.add_job(
            _invoices,
            "cron",
            day=1,
            hour=0,
            minute=30,
            timezone="UTC",
            id="invoices",
            args=(engine, invoices_to, s3, issuer, history),
        )
    scheduler.start()
    return scheduler

"""The scheduler runs the archive export as a job of its own, and a failing run is retried."""

from __future__ import annotations

import threading

from ledger.store import Ledger
from reports import scheduler


def test_the_archive_export_runs_on_its_interval_and_survives_a_failure(ledger: Ledger) -> None:
    calls: list[int] = []
    twice = threading.Event()

    def export() -> None:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        raise RuntimeError("warehouse unreachable")  # logged; the next tick runs again

    jobs = scheduler.start(ledger.engine, 0, archive=export, archive_interval_s=1)
    try:
        assert twice.wait(20), "the export did not run twice within 20 s"
        assert {job.id for job in jobs.get_jobs()} == {"archive"}
    finally:
        jobs.shutdown(wait=True)
    off = scheduler.start(ledger.engine, 0, archive=export, archive_interval_s=0)
    try:
        assert off.get_jobs() == []  # 0: run `renderledger archive export` by hand
    finally:
        off.shutdown(wait=True)

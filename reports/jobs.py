"""The rollup job: read new events by position, update the rollups, move the checkpoint.

Each chunk is one transaction that writes the rollup rows *and* the checkpoint, so a
crash can neither count an event twice nor skip one. A session advisory lock keeps a
second process (another API replica, a CLI run) from running the job at the same time.
How rows are merged lives in ``reports.rollup_writes``; the rebuild in
``reports.rollup_rebuild``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.journal import head as ledger_head
from ledger.locks import ROLLUP
from reports.archive_settings import HasArchive
from reports.rollup_rebuild import rebuild as rebuild_rollups
from reports.rollup_writes import JOB, RollupResult, apply_chunk, checkpoint, save_checkpoint
from reports.source import read_events
from reports.tracing import traced

__all__ = ["JOB", "RollupResult", "apply_chunk", "checkpoint", "run_rollup"]


@traced("rollup")
def run_rollup(
    engine: Engine,
    *,
    rebuild: bool = False,
    chunk_events: int = 1_000_000,
    progress: Callable[[int, int], None] | None = None,
    stop_after_chunks: int | None = None,
    archive: HasArchive | None = None,
) -> RollupResult:
    """Bring the rollups up to the ledger's head; ``RollupResult(ran=False)`` if another runs.

    A rebuild reads archived history from ``archive``'s Iceberg table when given.

    ``stop_after_chunks`` ends the run early, as a crash between chunks would.
    """
    started = time.perf_counter()
    with job_lock(engine, ROLLUP) as session:
        if session is None:
            return RollupResult(False)
        if rebuild:
            # Small chunks keep the read-ahead pipeline full (measured best near 400k).
            chunk = min(chunk_events, 400_000)
            return rebuild_rollups(session, engine, archive, chunk, progress, started)
        return _run(session, chunk_events, progress, stop_after_chunks, started)


def _run(
    raw: psycopg.Connection[Any],
    chunk: int,
    progress: Callable[[int, int], None] | None,
    stop_after: int | None,
    started: float,
) -> RollupResult:
    with raw.transaction():
        position, head = checkpoint(raw), ledger_head(raw)
    total = head - position
    done = chunks = 0
    phases = dict.fromkeys(("read", "daily", "renders", "commit"), 0.0)
    while position < head and (stop_after is None or chunks < stop_after):
        hi = min(position + chunk, head)
        with raw.transaction():
            clock = time.perf_counter()
            events = read_events(raw, position + 1, hi)
            phases["read"] += time.perf_counter() - clock
            apply_chunk(raw, events, phases)
            save_checkpoint(raw, hi, events.height)
            clock = time.perf_counter()
        phases["commit"] += time.perf_counter() - clock
        done += hi - position
        position, chunks = hi, chunks + 1
        if progress:
            progress(done, total)
    seconds = time.perf_counter() - started
    return RollupResult(True, done, chunks, position, seconds, phases)

"""The rollup rebuild: every rollup row again from the whole history, archive and hot tail.

Run by ``reports.jobs.run_rollup(rebuild=True)`` under the job's lock.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import Engine

from ledger.tables import STAGE_COLUMNS
from reports import history, rollup_history
from reports.archive_settings import HasArchive
from reports.rollup_writes import DAILY_MERGE, RollupResult, save_checkpoint, upsert
from reports.rollups import (
    CACHE_COUNTS,
    DAILY_KEYS,
    DAILY_SUMS,
    FIRSTS,
    RENDER_COLUMNS,
    RENDER_KEYS,
    SUMS,
    combine,
    daily,
    render_partials,
)
from reports.source import copy_in, copy_out, uuid_text


def rebuild(
    raw: psycopg.Connection[Any],
    engine: Engine,
    archive: HasArchive | None,
    chunk: int,
    progress: Callable[[int, int], None] | None,
    started: float,
) -> RollupResult:
    """Replace the rollups and the checkpoint in one transaction while the log streams in:
    a crash leaves the old rollups whole (readers of the rollups wait for the commit).

    The rows come through ``reports.history``: the Iceberg archive (``archive``'s settings)
    up to its pinned snapshot, then PostgreSQL's hot tail; without one, PostgreSQL alone.
    Each chunk is aggregated into partials (``rollups``); rows no later chunk is likely to
    touch are written at once by a thread of their own (``_Writer``), so PostgreSQL stores
    them while the next chunk is read and aggregated, each batch sorted by (tenant, day):

    - a render is written once a chunk goes by without its events; a render written twice
      (a late event long after) has its rows read back and merged at the end, before the
      indexes are built, so no partial is kept in memory once written;
    - a daily row is written once the log is a day past its day (``_DAILY_LAG``); a
      late event's daily row for a day already written is merged by upsert at the end.
    """
    phases = dict.fromkeys(("read", "aggregate", "copy", "write", "index"), 0.0)
    written: list[pl.DataFrame] = []  # the keys of every render row written
    pending: pl.DataFrame | None = None  # render partials not yet written
    days: list[pl.DataFrame] = []  # daily partials not yet written
    late_days: list[pl.DataFrame] = []
    watermark: date | None = None  # daily rows up to this day are written
    chunks = 0
    with history.opened(engine, archive) as past, raw.transaction():
        head = past.head
        raw.execute("TRUNCATE render_rollup, daily_rollup")
        raw.execute("SELECT renderledger_render_rollup_unindex()")
        with _Writer(raw, phases) as writer:
            frames = rollup_history.rollup_frames(past, rows=chunk)
            clock = time.perf_counter()
            for events in frames:
                now = time.perf_counter()
                phases["read"] += now - clock
                chunks += 1
                lazy = events.lazy()
                # Renders: write those this chunk did not touch.
                new = render_partials(lazy).collect()
                if pending is None:
                    pending = new
                else:
                    touched = new.select(RENDER_KEYS)
                    done = pending.join(touched, on=RENDER_KEYS, how="anti")
                    if done.height:
                        written.append(done.select(RENDER_KEYS).unique())
                        writer.put("render_rollup", _render_rows(done))
                    kept = pending.join(touched, on=RENDER_KEYS, how="semi")
                    pending = pl.concat([kept, new])  # log order: first-wins stays first
                # Daily rows: write the days the log has left behind.
                fresh = daily(lazy).collect()
                if watermark is not None:
                    late_days.append(fresh.filter(pl.col("day") <= watermark))
                    fresh = fresh.filter(pl.col("day") > watermark)
                days.append(fresh)
                newest = fresh.select(pl.col("day").max()).item()
                if newest is not None and (watermark is None or newest - _DAILY_LAG > watermark):
                    watermark = newest - _DAILY_LAG
                    held = pl.concat(days)
                    ready = held.filter(pl.col("day") <= watermark)
                    days = [held.filter(pl.col("day") > watermark)]
                    if ready.height:
                        writer.put("daily_rollup", _daily_rows(ready))
                clock = time.perf_counter()
                phases["aggregate"] += clock - now
                if progress:
                    progress(int(events["seq"][-1]), head)
            if pending is not None and pending.height:
                written.append(pending.select(RENDER_KEYS).unique())
                writer.put("render_rollup", _render_rows(pending))
            if days:
                writer.put("daily_rollup", _daily_rows(pl.concat(days)))
            twice = _written_twice(written)
            wait = time.perf_counter()
        phases["write"] += time.perf_counter() - wait
        clock = time.perf_counter()
        if twice.height:
            _merge_written_twice(raw, twice)
        raw.execute("SET LOCAL maintenance_work_mem = '256MB'")
        raw.execute("SELECT renderledger_render_rollup_reindex()")
        if late_days:
            late = _daily_rows(pl.concat(late_days))
            if late.height:
                upsert(raw, "daily_rollup", late, DAILY_KEYS, DAILY_MERGE)
        save_checkpoint(raw, head, head, reset=True)
        phases["index"] = time.perf_counter() - clock
    seconds = time.perf_counter() - started
    return RollupResult(True, head, chunks, head, seconds, phases)


# A daily row is written once the newest event read is this far past its day (late events
# after that are merged by upsert at the end).
_DAILY_LAG = timedelta(days=1)


def _daily_rows(partials: pl.DataFrame) -> pl.DataFrame:
    """daily_rollup rows of these partials, in key order."""
    return partials.group_by(DAILY_KEYS).agg(pl.col(DAILY_SUMS).sum()).sort(DAILY_KEYS)


def _render_rows(partials: pl.DataFrame) -> pl.DataFrame:
    """render_rollup rows of these partials, in (tenant, day) order, ids as COPY text."""
    rows = combine(partials.lazy()).sort("tenant_id", "day", *RENDER_KEYS)
    return rows.with_columns(uuid_text()).collect()


def _written_twice(written: list[pl.DataFrame]) -> pl.DataFrame:
    """Render keys written in more than one batch (a late event after its render was)."""
    if not written:
        return pl.DataFrame(schema={"render_id": pl.Binary, "currency": pl.Categorical})
    keys = pl.concat(written)
    return keys.filter(pl.struct(RENDER_KEYS).is_duplicated()).unique()


def _merge_written_twice(raw: psycopg.Connection[Any], keys: pl.DataFrame) -> None:
    """Replace the rows of renders written more than once by their merge. The stored rows
    are partials again (a row with an outcome holds the render event's day and time; one
    without, its earliest day), merged in the order written (their last seq)."""
    raw.execute(
        "CREATE TEMP TABLE IF NOT EXISTS rebuilt_renders (render_id uuid, currency text) "
        "ON COMMIT DROP"
    )
    copy_in(raw, "rebuilt_renders", keys.with_columns(uuid_text()))
    found = copy_out(
        raw,
        f"SELECT {', '.join(RENDER_COLUMNS)} FROM render_rollup "
        "JOIN rebuilt_renders USING (render_id, currency) ORDER BY last_seq",
        _STORED_RENDER,
    )
    has_render = pl.col("outcome").is_not_null()
    partials = found.select(
        *RENDER_KEYS,
        "tenant_id",
        "use_case",
        pl.when(has_render).then(pl.col("day")).alias("render_day"),
        pl.col("day").alias("min_day"),
        pl.when(has_render)
        .then(pl.col("rendered_at").dt.convert_time_zone("UTC").dt.replace_time_zone(None))
        .alias("render_at"),
        *FIRSTS,
        *SUMS,
        "last_seq",
    )
    rows = combine(partials.lazy()).sort("tenant_id", "day", *RENDER_KEYS).collect()
    raw.execute(
        "DELETE FROM render_rollup AS r USING rebuilt_renders AS k "
        "WHERE r.render_id = k.render_id AND r.currency = k.currency"
    )
    copy_in(raw, "render_rollup", rows)


# render_rollup's columns as ``copy_out`` reads them back (uuids as text).
_STORED_RENDER: dict[str, Any] = {
    "render_id": pl.String,
    "currency": pl.String,
    "tenant_id": pl.String,
    "use_case": pl.String,
    "day": pl.Date,
    "rendered_at": pl.Datetime("us", "UTC"),
    **{c: pl.String for c in FIRSTS},
    "latency_ms": pl.Float64,
    **{c: pl.Int128 for c in SUMS[: 2 + len(STAGE_COLUMNS)]},
    **{c: pl.Int64 for c in CACHE_COUNTS},
    "cache_hits": pl.Int32,
    "cache_lookups": pl.Int32,
    "last_seq": pl.Int64,
}


class _Writer:
    """COPYs frames into the job's transaction from a thread of its own, in the order put;
    at most two frames wait. An error is raised in the caller at the next put or at exit."""

    def __init__(self, raw: psycopg.Connection[Any], phases: dict[str, float]) -> None:
        self._raw = raw
        self._phases = phases
        self._box: queue.Queue[tuple[str, pl.DataFrame] | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rollup-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._box.put(None)
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error

    def put(self, table: str, frame: pl.DataFrame) -> None:
        if self._error is not None:
            raise self._error
        self._box.put((table, frame))

    def _run(self) -> None:
        while (item := self._box.get()) is not None:
            if self._error is None:
                began = time.perf_counter()
                try:
                    copy_in(self._raw, *item)
                except BaseException as exc:  # raised in the caller
                    self._error = exc
                self._phases["copy"] += time.perf_counter() - began

"""The rollup job: read new events by position, update the rollups, move the checkpoint.

Each chunk is one transaction that writes the rollup rows *and* the checkpoint, so a
crash can neither count an event twice nor skip one. A session advisory lock keeps a
second process (another API replica, a CLI run) from running the job at the same time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.journal import head as ledger_head
from ledger.locks import ROLLUP
from ledger.tables import STAGE_CACHE_COLUMNS, STAGE_COLUMNS
from reports import history, rollup_history
from reports.archive_settings import HasArchive
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
    found,
    looked_up,
    render_partials,
)
from reports.source import copy_in, copy_out, read_events, uuid_text
from reports.tracing import traced

JOB = "rollup"


@dataclass(frozen=True)
class RollupResult:
    ran: bool
    events: int = 0
    chunks: int = 0
    last_seq: int = 0
    seconds: float = 0.0
    # Seconds by phase. A rebuild: waiting for rows, aggregating them, COPY (in a thread of
    # its own, overlapping the two), waiting for that writer at the end, then building the
    # indexes and merging late rows. An incremental run: reading, each table, the commit.
    phases: dict[str, float] = field(default_factory=dict)


def checkpoint(raw: psycopg.Connection[Any]) -> int:
    row = raw.execute("SELECT last_seq FROM rollup_checkpoints WHERE job = %s", (JOB,)).fetchone()
    return int(row[0]) if row else 0


def _upsert(
    raw: psycopg.Connection[Any],
    table: str,
    frame: pl.DataFrame,
    keys: list[str],
    assign: dict[str, str],
    order: Sequence[str] = (),
) -> None:
    """COPY into a temp table, then one INSERT … ON CONFLICT merging old (``t``) and new
    (``EXCLUDED``) rows column by column, inserted in ``order`` (else the keys')."""
    staging = f"staging_{table}"
    raw.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS")
    copy_in(raw, staging, frame)
    cols = ", ".join(frame.columns)
    updates = ", ".join(f"{c} = {assign[c]}" for c in frame.columns if c not in keys)
    raw.execute(
        # In key order, index lookups walk the B-tree instead of jumping about it; new rows
        # go to the end of the table in this order.
        f"INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {staging} "
        f"ORDER BY {', '.join(order or keys)} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )
    raw.execute(f"TRUNCATE {staging}")


# Merging a stored render row (t, earlier events) with a new partial (EXCLUDED, later ones):
# the same rules as ``rollups.combine``, in SQL, so no stored row is read back into Python.
_RENDER_MERGE = {
    **{c: f"t.{c} + EXCLUDED.{c}" for c in SUMS},
    **{c: f"coalesce(t.{c}, EXCLUDED.{c})" for c in (*FIRSTS, "tenant_id", "use_case")},
    "day": "CASE WHEN t.outcome IS NOT NULL THEN t.day WHEN EXCLUDED.outcome IS NOT NULL "
    "THEN EXCLUDED.day ELSE least(t.day, EXCLUDED.day) END",
    "rendered_at": "CASE WHEN t.outcome IS NOT NULL THEN t.rendered_at WHEN EXCLUDED.outcome "
    "IS NOT NULL THEN EXCLUDED.rendered_at ELSE least(t.rendered_at, EXCLUDED.rendered_at) END",
    "last_seq": "greatest(t.last_seq, EXCLUDED.last_seq)",
    # Derived again from the merged per-stage counts, never added: a lookup seen in two
    # chunks is still one lookup.
    **{
        name: " + ".join(
            f"({flag(f't.{h} + EXCLUDED.{h}', f't.{m} + EXCLUDED.{m}')})::int"
            for h, m in STAGE_CACHE_COLUMNS.values()
        )
        for name, flag in (("cache_hits", found), ("cache_lookups", looked_up))
    },
}
_DAILY_MERGE = {c: f"t.{c} + EXCLUDED.{c}" for c in DAILY_SUMS}
_RENDER_ORDER = ("tenant_id", "day", *RENDER_KEYS)


def apply_chunk(
    raw: psycopg.Connection[Any], events: pl.DataFrame, phases: dict[str, float] | None = None
) -> None:
    """Fold one slice of the log into the rollups; every merge is additive or first-wins.
    ``phases`` gains the seconds spent on each table."""
    seconds = phases if phases is not None else {}
    clock = time.perf_counter()
    lazy = events.lazy()
    _upsert(raw, "daily_rollup", daily(lazy).collect(), DAILY_KEYS, _DAILY_MERGE)
    now = time.perf_counter()
    seconds["daily"] = seconds.get("daily", 0.0) + now - clock
    renders = combine(render_partials(lazy)).collect()
    # New renders are appended in (tenant, day) order, as a rebuild writes them: a run's
    # renders of one tenant share pages instead of each taking one (render ids are random).
    _upsert(raw, "render_rollup", renders, RENDER_KEYS, _RENDER_MERGE, _RENDER_ORDER)
    seconds["renders"] = seconds.get("renders", 0.0) + time.perf_counter() - now


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
            return _rebuild(session, engine, archive, chunk, progress, started)
        return _run(session, chunk_events, progress, stop_after_chunks, started)


def _rebuild(
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
                _upsert(raw, "daily_rollup", late, DAILY_KEYS, _DAILY_MERGE)
        _save_checkpoint(raw, head, head, reset=True)
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
            _save_checkpoint(raw, hi, events.height)
            clock = time.perf_counter()
        phases["commit"] += time.perf_counter() - clock
        done += hi - position
        position, chunks = hi, chunks + 1
        if progress:
            progress(done, total)
    seconds = time.perf_counter() - started
    return RollupResult(True, done, chunks, position, seconds, phases)


def _save_checkpoint(
    raw: psycopg.Connection[Any], last_seq: int, applied: int, *, reset: bool = False
) -> None:
    total = (
        "EXCLUDED.events_applied"
        if reset
        else ("rollup_checkpoints.events_applied + EXCLUDED.events_applied")
    )
    raw.execute(
        "INSERT INTO rollup_checkpoints (job, last_seq, updated_at, events_applied) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (job) DO UPDATE SET last_seq = EXCLUDED.last_seq, "
        f"updated_at = EXCLUDED.updated_at, events_applied = {total}",
        (JOB, last_seq, datetime.now(UTC), applied),
    )

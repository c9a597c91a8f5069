"""The log's whole history as Arrow batches: the archive (one pinned Iceberg snapshot) for
seq 1..a, then PostgreSQL's hot tail for a+1..head. Every heavy reader goes through here.

Both parts come through ``reports.archive.select_log``'s columns and Arrow types, so a
consumer cannot tell them apart, and every batch is checked to continue the gapless seq:
a missing, doubled or reordered file would stop the read instead of skewing a sum.

The rollup's signed rows over it are ``reports.rollup_history``; invoice drafting reads a
window of it (``archive_tables_in``).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl
import pyarrow as pa
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.journal import head as ledger_head
from ledger.journal import pruned_through
from reports.archive import (
    Archived,
    ArchiveError,
    archived,
    arrow_schema,
    check_seq,
    load_table,
    log_ranges,
    opened_catalog,
    recorded_commits,
    roles,
)
from reports.archive_settings import HasArchive

if TYPE_CHECKING:
    from pyiceberg.table import Table


# What the rollup reads of a row (``event_id`` only when reversals need their targets).
ROLLUP_COLUMNS = (
    "seq",
    "tenant_id",
    "use_case",
    "render_id",
    "stage",
    "sku",
    "quantity",
    "occurred_at",
    "cache",
    "outcome",
    "reverses",
    "cost_nanos",
    "baseline_cost_nanos",
    "currency",
    "latency_ms",
    "latency_ms_unreadable",
    "wall_s",
    "wall_s_unreadable",
    "model",
    "pipeline_version",
    "gpu_type",
    "precision",
)


@dataclass(frozen=True)
class History:
    """The log as of one moment: ``archive`` (None: PostgreSQL only) then the hot tail."""

    archive: Archived
    table: Table | None
    head: int
    url: str
    role: str | None

    @property
    def tail_from(self) -> int:
        return self.archive.last_seq + 1


@contextmanager
def opened(engine: Engine, settings: HasArchive | None) -> Iterator[History]:
    """Pin the archive's current snapshot, then read the head: the tail is everything after
    the snapshot. Without ``settings``, or before the first export, all of it is the tail."""
    role, url = roles(engine)
    if settings is None:
        with connection(engine) as raw:
            head, pruned = ledger_head(raw), pruned_through(raw)
        if pruned:
            raise ArchiveError(f"seq 1..{pruned} was pruned to the archive: read it from there")
        yield History(archived(None), None, head, url, role)
        return
    with opened_catalog(engine, settings) as catalog:
        table = load_table(catalog, settings)
        with connection(engine) as raw:
            state = archived(table, recorded=recorded_commits(raw))
            head, pruned = ledger_head(raw), pruned_through(raw)
        if state.last_seq < pruned:  # prune never drops what the archive lacks
            raise ArchiveError(
                f"seq 1..{pruned} was pruned, the archive holds only 1..{state.last_seq}"
            )
        yield History(state, table, max(head, state.last_seq), url, role)


def with_seq(columns: Sequence[str]) -> tuple[str, ...]:
    """``columns`` and ``seq``, which every read checks."""
    return tuple(columns) if "seq" in columns else ("seq", *columns)


def lower_seq(task: Any) -> int:
    bound = task.file.lower_bounds.get(1)  # field 1 is seq
    if bound is None:
        raise ArchiveError(f"{task.file.file_path} has no seq statistics")
    return int.from_bytes(bound, "little", signed=True)


def archive_batches(history: History, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The archived rows in seq order, a file at a time (files are seq ranges)."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    table, state = history.table, history.archive
    if table is None or state.snapshot_id is None:
        return
    read = with_seq(columns)
    scan = table.scan(snapshot_id=state.snapshot_id, selected_fields=read)
    projected = scan.projection()
    schema = arrow_schema(columns)
    expected = 1
    for task in sorted(scan.plan_files(), key=lower_seq):
        reader = ArrowScan(table.metadata, table.io, projected, AlwaysTrue())
        for batch in reader.to_record_batches([task]):
            if batch.num_rows:
                expected = check_seq(batch, expected)
                yield batch.select(list(columns)).cast(schema)
    if expected != state.last_seq + 1:
        raise ArchiveError(
            f"the archive ends at seq {expected - 1}; its commits say {state.last_seq}"
        )


def tail_batches(
    history: History, columns: Sequence[str], chunk: int = 400_000
) -> Iterator[pa.RecordBatch]:
    """The hot tail in seq order, read in ranges of ``chunk`` with two ranges in flight."""
    lo, hi = history.tail_from, history.head
    return log_ranges(history.url, history.role, columns, lo, hi, chunk)


def batches(
    history: History, columns: Sequence[str] = ROLLUP_COLUMNS, chunk: int = 400_000
) -> Iterator[pa.RecordBatch]:
    """Every row of the log, seq 1..head, archive first, in ``columns``."""
    yield from archive_batches(history, columns)
    yield from tail_batches(history, columns, chunk)


def frames(
    history: History, columns: Sequence[str] = ROLLUP_COLUMNS, rows: int = 400_000
) -> Iterator[pl.DataFrame]:
    """``batches`` as Polars frames of about ``rows`` rows, read one frame ahead."""
    return _gathered(batches(history, columns, rows), rows)


def _gathered(source: Iterator[pa.RecordBatch], rows: int) -> Iterator[pl.DataFrame]:
    def gather() -> Iterator[pl.DataFrame]:
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in source:
            pending.append(batch)
            count += batch.num_rows
            if count >= rows:
                yield _frame(pending)
                pending, count = [], 0
        if pending:
            yield _frame(pending)

    yield from ahead(gather())


def _frame(pending: list[pa.RecordBatch]) -> pl.DataFrame:
    frame = pl.from_arrow(pa.Table.from_batches(pending))
    assert isinstance(frame, pl.DataFrame)
    return frame


T = TypeVar("T")
_DONE = object()


def ahead(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """``items`` produced by a thread of their own, ``depth`` ahead of the consumer."""
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="history-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = box.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join()


# -- a window of the archive, files chosen by their statistics --------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedFile:
    """One data file of the pinned snapshot: the seq range it holds, exactly, and the
    ``occurred_at`` bounds of its statistics (microseconds since the epoch; None: none)."""

    path: str
    first_seq: int
    last_seq: int
    earliest: int | None
    latest: int | None


def _bound(found: dict[int, bytes], field: int) -> int | None:
    """A long or timestamptz bound of a file's statistics (8 bytes, little-endian)."""
    raw = found.get(field)
    return None if raw is None else int.from_bytes(raw, "little", signed=True)


def micros(at: datetime) -> int:
    """Microseconds since the epoch, exactly (Iceberg's timestamptz)."""
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def archive_files_in(
    history: History,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    through: int | None = None,
    after: int = 0,
) -> list[ArchivedFile]:
    """The files of the pinned snapshot that may hold an event with ``since <= occurred_at
    < until`` and ``after < seq <= through`` (a bound left out: no bound), in seq order.

    Files are chosen by their ``occurred_at`` and ``seq`` statistics (time follows seq but
    for late events, so a month is a few files plus the files that hold its late events).
    The skipped files are still accounted for: the planned files' seq bounds must tile
    1..last_seq of the pinned snapshot (a missing, doubled or overlapping file stops here),
    and ``read_archive_file`` checks that a file holds exactly its bounds."""
    table, state = history.table, history.archive
    if table is None or state.snapshot_id is None:
        return []
    if (since is not None and since.tzinfo is None) or (until is not None and until.tzinfo is None):
        raise ValueError("since and until must be aware datetimes")
    lo_us = None if since is None else micros(since)
    hi_us = None if until is None else micros(until)
    schema = table.schema()
    seq_id = schema.find_field("seq").field_id
    at_id = schema.find_field("occurred_at").field_id
    # Only the two columns whose statistics choose; the read names its own columns.
    scan = table.scan(snapshot_id=state.snapshot_id, selected_fields=("seq", "occurred_at"))
    chosen = []
    expected = 1
    for task in sorted(scan.plan_files(), key=lower_seq):
        first, last = lower_seq(task), _bound(task.file.upper_bounds, seq_id)
        if last is None or first != expected or last < first:
            raise ArchiveError(
                f"{task.file.file_path} holds seq {first}..{last}; expected {expected}.."
            )
        if task.delete_files:
            raise ArchiveError(f"{task.file.file_path} has deletes, which the reader cannot apply")
        expected = last + 1
        earliest = _bound(task.file.lower_bounds, at_id)
        latest = _bound(task.file.upper_bounds, at_id)
        if last <= after or (through is not None and first > through):
            continue
        if hi_us is not None and earliest is not None and earliest >= hi_us:
            continue
        if lo_us is not None and latest is not None and latest < lo_us:
            continue
        chosen.append(ArchivedFile(task.file.file_path, first, last, earliest, latest))
    if expected != state.last_seq + 1:
        raise ArchiveError(
            f"the archive's files end at seq {expected - 1}; its commits say {state.last_seq}"
        )
    return chosen


def read_archive_file(
    history: History, file: ArchivedFile, columns: Sequence[str], dictionary: Sequence[str] = ()
) -> pa.Table:
    """One file's rows straight from its Parquet: only ``columns``, those in ``dictionary``
    dictionary-encoded (Polars: categorical), uuids as their 16 bytes; checked to hold
    exactly ``file.first_seq..file.last_seq``, gapless and in order. Safe to call from
    several threads at once (pyarrow decodes without the GIL)."""
    import pyarrow.parquet as parquet

    assert history.table is not None
    read = with_seq(columns)
    with history.table.io.new_input(file.path).open() as stream:
        data = parquet.read_table(
            stream, columns=list(read), read_dictionary=[c for c in read if c in dictionary]
        )
    for i, spec in enumerate(data.schema):
        if isinstance(spec.type, pa.ExtensionType):  # Iceberg's uuid: its 16 bytes
            storage = [chunk.storage for chunk in data.column(i).chunks]
            data = data.set_column(
                i, spec.name, pa.chunked_array(storage, type=spec.type.storage_type)
            )
    at = file.first_seq
    for batch in data.to_batches():
        if batch.num_rows:
            at = check_seq(batch, at)
    if at != file.last_seq + 1:
        raise ArchiveError(
            f"{file.path} holds seq {file.first_seq}..{at - 1}, not ..{file.last_seq}"
        )
    return data.select(list(columns))


def read_archive_files(
    history: History,
    files: Sequence[ArchivedFile],
    columns: Sequence[str],
    *,
    dictionary: Sequence[str] = (),
    depth: int = 2,
) -> Iterator[pa.Table]:
    """``read_archive_file`` of each of ``files`` in their order, ``depth`` files read ahead
    by threads of their own while the consumer works on the one before."""
    if not files:
        return
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="archive-read") as pool:
        futures: deque[Future[pa.Table]] = deque()
        try:
            for i in range(len(files)):
                for file in files[i : i + depth + 1][len(futures) :]:
                    futures.append(
                        pool.submit(read_archive_file, history, file, columns, dictionary)
                    )
                yield futures.popleft().result()
        finally:
            for future in futures:
                future.cancel()


def archive_tables_in(
    history: History,
    columns: Sequence[str],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    through: int | None = None,
    after: int = 0,
    dictionary: Sequence[str] = (),
    depth: int = 2,
) -> Iterator[pa.Table]:
    """The archived rows of the files that may hold an event with ``since <= occurred_at <
    until`` and ``after < seq <= through``, a file at a time in seq order (``depth`` read
    ahead), straight from its Parquet: only ``columns``, those in ``dictionary``
    dictionary-encoded (Polars: categorical), uuids as their 16 bytes. Rows are not
    filtered: a file is read whole or skipped, and the caller applies the bounds.

    With no bounds it is the whole archive, every file checked: the files tile 1..last_seq
    (``archive_files_in``) and each holds exactly its seq range (``read_archive_file``)."""
    files = archive_files_in(history, since=since, until=until, through=through, after=after)
    yield from read_archive_files(history, files, columns, dictionary=dictionary, depth=depth)

"""Whole events read back across the pruned line: what ``archive prune`` dropped from
PostgreSQL comes from the archive (through ``reports.history``), the rest from the log.

``read_after`` is what ``GET /v1/events?after_seq=`` serves, ``read_render`` what a render
trace does (``GET /v1/renders/{id}``, ``?render_id=``); a reader cannot tell the two parts
apart. A render's pruned events are found by the seqs prune recorded for it
(``pruned_renders``), so only the files whose seq statistics hold them are read, and a
render with none pruned does not touch the archive at all.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from ledger.journal import StoredEvent, read_after_kept, read_render_kept
from reports import history
from reports.archive import ArchiveError, arrow_schema, check_seq
from reports.archive_settings import HasArchive

_FIELDS = StoredEvent._fields


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """An archived row (``to_pylist``) as the ``StoredEvent`` PostgreSQL would have returned:
    attributes parsed from their JSONB text as psycopg parses them, exact unit prices."""
    row["attributes"] = json.loads(row["attributes"])
    row["unit_price_nanos"] = Decimal(row["unit_price_nanos"])
    return StoredEvent(*(row[f] for f in _FIELDS))


def uuid_bytes(column: pa.Array) -> pa.Array:
    """An Iceberg uuid column as its 16 bytes: Arrow has no comparison or grouping kernels
    for the uuid extension type."""
    return column.storage if isinstance(column, pa.ExtensionArray) else column


def _upper_seq(task: Any) -> int:
    bound = task.file.upper_bounds.get(1)  # field 1 is seq
    if bound is None:
        raise ArchiveError(f"{task.file.file_path} has no seq statistics")
    return int.from_bytes(bound, "little", signed=True)


def _planned(
    past: history.History, lo: int, hi: int, columns: Sequence[str]
) -> tuple[list[Any], Any]:
    """The files that may hold seq ``lo..hi`` (by their seq statistics), in seq order, and a
    reader of their rows in that range."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual, Reference
    from pyiceberg.expressions.literals import literal
    from pyiceberg.io.pyarrow import ArrowScan

    table, state = past.table, past.archive
    if table is None or state.snapshot_id is None or state.last_seq < hi:
        raise ArchiveError(f"seq {lo}..{hi} is in neither PostgreSQL nor the archive")
    seq = Reference("seq")
    condition = And(
        GreaterThanOrEqual(term=seq, value=literal(lo)),
        LessThanOrEqual(term=seq, value=literal(hi)),
    )
    scan = table.scan(
        snapshot_id=state.snapshot_id, row_filter=condition, selected_fields=tuple(columns)
    )
    tasks = sorted(scan.plan_files(), key=history.lower_seq)
    return tasks, ArrowScan(table.metadata, table.io, scan.projection(), condition)


def range_batches(
    past: history.History, columns: Sequence[str], lo: int, hi: int
) -> Iterator[pa.RecordBatch]:
    """The archived rows ``lo <= seq <= hi`` in ``columns``, in seq order, a file at a time,
    checked to be exactly that range: a missing, doubled or misordered file stops the read.
    """
    tasks, reader = _planned(past, lo, hi, history.with_seq(columns))
    schema = arrow_schema(columns)
    expected = lo
    for task in tasks:
        for batch in reader.to_record_batches([task]):
            if batch.num_rows:
                expected = check_seq(batch, expected)
                yield batch.select(list(columns)).cast(schema)
    if expected != hi + 1:
        raise ArchiveError(f"the archive's files hold seq {lo}..{expected - 1}, not ..{hi}")


def _scanned(
    past: history.History,
    lo: int,
    hi: int,
    where: Callable[[pa.RecordBatch], pa.Array] | None = None,
    spans: Sequence[tuple[int, int]] = (),
) -> Iterator[StoredEvent]:
    """Archived events ``lo <= seq <= hi`` (and ``where``), in seq order, a file at a time;
    files wholly outside the range, or outside every one of ``spans`` if given (sorted,
    disjoint), are skipped by their seq statistics."""
    tasks, reader = _planned(past, lo, hi, _FIELDS)
    if spans:
        starts = [first for first, _ in spans]

        def holds(task: Any) -> bool:  # the last span starting at or before the file's end
            i = bisect.bisect_right(starts, _upper_seq(task)) - 1
            return i >= 0 and spans[i][1] >= history.lower_seq(task)

        tasks = [task for task in tasks if holds(task)]
    for task in tasks:
        for batch in reader.to_record_batches([task]):
            if where is not None:
                batch = batch.filter(where(batch))
            for row in batch.sort_by("seq").to_pylist():
                yield stored_event(row)


def read_after(
    engine: Engine,
    settings: HasArchive | None,
    after_seq: int,
    limit: int,
    tenant_id: str | None = None,
) -> list[StoredEvent]:
    """The next ``limit`` events after ``after_seq`` (of one tenant), from the archive where
    PostgreSQL no longer holds them, then from the log."""
    pruned, kept = read_after_kept(engine, after_seq, limit, tenant_id)
    if after_seq >= pruned:
        return kept
    if settings is None:
        raise ArchiveError(f"seq 1..{pruned} was pruned to the archive, which is not configured")

    def of_tenant(batch: pa.RecordBatch) -> pa.Array:
        return pc.equal(batch.column("tenant_id"), tenant_id)

    found: list[StoredEvent] = []
    with history.opened(engine, settings) as past:
        where = of_tenant if tenant_id is not None else None
        for event in _scanned(past, after_seq + 1, pruned, where):
            found.append(event)
            if len(found) == limit:
                return found
    return found + kept[: limit - len(found)]


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending seqs as their runs of consecutive values: [3, 4, 5, 9] → [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def read_render(
    engine: Engine,
    settings: HasArchive | None,
    render_id: UUID,
    visible: Callable[[str], bool] | None = None,
) -> list[StoredEvent]:
    """A render's events in seq order, whether pruned or still in PostgreSQL. With
    ``visible``, a render whose owner it refuses reads as none, before any archive read.

    The pruned ones are read from the files holding the seqs prune recorded for the render;
    a range pruned before those records existed (migration 0020) is read whole, filtered by
    render id, until the next prune records it. Every recorded seq must be found."""
    found = read_render_kept(engine, render_id)
    if visible is not None and found.owner is not None and not visible(found.owner.tenant_id):
        return []
    if not found.pruned and not found.unrecorded:
        return found.kept
    if settings is None:
        raise ArchiveError(f"render {render_id} has events in the archive, not configured")
    spans = sorted(_runs(sorted(found.pruned)) + found.unrecorded)
    wanted = pa.scalar(render_id.bytes, pa.binary(16))

    def of_render(batch: pa.RecordBatch) -> pa.Array:
        return pc.equal(uuid_bytes(batch.column("render_id")), wanted)

    with history.opened(engine, settings) as past:
        archived = list(_scanned(past, spans[0][0], found.pruned_through, of_render, spans))
    recorded = set(found.pruned)
    got = {e.seq for e in archived if not any(a <= e.seq <= b for a, b in found.unrecorded)}
    if got != recorded:
        missing, extra = sorted(recorded - got), sorted(got - recorded)
        raise ArchiveError(
            f"render {render_id}: the archive disagrees with the seqs prune recorded "
            f"(missing {missing[:5]}, not recorded {extra[:5]})"
        )
    return archived + found.kept

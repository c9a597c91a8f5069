"""Whole events read back in seq order across the pruned line: the range ``archive prune``
dropped from PostgreSQL comes from the archive (through ``reports.history``), the rest from
the log. What ``GET /v1/events?after_seq=`` serves; a follower cannot tell the two apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from ledger.journal import StoredEvent, read_after_kept
from reports import history
from reports.archive import ArchiveError
from reports.archive_settings import HasArchive

_FIELDS = StoredEvent._fields


def _first_seq(task: Any) -> int:
    bound = task.file.lower_bounds.get(1)  # field 1 is seq
    if bound is None:
        raise ArchiveError(f"{task.file.file_path} has no seq statistics")
    return int.from_bytes(bound, "little", signed=True)


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """An archived row (``to_pylist``) as the ``StoredEvent`` PostgreSQL would have returned:
    attributes parsed from their JSONB text as psycopg parses them, exact unit prices."""
    row["attributes"] = json.loads(row["attributes"])
    row["unit_price_nanos"] = Decimal(row["unit_price_nanos"])
    return StoredEvent(*(row[f] for f in _FIELDS))


def _archived(
    engine: Engine, settings: HasArchive, after: int, through: int, tenant_id: str | None
) -> Iterator[StoredEvent]:
    """Archived events ``after < seq <= through`` (of one tenant), in seq order, a file at a
    time; files wholly outside the range are skipped by their seq statistics."""
    from pyiceberg.expressions import (
        And,
        BooleanExpression,
        EqualTo,
        GreaterThan,
        LessThanOrEqual,
        Reference,
    )
    from pyiceberg.expressions.literals import literal
    from pyiceberg.io.pyarrow import ArrowScan

    with history.opened(engine, settings) as past:
        table, state = past.table, past.archive
        if table is None or state.snapshot_id is None or state.last_seq < through:
            raise ArchiveError(f"seq {after + 1}..{through} is in neither PostgreSQL nor archive")
        seq = Reference("seq")
        condition: BooleanExpression = And(
            GreaterThan(term=seq, value=literal(after)),
            LessThanOrEqual(term=seq, value=literal(through)),
        )
        if tenant_id is not None:
            condition = And(
                condition, EqualTo(term=Reference("tenant_id"), value=literal(tenant_id))
            )
        scan = table.scan(
            snapshot_id=state.snapshot_id, row_filter=condition, selected_fields=_FIELDS
        )
        reader = ArrowScan(table.metadata, table.io, scan.projection(), condition)
        for task in sorted(scan.plan_files(), key=_first_seq):
            for batch in reader.to_record_batches([task]):
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
    found: list[StoredEvent] = []
    for event in _archived(engine, settings, after_seq, pruned, tenant_id):
        found.append(event)
        if len(found) == limit:
            return found
    return found + kept[: limit - len(found)]

"""A capacity schedule: GPUs rented outside the renderer, one CSV row per span held.

::

    pool,start,end,gpus,description
    h100-a,2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,2,reserved for November
    h100-a,2026-11-03T08:00:00+01:00,2026-11-03T20:00:00+01:00,4,burst

Columns ``pool``, ``start``, ``end`` and ``gpus`` are required, ``event_id`` and
``description`` optional, any other is an error. Times are ISO-8601 with a zone. A row
without an ``event_id`` gets ``schedule_event_id(pool, start, end, gpus)``, so importing the
same file again is all duplicates. A file is written all or nothing: any bad row (named by
its line and column) and nothing is stored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import ValidationError
from sqlalchemy import Engine

from ingest.parsing import RowError
from ledger import capacity
from ledger.actual_costs import CapacityHeld, schedule_event_id
from ledger.errors import BatchInvalid, EventConflict

REQUIRED = ("pool", "start", "end", "gpus")
OPTIONAL = ("event_id", "description")
MAX_ROWS = capacity.MAX_BATCH
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 20
# The record's field → the file's column, so an error names what the user wrote.
_COLUMN = {"starts_at": "start", "ends_at": "end"}


class ScheduleInvalid(ValueError):
    """Rows that cannot be recorded; nothing was written."""

    def __init__(self, errors: list[RowError], total: int | None = None) -> None:
        self.errors = errors[:MAX_ERRORS]
        self.total = max(total or 0, len(errors))
        more = self.total - len(self.errors)
        lines = "; ".join(str(e) for e in self.errors)
        super().__init__(
            f"{self.total} bad row(s), nothing written: {lines}"
            + (f" (and {more} more)" if more else "")
        )


@dataclass(frozen=True, slots=True)
class ScheduleLoaded:
    rows: int
    accepted: int
    duplicates: int


def _time(text: str, column: str, line: int) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise RowError(line, column, f"not an ISO-8601 time: {text!r}") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise RowError(line, column, f"{text!r} has no time zone: add Z or an offset (+01:00)")
    return value


def _row(fields: dict[str, str], line: int) -> CapacityHeld:
    starts = _time(fields["start"], "start", line)
    ends = _time(fields["end"], "end", line)
    try:
        gpus = Decimal(fields["gpus"].strip())
    except InvalidOperation as exc:
        raise RowError(line, "gpus", f"not a number: {fields['gpus']!r}") from exc
    pool = fields["pool"].strip()
    doc: dict[str, Any] = {
        "pool": pool,
        "starts_at": starts,
        "ends_at": ends,
        "gpus": gpus,
        "source": "schedule",
        "description": fields.get("description") or "",
    }
    given = (fields.get("event_id") or "").strip()
    try:
        doc["event_id"] = UUID(given) if given else None
    except ValueError as exc:
        raise RowError(line, "event_id", f"not a UUID: {given!r}") from exc
    if doc["event_id"] is None:
        if not gpus.is_finite():
            raise RowError(line, "gpus", f"not a number: {fields['gpus']!r}")
        doc["event_id"] = schedule_event_id(pool, starts, ends, gpus)
    try:
        return CapacityHeld.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["loc"]:
            field = str(first["loc"][0])
        else:  # cross-field rules name their field first: "ends_at: must be after starts_at"
            field, _, rest = message.partition(": ")
            message = rest or message
        raise RowError(line, _COLUMN.get(field, field), message) from exc


def parse_schedule(text: str) -> tuple[list[CapacityHeld], list[int]]:
    """The records and each one's line in the file; ``ScheduleInvalid`` naming every bad
    row (up to ``MAX_ERRORS``) if any."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ScheduleInvalid([RowError(1, "header", "the file is empty")]) from None
    except csv.Error as exc:
        raise ScheduleInvalid([RowError(1, "header", str(exc))]) from exc
    columns = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED if c not in columns]
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    problems = [
        RowError(1, c, "required column missing (header: pool,start,end,gpus)") for c in missing
    ]
    problems += [RowError(1, c or "(empty)", f"unknown column; known: {_known()}") for c in unknown]
    problems += [RowError(1, c, "column appears twice") for c in twice]
    if problems:
        raise ScheduleInvalid(problems)
    records: list[CapacityHeld] = []
    lines: list[int] = []
    errors: list[RowError] = []
    total = 0
    line = reader.line_num
    try:
        for cells in reader:
            start_line, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if len(cells) != len(columns):
                error = RowError(
                    start_line, "row", f"{len(cells)} columns, the header has {len(columns)}"
                )
            elif len(records) + total >= MAX_ROWS:  # rows read so far, good and bad
                raise ScheduleInvalid(
                    [RowError(start_line, "row", f"more than {MAX_ROWS} rows: split the file")]
                )
            else:
                try:
                    records.append(_row(dict(zip(columns, cells, strict=True)), start_line))
                    lines.append(start_line)
                    continue
                except RowError as exc:
                    error = exc
            total += 1
            if len(errors) < MAX_ERRORS:
                errors.append(error)
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "row", f"not valid CSV: {exc}"))
        total += 1
    if errors:
        raise ScheduleInvalid(errors, total)
    return records, lines


def _known() -> str:
    return ",".join(REQUIRED + OPTIONAL)


def load_schedule(engine: Engine, path: Path) -> ScheduleLoaded:
    """Parse and record a schedule file, all or nothing (``ScheduleInvalid`` otherwise)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ScheduleInvalid(
            [RowError(1, "file", f"larger than {MAX_FILE_BYTES // 2**20} MiB: split it")]
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScheduleInvalid([RowError(1, "file", f"not UTF-8 text: {exc}")]) from exc
    records, lines = parse_schedule(text)
    return record_schedule(engine, records, lines)


def record_schedule(
    engine: Engine, records: list[CapacityHeld], lines: Iterable[int]
) -> ScheduleLoaded:
    at = list(lines)
    if not records:
        return ScheduleLoaded(0, 0, 0)
    try:
        done = capacity.record(engine, records)
    except BatchInvalid as exc:
        errors = [
            RowError(at[e.index], _COLUMN.get(e.field, e.field), e.message) for e in exc.errors
        ]
        raise ScheduleInvalid(errors, exc.total) from exc
    except EventConflict as exc:
        by_id = {r.event_id: n for r, n in zip(records, at, strict=True)}
        errors = [
            RowError(
                by_id[i], "event_id", f"{i} is already recorded with other content (a changed row?)"
            )
            for i in exc.event_ids
            if i in by_id
        ]
        raise ScheduleInvalid(errors or [RowError(1, "event_id", str(exc))]) from exc
    return ScheduleLoaded(len(records), done.accepted, done.duplicates)

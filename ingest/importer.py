"""Bulk import of NDJSON, CSV and Parquet files, local or on S3, streamed in batches.

Each batch is one ``append``. By default a bad row stops the import before its batch is
written, so what is in the ledger afterwards is whole batches only, and re-running the same
file after a fix is safe: the batches already written come back as duplicates. With
``skip_bad`` (the default for CDN logs, whose lines are independent facts from a third
party) a bad row is reported and left out, and every good row is written.

Readers yield ``(line, payload, bytes)``; a payload that is a ``RowError`` is a row they
could not read but could read past. A ``RowError`` they *raise* ends the file (a missing
header, undecodable bytes): nothing after it can be trusted.
"""

from __future__ import annotations

import codecs
import csv
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson
import pyarrow.parquet as pq
from pydantic import ValidationError
from sqlalchemy import Engine

from ingest.cdn_log import CdnStats, cdn_rows
from ingest.parsing import EVENT, RowError, field_errors
from ledger.errors import BatchInvalid, EventConflict
from ledger.events import CostEvent
from ledger.store import Ledger

FORMATS = ("ndjson", "csv", "parquet", "cdn-log")
_SUFFIXES = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class ImportFailed(ValueError):
    """A row that cannot be imported; nothing of its batch was written."""

    def __init__(self, source: str, error: RowError, written: int) -> None:
        super().__init__(
            f"{source}: {error} (the {written} events accepted before this batch stay written; "
            "fix the row and run the import again: they will count as duplicates)"
        )
        self.line = error.line
        self.field = error.field
        self.written = written


KEPT_REFUSED = 100  # refused rows kept in the report; the rest are counted


@dataclass
class ImportReport:
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    batches: int = 0
    refused: int = 0
    first_refused: list[RowError] = field(default_factory=list)


@dataclass
class Source:
    """Rows of one file: (line number, payload, bytes consumed) with a total for progress."""

    name: str
    format: str
    total: int | None
    rows: Iterator[tuple[int, Any, int]]
    skip_bad: bool = False  # what import_events does with a bad row unless told


def detect_format(name: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in FORMATS:
            raise ValueError(f"unknown format {explicit!r}; choose one of {', '.join(FORMATS)}")
        return explicit
    suffixes = Path(name.removesuffix(".gz")).suffixes
    fmt = _SUFFIXES.get(suffixes[-1].lower()) if suffixes else None
    if fmt is None:
        raise ValueError(f"cannot tell the format of {name!r}; pass --format {'|'.join(FORMATS)}")
    return fmt


def _ndjson_rows(lines: Iterable[bytes]) -> Iterator[tuple[int, Any, int]]:
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield lineno, line, len(line)


def _csv_rows(lines: Iterable[bytes]) -> Iterator[tuple[int, Any, int]]:
    consumed = 0

    def counting() -> Iterator[bytes]:
        nonlocal consumed
        for chunk in lines:
            consumed += len(chunk)
            yield chunk

    reader = csv.DictReader(codecs.iterdecode(counting(), "utf-8"), strict=True)
    records = iter(reader)
    before = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except csv.Error as exc:  # the csv reader goes on at the next line
            yield reader.line_num + 1, RowError(reader.line_num + 1, "row", str(exc)), 0
            continue
        except UnicodeDecodeError as exc:  # the decoder cannot: the rest is unreadable
            raise RowError(reader.line_num + 1, "row", str(exc)) from exc
        size, before = consumed - before, consumed
        row: Any = {k: v for k, v in record.items() if v not in ("", None)}
        if None in record:
            row = RowError(reader.line_num, "row", "more fields than the header")
        elif "attributes" in row:
            try:
                row["attributes"] = orjson.loads(row["attributes"])
            except orjson.JSONDecodeError as exc:
                row = RowError(reader.line_num, "attributes", f"not JSON: {exc}")
        yield reader.line_num, row, size


def _parquet_rows(path: str) -> Iterator[tuple[int, Any, int]]:
    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            n += 1
            clean: Any = {k: v for k, v in row.items() if v is not None}
            if isinstance(clean.get("attributes"), str):
                try:
                    clean["attributes"] = orjson.loads(clean["attributes"])
                except orjson.JSONDecodeError as exc:
                    clean = RowError(n, "attributes", f"not JSON: {exc}")
            yield n, clean, 1


def open_source(
    location: str,
    fmt: str | None,
    stack: ExitStack,
    s3: Any = None,
    engine: Engine | None = None,
    cdn_stats: CdnStats | None = None,
) -> Source:
    """Open a local path or ``s3://bucket/key``; the caller's ``stack`` closes what is opened.

    ``cdn-log`` needs the ``engine`` to find each render's use case in the ledger.
    """
    fmt = detect_format(location, fmt)
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if s3 is None:
            raise ValueError("an s3:// source needs an S3 client")
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if fmt == "parquet":
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".parquet"))  # noqa: SIM115  # closed by the caller's stack
            s3.download_fileobj(bucket, key, tmp)
            tmp.flush()
            return Source(
                location, fmt, pq.ParquetFile(tmp.name).metadata.num_rows, _parquet_rows(tmp.name)
            )
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"]
        stack.callback(body.close)
        lines = body.iter_lines(keepends=True)
        total = int(obj["ContentLength"])
    else:
        path = Path(location)
        if not path.is_file():
            raise ValueError(f"no such file: {location}")
        if fmt == "parquet":
            return Source(
                location, fmt, pq.ParquetFile(path).metadata.num_rows, _parquet_rows(str(path))
            )
        lines = stack.enter_context(path.open("rb"))
        total = os.path.getsize(path)
    if fmt == "cdn-log":
        if engine is None:
            raise ValueError("a cdn-log import needs the ledger's database")
        rows = cdn_rows(lines, engine, cdn_stats if cdn_stats is not None else CdnStats())
        return Source(location, fmt, total, rows, skip_bad=True)
    rows = _ndjson_rows(lines) if fmt == "ndjson" else _csv_rows(lines)
    return Source(location, fmt, total, rows)


def _validate(payload: Any) -> CostEvent:
    if isinstance(payload, bytes):
        return EVENT.validate_json(payload)
    return EVENT.validate_python(payload)


def import_events(
    ledger: Ledger,
    source: Source,
    *,
    batch_size: int = 5_000,
    on_progress: Callable[[int], None] | None = None,
    skip_bad: bool | None = None,
    on_refused: Callable[[RowError], None] | None = None,
) -> ImportReport:
    """Append the source's rows in batches; ``skip_bad`` (unset: the source's default) leaves
    bad rows out, reporting each to ``on_refused``, instead of stopping at the first."""
    skip = source.skip_bad if skip_bad is None else skip_bad
    report = ImportReport()
    batch: list[CostEvent] = []
    lines: list[int] = []
    consumed = 0

    def refuse(error: RowError) -> None:
        if not skip:
            raise error
        report.refused += 1
        if len(report.first_refused) < KEPT_REFUSED:
            report.first_refused.append(error)
        if on_refused:
            on_refused(error)

    def drop(bad: dict[int, RowError]) -> None:
        """Refuse the rows at these batch indexes, in line order, and keep the others."""
        for i in sorted(bad):
            refuse(bad[i])
        kept = [i for i in range(len(batch)) if i not in bad]
        batch[:] = [batch[i] for i in kept]
        lines[:] = [lines[i] for i in kept]

    def flush() -> None:
        nonlocal consumed
        # An append is all or nothing: without the refused rows the rest is tried again.
        while batch:
            try:
                receipt = ledger.append(batch)
            except BatchInvalid as exc:
                bad: dict[int, RowError] = {}
                for e in exc.errors:
                    bad.setdefault(e.index, RowError(lines[e.index], e.field, e.message))
                drop(bad)
                continue
            except EventConflict as exc:
                ids = set(exc.event_ids)
                drop(
                    {
                        i: RowError(
                            lines[i], "event_id", f"{e.event_id} is recorded with other content"
                        )
                        for i, e in enumerate(batch)
                        if e.event_id in ids
                    }
                )
                continue
            report.accepted += receipt.accepted
            report.duplicates += receipt.duplicates
            report.batches += 1
            break
        batch.clear()
        lines.clear()
        if on_progress:
            on_progress(consumed)
        consumed = 0

    try:
        for line, payload, size in source.rows:
            report.rows += 1
            consumed += size
            if isinstance(payload, RowError):
                refuse(payload)
                continue
            try:
                batch.append(_validate(payload))
            except ValidationError as exc:
                err = field_errors(exc, 0)[0]
                refuse(RowError(line, err.field, err.message))
                continue
            lines.append(line)
            if len(batch) >= batch_size:
                flush()
        if batch or consumed:
            flush()
    except RowError as exc:
        raise ImportFailed(source.name, exc, report.accepted) from exc
    return report

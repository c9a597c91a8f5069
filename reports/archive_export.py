"""The export job: sealed blocks of the log appended to the Iceberg table
(``reports.archive``), in commits of whole blocks.

Export is idempotent and resumable without a checkpoint of its own: each Iceberg commit
records in its snapshot summary the seq range, the blocks and their hashes it holds
(``renderledger.*``), and the next run starts after what the table's current snapshot
says. A run killed before its catalog commit (one conditional UPDATE in PostgreSQL) leaves
only unreferenced files; one killed after it has nothing left to redo.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.locks import ARCHIVE
from reports.archive import (
    COLUMNS,
    PREFIX,
    ArchiveError,
    archived,
    arrow_schema,
    blocks_digest,
    load_table,
    log_ranges,
    opened_catalog,
    recorded_commits,
    roles,
)
from reports.archive_settings import HasArchive
from reports.tracing import traced

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    ran: bool
    commits: int = 0
    events: int = 0
    last_seq: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Block:
    block_id: int
    prev_hash: bytes
    hash: bytes
    first_seq: int
    last_seq: int


def _sealed(raw: psycopg.Connection[Any], after_block: int, lag_s: int) -> list[_Block]:
    with raw.transaction():
        rows = raw.execute(
            "SELECT block_id, prev_hash, hash, first_seq, last_seq FROM blocks "
            "WHERE block_id > %s AND created_at <= now() - make_interval(secs => %s) "
            "ORDER BY block_id",
            (after_block, lag_s),
        ).fetchall()
    return [_Block(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4]) for r in rows]


def _groups(blocks: list[_Block], most: int) -> Iterator[list[_Block]]:
    group: list[_Block] = []
    for block in blocks:
        if group and block.last_seq - group[0].first_seq + 1 > most:
            yield group
            group = []
        group.append(block)
    if group:
        yield group


def _properties(group: list[_Block]) -> dict[str, str]:
    first, last = group[0], group[-1]
    return {
        PREFIX + "first-seq": str(first.first_seq),
        PREFIX + "last-seq": str(last.last_seq),
        PREFIX + "first-block": str(first.block_id),
        PREFIX + "last-block": str(last.block_id),
        PREFIX + "prev-hash": first.prev_hash.hex(),
        PREFIX + "last-hash": last.hash.hex(),
        PREFIX + "blocks-sha256": blocks_digest([b.hash for b in group]).hex(),
        PREFIX + "events": str(last.last_seq - first.first_seq + 1),
    }


@traced("archive-export")
def export_sealed(
    engine: Engine, settings: HasArchive, *, max_commits: int | None = None
) -> ExportResult:
    """Append every sealed block older than ``archive.lag_s`` that the table does not hold
    yet, in commits of at most ``archive.commit_events`` events; ``ran=False`` if another
    process is exporting. The scheduler may call this every ``archive.interval_s``."""
    started = time.perf_counter()
    with job_lock(engine, ARCHIVE) as raw:
        if raw is None:
            return ExportResult(False)
        role, url = roles(engine)
        with opened_catalog(engine, settings, create=True) as catalog:
            table = load_table(catalog, settings, create=True)
            assert table is not None
            state = archived(table, recorded=recorded_commits(raw))
            blocks = _sealed(raw, state.last_block, settings.archive.lag_s)
            if blocks and (
                blocks[0].first_seq != state.last_seq + 1
                or (state.last_hash is not None and blocks[0].prev_hash != state.last_hash)
            ):
                raise ArchiveError(
                    f"block {blocks[0].block_id} does not continue the archive, which ends at "
                    f"seq {state.last_seq} (block {state.last_block})"
                )
            commits = events = 0
            last_seq = state.last_seq
            for group in _groups(blocks, settings.archive.commit_events):
                if max_commits is not None and commits >= max_commits:
                    break
                lo, hi = group[0].first_seq, group[-1].last_seq
                schema = arrow_schema()
                reader = pa.RecordBatchReader.from_batches(
                    schema, log_ranges(url, role, COLUMNS, lo, hi)
                )
                table.append(reader, snapshot_properties=_properties(group))
                commits, events, last_seq = commits + 1, events + hi - lo + 1, hi
                log.info("archive: seq %d..%d committed (%d blocks)", lo, hi, len(group))
    return ExportResult(True, commits, events, last_seq, time.perf_counter() - started)

"""``archive prune``: drop the log's partitions that the archive holds, verified, and that are
older than the keep window; then expire the archive's old snapshots.

A partition is pruned only when every one of these holds, and each partition kept says
which did not: it is entirely older than the window (its last block was stored before it),
the archive's current snapshot holds all of it, the archive's rows of it verify against the
chain (only those of the partitions going: the rest is ``verify``'s, see DESIGN.md), every
job that keeps a place in the log (``rollup_checkpoints``, ``allocation_checkpoints``) has
read past it, and every partition before it is pruned too (the pruned range is always
``1..n``, which is what ``verify`` and the readers rely on). Runs as the owner role (DDL).

Before a partition goes, the wall times of its events that a kept reversal cancels are
copied to ``pruned_walls`` (the rollup's SQL takes a reversal's wall from the event it
reverses), the seqs of each render's events to ``pruned_renders`` (a render trace reads them
from the archive), and the range is recorded in ``log_pruned``; detach, drop and record are
one transaction.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pyarrow as pa
from sqlalchemy import Engine

from ledger import partitions
from ledger.connections import connection
from ledger.journal import KEYS, UNRECORDED, head, pruned_through
from ledger.partitions import Partition
from reports import history
from reports.archive import Archived, archived, load_table, opened_catalog
from reports.archive_commits import expire_snapshots
from reports.archive_events import range_batches, uuid_bytes
from reports.archive_settings import HasArchive
from reports.archive_verify import verify_archive

log = logging.getLogger(__name__)

_KEEP = re.compile(r"(\d+)\s*(d|w|mo|y)")


def keep_window(text: str) -> tuple[int, str]:
    """``3mo``, ``90d``, ``2w``, ``1y`` as (count, unit); ValueError otherwise."""
    match = _KEEP.fullmatch(text.strip().lower())
    if not match or int(match[1]) < 1:
        raise ValueError(f"{text!r} is not a keep window: give a count and d, w, mo or y")
    return int(match[1]), match[2]


def keep_since(text: str, now: datetime) -> datetime:
    """The start of the keep window: calendar months and years, clamped to the month's end."""
    count, unit = keep_window(text)
    if unit in ("d", "w"):
        return now - timedelta(days=count * (7 if unit == "w" else 1))
    months = now.year * 12 + now.month - 1 - count * (12 if unit == "y" else 1)
    year, month = divmod(months, 12)
    for day in range(now.day, 27, -1):
        try:
            return now.replace(year=year, month=month + 1, day=day)
        except ValueError:
            continue
    return now.replace(year=year, month=month + 1, day=min(now.day, 28))


@dataclass(frozen=True)
class Verdict:
    partition: Partition
    prune: bool
    reason: str


@dataclass
class PruneResult:
    verdicts: list[Verdict] = field(default_factory=list)
    pruned: list[Partition] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    expired_snapshots: int = 0
    recorded: list[tuple[int, int]] = field(default_factory=list)  # ranges pruned before 0020
    verified: tuple[tuple[int, int], int] | None = None  # the range judged, the rows read
    problems: list[str] = field(default_factory=list)  # the archive's, when it fails verify

    @property
    def ok(self) -> bool:
        return not self.problems


def _last_stored(raw: psycopg.Connection[Any], last_seq: int) -> datetime | None:
    """When the block holding ``last_seq`` was stored (blocks are few: one per append)."""
    row = raw.execute(
        "SELECT created_at FROM blocks WHERE first_seq <= %s AND last_seq >= %s",
        (last_seq, last_seq),
    ).fetchone()
    return row[0] if row else None


def _places(raw: psycopg.Connection[Any]) -> list[tuple[str, int]]:
    return [
        (str(job), int(seq))
        for job, seq in raw.execute(
            # alert_low_volume keeps an hour there, not a place in the log.
            "SELECT 'rollup job ' || job, last_seq FROM rollup_checkpoints "
            "WHERE job <> 'alert_low_volume' "
            "UNION ALL SELECT 'allocation job ' || job, last_seq FROM allocation_checkpoints"
        ).fetchall()
    ]


def _judge(
    p: Partition,
    *,
    head_seq: int,
    stored: datetime | None,
    since: datetime,
    archive: Archived,
    places: list[tuple[str, int]],
) -> str | None:
    """Why ``p`` must stay (None: it may go), before the archive is verified."""
    if p.last_seq > head_seq:
        return f"not full: it ends at seq {p.last_seq}, the log's head is {head_seq}"
    if stored is None or stored >= since:
        at = f"{stored:%Y-%m-%d %H:%M} UTC" if stored else "an unknown time"
        return f"too young: its last block was stored at {at}, inside the keep window"
    if archive.last_seq < p.last_seq:
        return f"not fully archived: the archive's current snapshot holds seq 1..{archive.last_seq}"
    behind = [(job, seq) for job, seq in places if seq < p.last_seq]
    if behind:
        job, seq = behind[0]
        return f"the {job} has read only through seq {seq}"
    return None


def plan(
    engine: Engine, settings: HasArchive, keep: str, now: datetime | None = None
) -> tuple[list[Verdict], Archived]:
    """Each range partition and whether it may be pruned, the archive not yet verified."""
    since = keep_since(keep, now or datetime.now(UTC))
    with opened_catalog(engine, settings) as catalog:
        state = archived(load_table(catalog, settings))
    with connection(engine) as raw:
        head_seq = head(raw)
        places = _places(raw)
        verdicts: list[Verdict] = []
        for p in partitions.partitions(raw):
            reason = _judge(
                p,
                head_seq=head_seq,
                stored=_last_stored(raw, p.last_seq) if p.last_seq <= head_seq else None,
                since=since,
                archive=state,
                places=places,
            )
            if reason is None and verdicts and not verdicts[-1].prune:
                reason = "a partition before it is kept (the pruned range stays 1..n)"
            verdicts.append(Verdict(p, reason is None, reason or "archived, verified and old"))
    return verdicts, state


def _record_walls(raw: psycopg.Connection[Any], p: Partition) -> None:
    """The wall time of each event in ``p`` that a reversal cancels, for the rollup's SQL."""
    raw.execute(
        f"INSERT INTO pruned_walls (tenant_id, event_id, wall) "
        f"SELECT t.tenant_id, t.event_id, e.attributes->'wall_s' FROM {KEYS} AS r "
        f"JOIN {KEYS} AS t ON t.tenant_id = r.tenant_id AND t.event_id = r.reverses "
        f"JOIN {p.name} AS e ON e.seq = t.seq "
        f"WHERE r.reverses IS NOT NULL AND t.seq BETWEEN {p.first_seq} AND {p.last_seq} "
        "ON CONFLICT DO NOTHING"
    )


def _record_renders(raw: psycopg.Connection[Any], p: Partition) -> None:
    """The seqs of each render's events in ``p``, for a render trace to find them in the
    archive (``reports.archive_events.read_render``)."""
    raw.execute(
        "INSERT INTO pruned_renders (render_id, first_seq, seqs) "
        f"SELECT render_id, {p.first_seq}, array_agg(seq ORDER BY seq) FROM {p.name} "
        "GROUP BY render_id"
    )
    raw.execute("INSERT INTO pruned_renders_recorded (first_seq) VALUES (%s)", (p.first_seq,))


def record_unrecorded(engine: Engine, settings: HasArchive) -> list[tuple[int, int]]:
    """Record the renders of ranges pruned before migration 0020 from the archive, which
    alone holds their rows (two columns read, each range checked gapless); the ranges."""
    with connection(engine) as raw:
        ranges = raw.execute(UNRECORDED).fetchall()
    if not ranges:
        return []
    with history.opened(engine, settings) as past:
        for first, last in ranges:
            rows = pa.Table.from_batches(
                range_batches(past, ("seq", "render_id"), first, last)
            ).combine_chunks()
            rows = rows.set_column(1, "render_id", uuid_bytes(rows.column("render_id").chunk(0)))
            grouped = rows.group_by("render_id", use_threads=False).aggregate([("seq", "list")])
            with connection(engine, transaction=True) as raw, raw.cursor() as cur:
                with cur.copy("COPY pruned_renders (render_id, first_seq, seqs) FROM STDIN") as cp:
                    for render, seqs in zip(
                        grouped.column("render_id").to_pylist(),
                        grouped.column("seq_list").to_pylist(),
                        strict=True,
                    ):
                        cp.write_row((UUID(bytes=render), first, seqs))
                cur.execute("INSERT INTO pruned_renders_recorded (first_seq) VALUES (%s)", (first,))
            log.info("archive prune: renders of seq %d..%d recorded from the archive", first, last)
    return [(first, last) for first, last in ranges]


def prune(
    engine: Engine,
    settings: HasArchive,
    keep: str,
    *,
    dry_run: bool = False,
    partition_events: int | None = None,
    now: datetime | None = None,
) -> PruneResult:
    """Drop every partition ``plan`` allows, after verifying the archive's rows of them;
    record the renders of ranges pruned before 0020; make the next partitions ahead of the
    head; expire snapshots older than the window. ``engine`` must connect as the owner role."""
    result = PruneResult()
    verdicts, state = plan(engine, settings, keep, now)
    going = [v.partition for v in verdicts if v.prune]
    if going:
        seqs = (going[0].first_seq, going[-1].last_seq)
        verified = verify_archive(engine, settings, seqs=seqs)
        if verified is None or not verified.ok:
            problems = [] if verified is None else list(verified.problems)
            problems += [
                f"archive block {b.block_id}: {b.reason}" if b.block_id else b.reason
                for b in (verified.rows.broken if verified else ())
            ]
            result.problems = problems or ["the archive holds nothing"]
            reason = "the archive failed verification: " + result.problems[0]
            verdicts = [Verdict(v.partition, False, v.reason if not v.prune else reason)
                        for v in verdicts]  # fmt: skip
        else:
            result.verified = seqs, verified.events_checked
            if verified.archive.snapshot_id != state.snapshot_id:  # an export committed since
                state = verified.archive
    result.verdicts = verdicts
    if dry_run or result.problems:  # a broken archive: nothing changes until it is looked at
        return result
    result.recorded = record_unrecorded(engine, settings)
    size = partition_events or settings.archive.partition_events
    for v in verdicts:
        if not v.prune:
            continue
        with connection(engine, transaction=True) as raw:
            if pruned_through(raw) != v.partition.first_seq - 1:
                raise RuntimeError(f"{v.partition.name}: the pruned range moved meanwhile")
            _record_walls(raw, v.partition)
            raw.execute(
                "INSERT INTO log_pruned (first_seq, last_seq, partition_name, "
                "archive_snapshot_id) VALUES (%s, %s, %s, %s)",
                (v.partition.first_seq, v.partition.last_seq, v.partition.name,
                 state.snapshot_id),
            )  # fmt: skip
            _record_renders(raw, v.partition)
            partitions.drop(raw, v.partition)
        result.pruned.append(v.partition)
        log.info("archive prune: %s (seq %d..%d) dropped", v.partition.name,
                 v.partition.first_seq, v.partition.last_seq)  # fmt: skip
    with connection(engine, transaction=True) as raw:
        result.created = partitions.ensure_ahead(raw, size)
    result.expired_snapshots = expire_snapshots(
        engine, settings, keep_since(keep, now or datetime.now(UTC))
    )
    return result

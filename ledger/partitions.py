"""The log's partitions (migration 0018): which exist, the next ones ahead of the head, and
dropping one whose rows are archived. DDL: only the owner role runs these (``archive
prune``); the application role reads and writes through the parent and creates nothing.

Partitions are RANGE on ``seq``, named ``cost_events_p<first seq>``; ``cost_events_default``
takes appends past the last one, so an append never fails for want of a partition.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from ledger import locks
from ledger.journal import LOG, head

DEFAULT = f"{LOG}_default"
_BOUND = re.compile(r"FOR VALUES FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


@dataclass(frozen=True)
class Partition:
    name: str
    first_seq: int
    last_seq: int  # inclusive: the bound's TO minus one

    @property
    def size(self) -> int:
        return self.last_seq - self.first_seq + 1


def partitions(raw: psycopg.Connection[Any]) -> list[Partition]:
    """The range partitions in seq order (the default one is not among them)."""
    rows = raw.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (LOG,),
    ).fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.fullmatch(bound)
        if match:
            found.append(Partition(name, int(match[1]), int(match[2]) - 1))
    return sorted(found, key=lambda p: p.first_seq)


def _protect(raw: psycopg.Connection[Any], name: str) -> None:
    # Row triggers are cloned from the parent; a statement trigger is the partition's own.
    raw.execute(
        f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        "FOR EACH STATEMENT EXECUTE FUNCTION renderledger_refuse_change()"
    )


def _create(raw: psycopg.Connection[Any], first: int, last: int) -> str:
    name = f"{LOG}_p{first}"
    raw.execute(f"CREATE TABLE {name} PARTITION OF {LOG} FOR VALUES FROM ({first}) TO ({last + 1})")
    _protect(raw, name)
    return name


def ensure_ahead(raw: psycopg.Connection[Any], size: int, ahead: int | None = None) -> list[str]:
    """Create range partitions of ``size`` events until one ends at least ``ahead`` (default
    ``size``) past the head; rows the default partition caught meanwhile are moved into a
    range partition first. Runs in the caller's transaction, under the append lock, so no
    append lands in the default partition while it is emptied."""
    raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.APPEND,))
    made: list[str] = []
    existing = partitions(raw)
    pruned = raw.execute("SELECT coalesce(max(last_seq), 0) FROM log_pruned").fetchone()
    next_seq = existing[-1].last_seq + 1 if existing else (pruned[0] if pruned else 0) + 1
    caught = raw.execute(f"SELECT max(seq) FROM {DEFAULT}").fetchone()
    if caught and caught[0] is not None:
        made.append(_rescue(raw, next_seq, max(caught[0], next_seq + size - 1)))
        next_seq = max(caught[0], next_seq + size - 1) + 1
    target = head(raw) + (size if ahead is None else ahead)
    while next_seq <= target:
        made.append(_create(raw, next_seq, next_seq + size - 1))
        next_seq += size
    return made


def _rescue(raw: psycopg.Connection[Any], first: int, last: int) -> str:
    """Move the default partition's rows into a new range partition: detach it, put a new
    empty default in its place, copy its rows through the parent, drop it. Its rows are
    copied, not changed; their keys are already in event_keys."""
    caught = f"{DEFAULT}_caught"
    raw.execute(f"ALTER TABLE {LOG} DETACH PARTITION {DEFAULT}")
    raw.execute(f"ALTER TABLE {DEFAULT} RENAME TO {caught}")
    raw.execute(f"ALTER TRIGGER {DEFAULT}_no_truncate ON {caught} RENAME TO {caught}_no_truncate")
    raw.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {LOG} DEFAULT")
    _protect(raw, DEFAULT)
    name = _create(raw, first, last)
    raw.execute(f"INSERT INTO {LOG} SELECT * FROM {caught}")
    raw.execute(f"DROP TABLE {caught}")
    return name


def drop(raw: psycopg.Connection[Any], partition: Partition) -> None:
    """Detach and drop one range partition; the caller has recorded why (``log_pruned``)."""
    raw.execute(f"ALTER TABLE {LOG} DETACH PARTITION {partition.name}")
    raw.execute(f"DROP TABLE {partition.name}")

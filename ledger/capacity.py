"""The application service over pools and the actual-cost log: load, append, read back."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError
from sqlalchemy import Engine

from ledger import locks
from ledger.actual_costs import CapacityHeld, OverheadIncurred, row
from ledger.connections import connection
from ledger.errors import BatchInvalid, BatchTooLarge, EventConflict, FieldError, LedgerError
from ledger.pools import PoolDefinition, PoolFile, Pools

MAX_BATCH = 10_000
FULL_REQUESTED = "allocation:full"
"""A row of ``allocation_checkpoints`` that asks the next allocation run to re-do every hour."""
_COLUMNS = (
    "event_id, kind, pool, account, allocate_by, shares, starts_at, ends_at, gpus, "
    "cost_nanos, currency, source, description, content_hash"
)


@dataclass(frozen=True, slots=True)
class Recorded:
    accepted: int
    duplicates: int
    first_seq: int | None
    last_seq: int | None


def read_pools(raw: psycopg.Connection[Any]) -> Pools:
    rows = raw.execute("SELECT definition FROM pool_versions").fetchall()
    return Pools(tuple(PoolDefinition.model_validate(r[0]) for r in rows))


def load_pools(engine: Engine, pools: PoolFile | Sequence[PoolDefinition]) -> list[str]:
    """Store each definition as a version; the names of those that were new.

    The same definition again is a no-op; another one at the same ``effective_from``, or one
    taking effect before capacity already recorded under the pool ends, is an error (history
    is not rewritten). A new version makes the next allocation run re-allocate every hour."""
    definitions = pools.definitions if isinstance(pools, PoolFile) else tuple(pools)
    added = []
    with connection(engine, transaction=True) as raw:
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.ACTUALS,))
        for d in definitions:
            body = d.model_dump(mode="json")
            found = raw.execute(
                "SELECT definition FROM pool_versions WHERE pool = %s AND effective_from = %s",
                (d.name, d.effective_from),
            ).fetchone()
            if found is not None:
                if PoolDefinition.model_validate(found[0]) != d:
                    raise LedgerError(
                        f"pool {d.name!r} already has a version from "
                        f"{d.effective_from.isoformat()} with other terms; give the change "
                        "a later effective_from"
                    )
                continue
            held = raw.execute(
                "SELECT max(ends_at) FROM actual_costs WHERE pool = %s", (d.name,)
            ).fetchone()
            if held is not None and held[0] is not None and held[0] > d.effective_from:
                raise LedgerError(
                    f"pool {d.name!r} has capacity recorded until {held[0].isoformat()}, priced "
                    "and allocated by the terms then in force; a new version must take effect "
                    "after it (history is corrected by new records, not new terms)"
                )
            raw.execute(
                "INSERT INTO pool_versions (pool, effective_from, definition, currency, "
                "source_sha256) VALUES (%s, %s, %s, %s, %s)",
                (d.name, d.effective_from, Jsonb(body), d.currency, _sha(body)),
            )
            added.append(d.name)
        if added:  # usage already allocated may name these pools: the next run re-does all
            raw.execute(
                "INSERT INTO allocation_checkpoints (job, last_seq, last_actual_seq, updated_at) "
                "VALUES (%s, 0, 0, now()) ON CONFLICT (job) DO NOTHING",
                (FULL_REQUESTED,),
            )
    return added


def _sha(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record(engine: Engine, records: Sequence[CapacityHeld | OverheadIncurred]) -> Recorded:
    """Append all or nothing; a resent record is a duplicate, a changed one a conflict."""
    if len(records) > MAX_BATCH:
        raise BatchTooLarge(len(records), MAX_BATCH)
    if len({r.event_id for r in records}) != len(records):
        seen: set[Any] = set()
        for i, r in enumerate(records):
            if r.event_id in seen:
                raise BatchInvalid([FieldError(i, "event_id", "appears twice in the batch")])
            seen.add(r.event_id)
    if not records:
        return Recorded(0, 0, None, None)
    with connection(engine, transaction=True) as raw:
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.ACTUALS,))
        pools = read_pools(raw)
        rows, errors = [], []
        for i, r in enumerate(records):
            try:
                rows.append(row(r, pools))
            except (ValueError, ValidationError) as exc:
                field, _, message = str(exc).partition(": ")
                errors.append(FieldError(i, field, message or field))
        if errors:
            raise BatchInvalid(errors)
        stored = dict(
            raw.execute(
                "SELECT event_id, content_hash FROM actual_costs WHERE event_id = ANY(%s)",
                ([r["event_id"] for r in rows],),
            ).fetchall()
        )
        conflicts = [
            r["event_id"]
            for r in rows
            if stored.get(r["event_id"], r["content_hash"]) != r["content_hash"]
        ]
        if conflicts:
            raise EventConflict(conflicts)
        fresh = [r for r in rows if r["event_id"] not in stored]
        if not fresh:
            return Recorded(0, len(rows), None, None)
        values = [
            tuple(Jsonb(v) if k == "shares" and v is not None else v for k, v in r.items())
            for r in (_ordered(f) for f in fresh)
        ]
        with raw.cursor() as cur:
            cur.executemany(
                f"INSERT INTO actual_costs ({_COLUMNS}) VALUES "
                f"({', '.join(['%s'] * len(_COLUMNS.split(', ')))}) RETURNING seq",
                values,
                returning=True,
            )
            seqs = []
            while True:
                got = cur.fetchone()
                if got is not None:
                    seqs.append(int(got[0]))
                if not cur.nextset():
                    break
    return Recorded(len(fresh), len(rows) - len(fresh), min(seqs), max(seqs))


def _ordered(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in _COLUMNS.split(", ")}

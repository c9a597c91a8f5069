"""Expiring the archive's old Iceberg snapshots without losing what ``verify`` reads.

Every export commit's snapshot summary names its seq range, blocks and hashes; ``verify``
and the export's resume point read them off the current snapshot's ancestors. Before a
snapshot is expired its summary is copied to ``archive_commits`` (migration 0018), which
``reports.archive.archived`` reads first. Data files are never removed by expiry here:
the table is append-only, so every file stays referenced by the current snapshot.
"""

from __future__ import annotations

from dataclasses import astuple
from datetime import datetime

from sqlalchemy import Engine

from ledger.connections import connection
from reports.archive import archived, load_table, opened_catalog, recorded_commits
from reports.archive_settings import HasArchive


def expire_snapshots(engine: Engine, settings: HasArchive, before: datetime) -> int:
    """Expire every snapshot committed before ``before`` but the current one, recording their
    commits first; the number expired. ``engine``: the owner role (prune)."""
    with opened_catalog(engine, settings) as catalog:
        table = load_table(catalog, settings)
        if table is None or table.current_snapshot() is None:
            return 0
        current = table.current_snapshot()
        assert current is not None
        cutoff = int(before.timestamp() * 1000)
        old = {
            s.snapshot_id
            for s in table.snapshots()
            if s.timestamp_ms < cutoff and s.snapshot_id != current.snapshot_id
        }
        if not old:
            return 0
        with connection(engine, transaction=True) as raw:
            state = archived(table, recorded=recorded_commits(raw))
            with raw.cursor() as cur:
                cur.executemany(
                    "INSERT INTO archive_commits (snapshot_id, committed_ms, first_seq, "
                    "last_seq, first_block, last_block, prev_hash, last_hash, blocks_sha256, "
                    "events, records) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT DO NOTHING",
                    [astuple(c) for c in state.commits if c.snapshot_id in old],
                )
        # Committed above before the snapshots go: a kill between the two loses nothing.
        table.maintenance.expire_snapshots().by_ids(sorted(old)).commit()
        return len(old)

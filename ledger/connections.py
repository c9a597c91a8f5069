"""The psycopg connection under SQLAlchemy's pool: COPY, arrays and server cursors need it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine


@contextmanager
def connection(engine: Engine, *, transaction: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection; with ``transaction`` it commits on success and rolls back on error."""
    with engine.begin() if transaction else engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        yield raw


@contextmanager
def job_lock(engine: Engine, key: int) -> Iterator[psycopg.Connection[Any] | None]:
    """A pooled connection holding session advisory lock ``key``, or None when another
    session holds it: how a job that several processes schedule runs in only one. ``key``
    is one of :mod:`ledger.locks`, where every key is kept distinct.

    The lock is taken and released outside any transaction, so the block may commit as it
    likes; what it leaves open is rolled back before the lock is let go.
    """
    with connection(engine) as raw:
        raw.autocommit = True
        row = raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        raw.autocommit = False
        if not row or not row[0]:
            yield None
            return
        try:
            yield raw
        finally:
            raw.rollback()
            raw.autocommit = True
            raw.execute("SELECT pg_advisory_unlock(%s)", (key,))
            raw.autocommit = False

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

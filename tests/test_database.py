"""The embedded server comes back after its postmaster is killed with SIGKILL (issue 11).

Right after a kill -9 the dead postmaster is a zombie until init reaps it, and its
postmaster.pid and shared memory linger; starting at once used to fail 5 times in 8.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ledger import database


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir of its own: killing the session's shared server would break other tests."""
    with tempfile.TemporaryDirectory(prefix="rl-kill-", ignore_cleanup_errors=True) as tmp:
        try:
            yield Path(tmp)
        finally:
            database.stop_embedded(Path(tmp))


def _kill_postmaster(data_dir: Path) -> int:
    # The pid from postmaster.pid: as root the server runs as another user, not our child.
    pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    return pid


def _answers(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_start_right_after_kill_9_of_the_postmaster(data_dir: Path) -> None:
    url = database.start_embedded(data_dir)
    _answers(url)
    for _ in range(2):  # bounded: each round is a crash, a wait for the zombie and a recovery
        killed = _kill_postmaster(data_dir)
        assert database.start_embedded(data_dir) == url
        _answers(url)
        found = database._pidfile(data_dir / "pg")
        assert found is not None
        assert found.pid != killed
    # The command itself, as a person would type it after the crash.
    _kill_postmaster(data_dir)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    started = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "db", "start"],
        env={**env, "RENDERLEDGER_DATA_DIR": str(data_dir)},
        cwd=data_dir,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == url
    _answers(url)


def _zombie() -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["true"])
    for _ in range(500):  # bounded: until it has exited and is not yet reaped
        if database._proc_state(child.pid) == "Z":
            return child
        time.sleep(0.01)
    raise AssertionError("the child did not become a zombie")


def test_waits_for_a_zombie_postmaster_then_says_why(tmp_path: Path) -> None:
    child = _zombie()
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text(
        f"{child.pid}\n{pgdata}\n1700000000\n5432\n{pgdata}\n\n\nready\n"
    )
    said: list[str] = []
    try:
        assert "zombie" in (database._blocker(pgdata, database._Seen()) or "")
        with pytest.raises(database.DatabaseUnavailable, match="zombie"):
            database.start_embedded(tmp_path, wait_s=0.5, notify=said.append)
        assert said
        assert said[0].startswith("waiting for the dead postmaster")
    finally:
        child.wait()
    # Reaped and gone, with no shared memory held: nothing left to wait for.
    assert database._blocker(pgdata, database._Seen()) is None
    assert not database.stop_embedded(tmp_path)


def test_a_half_written_postmaster_pid_is_waited_for(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / "postmaster.pid").write_text("")  # PostgreSQL creates it, then writes it
    assert "written in full" in (database._blocker(pgdata, database._Seen()) or "")

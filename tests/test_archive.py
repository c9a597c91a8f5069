"""The columnar history (issue 16): export to Iceberg, resume after kill -9, verify the
archive against the chain, and an S3 warehouse on moto's server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ingest.sample import sample_events
from ledger import database
from ledger.events import CostEvent
from ledger.store import Ledger
from reports import history
from reports.archive import (
    COLUMNS,
    archived,
    load_table,
    log_reader,
    opened_catalog,
    roles,
)
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.archive_verify import typed_attributes, verify_archive
from service.cli.main import app
from service.settings import Settings, get_settings
from tests.conftest import ledger_with_prices


def settings_for(url: str, data_dir: Path, **archive: Any) -> Settings:
    return Settings(
        database_url=url, data_dir=data_dir, archive=ArchiveSettings(**{"lag_s": 0, **archive})
    )


@pytest.fixture
def fresh_engine(fresh_database: str) -> Any:
    eng = database.make_engine(fresh_database, app_role="renderledger_app")
    yield eng
    eng.dispose()


def append_blocks(ledger: Ledger, blocks: int, per_block: int, seed: int = 5) -> int:
    events = list(sample_events(blocks * per_block // 9 + 1, seed=seed))
    for i in range(blocks):
        ledger.append(events[i * per_block : (i + 1) * per_block])
    return blocks * per_block


def table_of(engine: Engine, settings: Settings) -> Any:
    with opened_catalog(engine, settings) as catalog:
        return load_table(catalog, settings)


def test_export_commits_whole_blocks_records_them_and_resumes(
    fresh_engine: Engine, fresh_database: str, tmp_path: Path
) -> None:
    engine = fresh_engine
    ledger = ledger_with_prices(engine)
    settings = settings_for(fresh_database, tmp_path, commit_events=25)
    append_blocks(ledger, 5, 20)

    first = export_sealed(engine, settings, max_commits=2)
    assert (first.commits, first.events, first.last_seq) == (2, 40, 40)  # 20 + 20 > 25
    again = export_sealed(engine, settings)
    assert (again.commits, again.last_seq) == (3, 100)
    assert export_sealed(engine, settings).commits == 0  # nothing new: nothing committed

    state = archived(table_of(engine, settings))
    with psycopg.connect(database.libpq_url(fresh_database)) as conn:
        blocks = conn.execute(
            "SELECT block_id, prev_hash, hash, first_seq, last_seq FROM blocks ORDER BY block_id"
        ).fetchall()
    assert [(c.first_block, c.last_block) for c in state.commits] == [(b, b) for b in range(1, 6)]
    for c, (_, prev, block_hash, lo, hi) in zip(state.commits, blocks, strict=True):
        assert (c.first_seq, c.last_seq, c.events, c.records) == (lo, hi, 20, 20)
        assert (c.prev_hash, c.last_hash) == (bytes(prev), bytes(block_hash))

    # The table holds each event once, in seq order file by file.
    with history.opened(engine, settings) as past:
        seqs = pa.concat_arrays(
            [b.column("seq") for b in history.archive_batches(past, ("seq",))]
        ).to_pylist()
    assert seqs == list(range(1, 101))

    # A young block waits for the lag.
    append_blocks(ledger, 1, 9, seed=6)
    patient = settings_for(fresh_database, tmp_path, commit_events=25, lag_s=3600)
    assert export_sealed(engine, patient).commits == 0
    # Archive + tail read as PostgreSQL alone reads the log: same rows, columns and types.
    role, url = roles(engine)
    with history.opened(engine, patient) as past:
        assert (past.archive.last_seq, past.head) == (100, 109)
        both = pa.Table.from_batches(list(history.batches(past, COLUMNS)))
    alone = pa.Table.from_batches(list(log_reader(url, role, COLUMNS, 1, 109)))
    assert both.schema == alone.schema
    assert both.equals(alone)
    assert export_sealed(engine, settings).last_seq == 109


def test_the_archive_keeps_every_column_exactly(
    fresh_engine: Engine, fresh_database: str, tmp_path: Path
) -> None:
    """What verify rebuilds a StoredEvent from: numbers, times, ids, JSON as stored."""
    engine = fresh_engine
    ledger = ledger_with_prices(engine)
    render = uuid.uuid4()
    odd = CostEvent.model_validate(
        {
            "event_id": uuid.uuid4(),
            "tenant_id": "acme",
            "use_case": "social",
            "render_id": render,
            "stage": "unet",
            "sku": "gpu.h100.second",
            "quantity": Decimal("12.123456789012345678"),
            "occurred_at": datetime(2026, 10, 1, 23, 59, 59, 999999, tzinfo=UTC),
            "attributes": {"wall_s": 0.30000000000000004, "model": 'ü\n"x"', "n": [1, 2.5]},
        }
    )
    ledger.append([odd])
    settings = settings_for(fresh_database, tmp_path)
    export_sealed(engine, settings)
    with history.opened(engine, settings) as past:
        (row,) = next(
            history.archive_batches(
                past, ("quantity", "occurred_at", "attributes", "wall_s", "model")
            )
        ).to_pylist()
    assert row["quantity"] == odd.quantity
    assert row["occurred_at"] == odd.occurred_at
    assert row["wall_s"] == Decimal("0.300000000")
    assert row["model"] == 'ü\n"x"'
    result = verify_archive(engine, settings)
    assert result is not None
    assert result.ok, (result.rows.broken, result.problems)


def test_typed_attributes_follow_postgresql(owner: psycopg.Connection[Any]) -> None:
    """The verifier's Python reading of attributes equals the SQL the export uses."""
    from reports.archive import (
        _SQL,
        select_log,  # noqa: F401  (the SQL under test is its columns')
    )

    cases = [
        {},
        {"latency_ms": 1800.5, "wall_s": 2.3456789125},
        {"latency_ms": "slow", "wall_s": "2"},
        {"latency_ms": None, "wall_s": None},
        {"latency_ms": 1e16, "wall_s": -1},
        {
            "wall_s": 1000000001,
            "model": 12.5,
            "gpu_type": True,
            "precision": [1, {"b": 2, "a": None}],
        },
        {"wall_s": 0.0000001, "pipeline_version": {"x": "é\t"}, "model": None},
    ]
    import json

    names = ["latency_ms", "latency_ms_unreadable", "wall_s", "wall_s_unreadable", "model",
             "pipeline_version", "gpu_type", "precision"]  # fmt: skip
    sql = ", ".join(
        f"{_SQL[n].replace('attributes', 'a')}" + ("::numeric" if n == "wall_s" else "")
        for n in names
    )
    for case in cases:
        text = json.dumps(case)
        got = owner.execute(
            f"SELECT a::text, {sql} FROM (SELECT %s::jsonb AS a) AS e, "
            "LATERAL (SELECT a->'wall_s' AS w) AS x",
            (text,),
        ).fetchone()
        assert got is not None
        stored, *values = got
        expected = dict(zip(names, values, strict=True))
        assert typed_attributes(json.loads(stored), stored) == expected, case


def _tamper(table: Any, seq: int, column: str, change: Any) -> None:
    """Rewrite the data file holding ``seq`` with one value changed, behind Iceberg's back."""
    for task in table.scan().plan_files():
        path = urlparse(task.file.file_path).path
        data = pq.read_table(path)
        where = pc.equal(data.column("seq"), seq)
        if not pc.any(where).as_py():
            continue
        i = data.column("seq").to_pylist().index(seq)
        values = data.column(column).to_pylist()
        values[i] = change(values[i])
        index = data.schema.get_field_index(column)
        data = data.set_column(
            index, data.schema.field(index), pa.array(values, data.schema.field(index).type)
        )
        pq.write_table(data, path)
        return
    raise AssertionError(f"seq {seq} is in no file")


@pytest.fixture
def cli_env(fresh_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DATABASE_URL", fresh_database)
    monkeypatch.setenv("RENDERLEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RENDERLEDGER_ARCHIVE__LAG_S", "0")
    monkeypatch.setenv("RENDERLEDGER_ARCHIVE__COMMIT_EVENTS", "30")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_verify_says_where_each_range_came_from_and_finds_a_tampered_file(
    fresh_engine: Engine, cli_env: CliRunner, fresh_database: str, tmp_path: Path
) -> None:
    engine = fresh_engine
    ledger = ledger_with_prices(engine)
    append_blocks(ledger, 3, 30)
    exported = cli_env.invoke(app, ["archive", "export", "--max-commits", "2"])
    assert exported.exit_code == 0, exported.output
    assert "the archive holds seq 1..60" in exported.output
    verified = cli_env.invoke(app, ["verify"])
    assert verified.exit_code == 0, verified.output
    assert "seq 1..60 (blocks 1..2): archive (Iceberg snapshot" in verified.output
    assert "2 commits) and PostgreSQL" in verified.output
    assert "seq 61..90 (blocks 3..3): PostgreSQL only" in verified.output
    status = cli_env.invoke(app, ["archive", "status"])
    assert "archived: seq 1..60 of 90 (blocks 1..2)" in status.output, status.output

    settings = get_settings()
    _tamper(table_of(engine, settings), 45, "cost_nanos", lambda v: v + 1)
    broken = cli_env.invoke(app, ["verify"])
    assert broken.exit_code == 2, broken.output
    assert "broken: archive block 2: its recomputed hash differs from the stored one" in (
        broken.output
    )
    _tamper(table_of(engine, settings), 45, "cost_nanos", lambda v: v - 1)
    _tamper(table_of(engine, settings), 7, "wall_s", lambda v: (v or Decimal(0)) + 1)
    typed = cli_env.invoke(app, ["verify"])
    assert typed.exit_code == 2
    assert "event seq 7: archived wall_s differ from its attributes" in typed.output


def test_kill_9_mid_export_loses_nothing_and_duplicates_nothing(
    fresh_engine: Engine, fresh_database: str, tmp_path: Path
) -> None:
    engine = fresh_engine
    ledger = ledger_with_prices(engine)
    total = append_blocks(ledger, 40, 18)
    env = {
        **os.environ,
        "DATABASE_URL": fresh_database,
        "RENDERLEDGER_DATA_DIR": str(tmp_path),
        "RENDERLEDGER_ARCHIVE__LAG_S": "0",
        "RENDERLEDGER_ARCHIVE__COMMIT_EVENTS": "18",  # a commit per block: 40 commits
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "archive", "export"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    version = 0
    with psycopg.connect(database.libpq_url(fresh_database), autocommit=True) as conn:
        while version < 3 and time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(
                "SELECT metadata_location FROM iceberg_catalog.iceberg_tables"
            ).fetchone()
            version = int(Path(row[0]).name.split("-")[0]) if row else 0
            time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -9, proc.stderr.read() if proc.stderr else ""

    settings = settings_for(fresh_database, tmp_path, commit_events=18)
    killed_at = archived(table_of(engine, settings)).last_seq
    assert 0 < killed_at < total  # it was killed mid-export
    resumed = export_sealed(engine, settings)
    assert resumed.last_seq == total
    assert resumed.events == total - killed_at

    with history.opened(engine, settings) as past:
        seqs = pa.concat_arrays([b.column("seq") for b in history.archive_batches(past, ("seq",))])
    assert seqs.to_pylist() == list(range(1, total + 1))
    result = verify_archive(engine, settings)
    assert result is not None
    assert result.ok, (result.rows.broken, result.problems)


def test_an_s3_warehouse(
    fresh_engine: Engine,
    fresh_database: str,
    tmp_path: Path,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = fresh_engine
    s3.create_bucket(Bucket="history")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    endpoint = s3.meta.endpoint_url
    ledger = ledger_with_prices(engine)
    append_blocks(ledger, 2, 27)
    settings = Settings(
        database_url=fresh_database,
        data_dir=tmp_path,
        s3_endpoint_url=endpoint,
        archive=ArchiveSettings(lag_s=0, warehouse="s3://history/ledger/"),
    )
    assert export_sealed(engine, settings).last_seq == 54
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="history")["Contents"]]
    assert any(k.startswith("ledger/renderledger/cost_events/data/") for k in keys), keys
    result = verify_archive(engine, settings)
    assert result is not None
    assert result.ok
    assert result.events_checked == 54
    assert not (tmp_path / "warehouse").exists()


def test_an_empty_ledger_exports_nothing_then_its_first_block(
    fresh_engine: Engine, fresh_database: str, tmp_path: Path
) -> None:
    engine = fresh_engine
    settings = settings_for(fresh_database, tmp_path)
    assert export_sealed(engine, settings).commits == 0
    assert verify_archive(engine, settings) is not None  # the table exists, empty
    ledger = ledger_with_prices(engine)
    start = datetime.now(UTC) - timedelta(days=1)
    ledger.append(list(sample_events(1, seed=9, start=start, span=timedelta(hours=1))))
    assert export_sealed(engine, settings).events == 9


def test_one_exporter_at_a_time(fresh_engine: Engine, fresh_database: str, tmp_path: Path) -> None:
    from ledger.connections import job_lock
    from ledger.locks import ARCHIVE

    engine = fresh_engine
    append_blocks(ledger_with_prices(engine), 1, 9)
    settings = settings_for(fresh_database, tmp_path)
    with job_lock(engine, ARCHIVE) as held:
        assert held is not None
        assert not export_sealed(engine, settings).ran
    assert export_sealed(engine, settings).last_seq == 9

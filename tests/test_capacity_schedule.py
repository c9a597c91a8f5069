"""A capacity schedule file: stored all or nothing, a re-import is all duplicates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ingest.capacity_schedule import (
    ScheduleInvalid,
    load_schedule,
    parse_schedule,
)
from ledger import capacity
from ledger.actual_costs import schedule_event_id
from ledger.pools import PoolDefinition
from service.cli.main import app


@pytest.fixture
def pool(engine: Engine) -> str:
    name = f"sched-{uuid.uuid4().hex[:10]}"
    capacity.load_pools(
        engine,
        [
            PoolDefinition.model_validate(
                {
                    "name": name,
                    "gpu_sku": "gpu.a100.second",
                    "gpus": 4,
                    "currency": "USD",
                    "effective_from": "2026-01-01T00:00:00Z",
                    "payment": {"model": "on_demand", "per_gpu_hour": "2"},
                }
            )
        ],
    )
    return name


def rows(engine: Engine, pool: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        return raw.execute(
            "SELECT event_id, starts_at, ends_at, gpus, source, cost_nanos, description "
            "FROM actual_costs WHERE pool = %s ORDER BY starts_at",
            (pool,),
        ).fetchall()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"schedule-{uuid.uuid4().hex[:6]}.csv"
    path.write_text(text)
    return path


def good_file(pool: str, event_id: uuid.UUID) -> str:
    return (
        "pool,start,end,gpus,event_id,description\n"
        f"{pool},2026-11-01T00:00:00Z,2026-11-01T10:00:00Z,2,,reserved\n"
        f"{pool},2026-11-02T08:00:00+01:00,2026-11-02T09:30:00+01:00,1.5,{event_id},burst\n"
        "\n"
        f'{pool},2026-11-03T00:00:00Z,2026-11-03T01:00:00Z,4,,"night, all four"\n'
    )


def test_a_schedule_is_stored_and_a_reimport_is_all_duplicates(
    engine: Engine, pool: str, tmp_path: Path
) -> None:
    given = uuid.uuid4()
    path = write(tmp_path, good_file(pool, given))
    loaded = load_schedule(engine, path)
    assert (loaded.rows, loaded.accepted, loaded.duplicates) == (3, 3, 0)
    stored = rows(engine, pool)
    assert [r[4] for r in stored] == ["schedule"] * 3
    first, second, third = stored
    starts = datetime(2026, 11, 1, tzinfo=UTC)
    ends = datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert first[0] == schedule_event_id(pool, starts, ends, Decimal(2))
    assert first[5] == 10 * 2 * 2 * 10**9  # 10 hours × 2 GPUs × $2
    assert second[0] == given
    assert second[1] == datetime(2026, 11, 2, 7, tzinfo=UTC)
    assert second[3] == Decimal("1.5")
    assert third[6] == "night, all four"
    again = load_schedule(engine, path)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert len(rows(engine, pool)) == 3


@pytest.mark.parametrize(
    ("row", "column", "message"),
    [
        ("{pool},2026-11-05T00:00:00,2026-11-05T01:00:00Z,1", "start", "no time zone"),
        ("{pool},2026-11-05T00:00:00Z,yesterday,1", "end", "not an ISO-8601 time"),
        ("{pool},2026-11-05T02:00:00Z,2026-11-05T01:00:00Z,1", "end", "must be after"),
        ("{pool},2026-11-05T00:00:00Z,2026-11-05T01:00:00Z,two", "gpus", "not a number"),
        ("{pool},2026-11-05T00:00:00Z,2026-11-05T01:00:00Z,0", "gpus", "greater than 0"),
        ("{pool},2026-11-05T00:00:00Z,2026-11-05T01:00:00Z", "row", "3 columns"),
        ("Bad Pool,2026-11-05T00:00:00Z,2026-11-05T01:00:00Z,1", "pool", "pattern"),
    ],
)
def test_a_bad_line_is_named_and_nothing_is_stored(
    engine: Engine, pool: str, tmp_path: Path, row: str, column: str, message: str
) -> None:
    text = (
        "pool,start,end,gpus\n"
        f"{pool},2026-11-04T00:00:00Z,2026-11-04T01:00:00Z,1\n"
        f"{pool},2026-11-04T02:00:00Z,2026-11-04T03:00:00Z,1\n"
        f"{row.format(pool=pool)}\n"
    )
    with pytest.raises(ScheduleInvalid) as caught:
        load_schedule(engine, write(tmp_path, text))
    (error,) = caught.value.errors
    assert (error.line, error.field) == (4, column), error
    assert message in error.message
    assert "line 4" in str(caught.value)
    assert rows(engine, pool) == []


def test_an_undeclared_pool_is_a_clear_error(engine: Engine, pool: str, tmp_path: Path) -> None:
    text = (
        "pool,start,end,gpus\n"
        f"{pool},2026-11-04T00:00:00Z,2026-11-04T01:00:00Z,1\n"
        "nowhere,2026-11-04T00:00:00Z,2026-11-04T01:00:00Z,1\n"
    )
    with pytest.raises(ScheduleInvalid) as caught:
        load_schedule(engine, write(tmp_path, text))
    (error,) = caught.value.errors
    assert (error.line, error.field) == (3, "pool")
    assert "no pool 'nowhere'" in error.message
    assert "renderledger pools load" in error.message
    assert rows(engine, pool) == []


def test_the_header_is_checked() -> None:
    with pytest.raises(ScheduleInvalid, match="line 1, field gpus: required column"):
        parse_schedule("pool,start,end\n")
    with pytest.raises(ScheduleInvalid, match="line 1, field cost: unknown column"):
        parse_schedule("pool,start,end,gpus,cost\n")
    with pytest.raises(ScheduleInvalid, match="the file is empty"):
        parse_schedule("")
    records, lines = parse_schedule("\ufeffPool,Start,End,GPUs\n")  # a spreadsheet's BOM
    assert records == []
    assert lines == []


def test_the_same_row_twice_is_named(engine: Engine, pool: str, tmp_path: Path) -> None:
    row = f"{pool},2026-11-06T00:00:00Z,2026-11-06T01:00:00Z,1\n"
    with pytest.raises(ScheduleInvalid) as caught:
        load_schedule(engine, write(tmp_path, "pool,start,end,gpus\n" + row + row))
    assert [(e.line, e.field) for e in caught.value.errors] == [(3, "event_id")]
    assert rows(engine, pool) == []


def test_a_changed_row_with_a_known_id_is_a_conflict(
    engine: Engine, pool: str, tmp_path: Path
) -> None:
    given = uuid.uuid4()
    head = "pool,start,end,gpus,event_id\n"
    row = f"{pool},2026-11-07T00:00:00Z,2026-11-07T01:00:00Z,{{gpus}},{given}\n"
    assert load_schedule(engine, write(tmp_path, head + row.format(gpus=1))).accepted == 1
    with pytest.raises(ScheduleInvalid) as caught:
        load_schedule(engine, write(tmp_path, head + row.format(gpus=2)))
    (error,) = caught.value.errors
    assert (error.line, error.field) == (2, "event_id")
    assert "other content" in error.message


def test_ingest_capacity_cli(cli: CliRunner, pool: str, tmp_path: Path) -> None:
    path = write(tmp_path, good_file(pool, uuid.uuid4()))
    first = cli.invoke(app, ["ingest", "--capacity", str(path)])
    assert first.exit_code == 0, first.output
    assert "3 capacity rows: 3 accepted, 0 duplicates" in first.output
    again = cli.invoke(app, ["ingest", "--capacity", str(path)])
    assert again.exit_code == 0, again.output
    assert "0 accepted, 3 duplicates" in again.output
    bad = write(tmp_path, f"pool,start,end,gpus\n{pool},2026-11-08T00:00:00,x,1\n")
    refused = cli.invoke(app, ["ingest", "--capacity", str(bad)])
    assert refused.exit_code == 1
    assert "line 2, field start" in refused.output
    assert "nothing written" in refused.output

"""Hot storage is bounded (issue 16): the log partitioned by seq, ``archive prune`` dropping
partitions that are archived, verified and old, and every reader still whole after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal
from psycopg import errors
from sqlalchemy import Engine
from typer.testing import CliRunner

from ingest.sample import sample_events
from ledger import database, partitions
from ledger.chain import verify
from ledger.connections import connection
from ledger.errors import BatchInvalid, EventConflict
from ledger.events import CostEvent
from ledger.journal import read_after
from ledger.reversals import PRUNED
from ledger.store import FOREIGN_RENDER, Ledger
from reports import archive_events
from reports.archive import ArchiveError, recorded_commits
from reports.archive_export import export_sealed
from reports.archive_prune import keep_since, plan, prune
from reports.archive_settings import ArchiveSettings
from reports.archive_verify import verify_archive
from reports.jobs import run_rollup
from service.cli.main import app
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings, get_settings
from tests.conftest import ledger_with_prices, serving
from tests.test_archive import _tamper, table_of
from tests.test_archive_history import _tables

SIZE = 20  # events per partition in these tests
LATER = datetime.now(UTC) + timedelta(days=3)  # "now" for a prune that finds it all old


@dataclass
class Small:
    url: str
    engine: Engine  # the application role
    owner: Engine  # the migrating role: prune runs as it
    ledger: Ledger
    settings: Settings


def small_partitions(url: str) -> None:
    """Partitions of SIZE events instead of the migration's millions (its first is empty)."""
    with psycopg.connect(database.libpq_url(url), autocommit=True) as su:
        su.execute("DROP TABLE cost_events_p1")
    owner = database.make_engine(url)
    with connection(owner, transaction=True) as raw:
        partitions.ensure_ahead(raw, SIZE, ahead=10 * SIZE)
    owner.dispose()


@pytest.fixture
def small(fresh_database: str, tmp_path: Path) -> Iterator[Small]:
    small_partitions(fresh_database)
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    owner = database.make_engine(fresh_database)
    archive = ArchiveSettings(lag_s=0, commit_events=10, partition_events=SIZE)
    settings = Settings(database_url=fresh_database, data_dir=tmp_path, archive=archive)
    yield Small(fresh_database, engine, owner, ledger_with_prices(engine), settings)
    engine.dispose()
    owner.dispose()


def same_rollups(url: str, expected: dict[str, pl.DataFrame]) -> None:
    got = _tables(url)
    for table, frame in expected.items():
        assert_frame_equal(got[table], frame, check_dtypes=True)


def reversal_of(target: CostEvent, wall: float) -> CostEvent:
    return target.model_copy(
        update={
            "event_id": uuid.uuid4(),
            "reverses": target.event_id,
            "occurred_at": target.occurred_at + timedelta(hours=1),
            "attributes": {"wall_s": wall},  # the rollup takes the reversed event's wall
        }
    )


def history(s: Small) -> list[CostEvent]:
    """Seven blocks of ten (seq 1..70); block 5 reverses an event of block 1."""
    events = [
        e.model_copy(update={"attributes": {**e.attributes, "wall_s": 1 + i / 64}})
        if e.stage != "render"
        else e
        for i, e in enumerate(list(sample_events(12, seed=16))[:70])
    ]
    target = next(e for e in events[:10] if e.stage == "unet")
    blocks = [events[i : i + 10] for i in range(0, 70, 10)]
    blocks[4] = [*blocks[4][:9], reversal_of(target, 999.0)]
    for block in blocks:
        s.ledger.append(block)
    return events


def test_the_partitioned_log_is_immutable_on_every_partition(
    small: Small, make_event: Any, tenant: str
) -> None:
    small.ledger.append([make_event() for _ in range(3)])
    with psycopg.connect(database.libpq_url(small.url), autocommit=True) as su:
        for sql in (
            "UPDATE cost_events_p1 SET cost_nanos = 0",
            "DELETE FROM cost_events_p1",
            "TRUNCATE cost_events_p1",
            "TRUNCATE cost_events_default",
            "UPDATE event_keys SET content_hash = '\\x00'",
            "TRUNCATE log_pruned",
            "TRUNCATE pruned_renders",
            "TRUNCATE pruned_renders_recorded",
        ):
            with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
                su.execute(sql)
    with connection(small.engine) as raw, pytest.raises(errors.InsufficientPrivilege):
        raw.execute("SELECT count(*) FROM cost_events_p1")  # only through the parent


def test_the_migration_moves_every_row_both_ways(small: Small) -> None:
    events = history(small)
    before = read_after(small.engine, 0, 1000)
    database.downgrade(small.url, "0017")
    database.migrate(small.url)
    assert read_after(small.engine, 0, 1000) == before
    assert verify(small.engine).ok
    assert small.ledger.append(events[:10]).duplicates == 10  # the keys came across too


def test_rows_past_the_last_partition_land_in_the_default_and_are_moved_out(
    small: Small,
) -> None:
    events = list(sample_events(40, seed=3))
    for i in range(0, 230, 10):  # 10 * SIZE ahead: the last 30 land in the default
        small.ledger.append(events[i : i + 10])
    with connection(small.owner, transaction=True) as raw:
        made = partitions.ensure_ahead(raw, SIZE)
        assert made[0] == "cost_events_p201"
        found = raw.execute("SELECT count(*) FROM cost_events_default").fetchone()
        assert found == (0,)
    assert [e.seq for e in read_after(small.engine, 0, 1000)] == list(range(1, 231))
    assert verify(small.engine).ok


def test_prune_keeps_what_is_young_unarchived_or_unverified(small: Small) -> None:
    history(small)
    verdicts, _ = plan(small.owner, small.settings, "1d", LATER)
    assert all(not v.prune for v in verdicts)
    assert "not fully archived" in verdicts[0].reason

    export_sealed(small.engine, small.settings, max_commits=4)  # seq 1..40
    young, _ = plan(small.owner, small.settings, "3mo")
    assert "too young" in young[0].reason
    run_rollup(small.engine)
    old, _ = plan(small.owner, small.settings, "1d", LATER)
    assert [v.prune for v in old[:4]] == [True, True, False, False]
    assert "not fully archived: the archive's current snapshot holds seq 1..40" in old[2].reason
    assert "not full" in old[3].reason

    # A block hash altered behind the ledger's back: the archive no longer verifies.
    with psycopg.connect(database.libpq_url(small.url), autocommit=True) as su:
        su.execute("ALTER TABLE blocks DISABLE TRIGGER blocks_append_only")
        su.execute("UPDATE blocks SET hash = sha256(hash) WHERE block_id = 2")
        su.execute("ALTER TABLE blocks ENABLE TRIGGER blocks_append_only")
    result = prune(small.owner, small.settings, "1d", now=LATER)
    assert not result.ok
    assert not result.pruned
    assert all("failed verification" in v.reason for v in result.verdicts[:2])
    assert len(read_after(small.engine, 0, 1000)) == 70


def test_prune_keeps_a_partition_a_job_has_not_read(small: Small) -> None:
    history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    with psycopg.connect(database.libpq_url(small.url), autocommit=True) as su:
        su.execute(
            "INSERT INTO rollup_checkpoints (job, last_seq, updated_at) "
            "VALUES ('rollup', 25, now())"
        )
    verdicts, _ = plan(small.owner, small.settings, "1d", LATER)
    assert [v.prune for v in verdicts[:2]] == [True, False]
    assert verdicts[1].reason == "the rollup job rollup has read only through seq 25"


def test_after_prune_every_reader_is_whole(small: Small) -> None:
    events = history(small)
    export_sealed(small.engine, small.settings, max_commits=4)  # seq 1..40; 41..70 hot
    run_rollup(small.engine)
    run_rollup(small.engine, rebuild=True)
    rollups = _tables(small.url)
    log = read_after(small.engine, 0, 1000)
    tenant = log[0].tenant_id
    of_tenant = read_after(small.engine, 0, 1000, tenant)

    dry = prune(small.owner, small.settings, "1d", dry_run=True, now=LATER)
    assert [v.partition.name for v in dry.verdicts if v.prune] == [
        "cost_events_p1",
        "cost_events_p21",
    ]
    assert not dry.pruned
    assert read_after(small.engine, 0, 5)[0].seq == 1
    result = prune(small.owner, small.settings, "1d", now=LATER)
    assert result.ok
    assert [p.name for p in result.pruned] == ["cost_events_p1", "cost_events_p21"]
    assert result.expired_snapshots == 3  # all but the current of the four commits
    with connection(small.engine) as raw:
        assert raw.execute("SELECT min(seq) FROM cost_events").fetchone() == (41,)
        assert len(recorded_commits(raw)) == 3

    # Resends of pruned events: duplicates; changed: a conflict; reversed: refused, said why.
    assert small.ledger.append(events[:10]).duplicates == 10
    with pytest.raises(EventConflict):
        small.ledger.append([events[3].model_copy(update={"quantity": events[3].quantity + 1})])
    with pytest.raises(BatchInvalid) as refused:
        small.ledger.append([reversal_of(events[1], 1.0)])
    assert refused.value.errors[0].message == PRUNED
    # A pruned render is still its first tenant's.
    foreign = events[0].model_copy(update={"event_id": uuid.uuid4(), "tenant_id": "t-other"})
    with pytest.raises(BatchInvalid) as taken:
        small.ledger.append([foreign])
    assert taken.value.errors[0].message == FOREIGN_RENDER

    # verify: PostgreSQL from block 5, the pruned range from the archive alone.
    chain = verify(small.engine)
    assert chain.ok
    assert (chain.first_seq, chain.first_block) == (41, 5)
    judged = verify_archive(small.engine, small.settings)
    assert judged is not None
    assert judged.ok
    assert judged.archive.last_seq == 40

    # The rebuild reads the archive and the tail; the kept reversal takes its pruned
    # event's wall time from pruned_walls. PostgreSQL alone can no longer rebuild.
    run_rollup(small.engine, rebuild=True, archive=small.settings)
    same_rollups(small.url, rollups)
    with pytest.raises(ArchiveError, match="pruned"):
        run_rollup(small.engine, rebuild=True)

    # The log read back across the line, whole and per tenant, from any position.
    def across(after: int, limit: int, tenant_id: str | None = None) -> list[Any]:
        return archive_events.read_after(small.engine, small.settings, after, limit, tenant_id)

    assert across(0, 1000) == log
    assert across(15, 10) == log[15:25]
    assert across(35, 10) == log[35:45]
    assert across(0, 1000, tenant) == of_tenant

    # Exports carry on from where the archive ends, and the next prune takes what it can.
    export_sealed(small.engine, small.settings)
    again = prune(small.owner, small.settings, "1d", now=LATER)
    assert [p.name for p in again.pruned] == ["cost_events_p41"]  # p61 is not full
    assert "not full" in next(v.reason for v in again.verdicts if not v.prune)
    assert verify(small.engine).ok
    run_rollup(small.engine, rebuild=True, archive=small.settings)
    same_rollups(small.url, rollups)
    assert across(0, 1000) == log


def test_prune_judges_the_archive_rows_it_is_about_to_leave_alone(small: Small) -> None:
    """What prune drops must verify; an archived row altered elsewhere, already pruned or
    still in PostgreSQL, is ``verify``'s to find, and does not hold up a prune."""
    history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    run_rollup(small.engine)
    first = prune(small.owner, small.settings, "1d", now=LATER)
    assert first.verified == ((1, 40), 40)
    export_sealed(small.engine, small.settings)  # seq 41..70
    table = table_of(small.engine, small.settings)
    for seq in (7, 45, 65):  # blocks 1 (pruned), 5 (in cost_events_p41, next), 7 (kept)
        _tamper(table, seq, "cost_nanos", lambda v: v + 1)
    refused = prune(small.owner, small.settings, "1d", now=LATER)
    assert not refused.pruned
    assert refused.problems == ["archive block 5: its recomputed hash differs from the stored one"]
    _tamper(table, 45, "cost_nanos", lambda v: v - 1)
    again = prune(small.owner, small.settings, "1d", now=LATER)
    assert again.ok, again.problems
    assert [p.name for p in again.pruned] == ["cost_events_p41"]
    assert again.verified == ((41, 60), 20)
    whole = verify_archive(small.engine, small.settings)  # verify still reads it all
    assert whole is not None
    assert not whole.ok
    assert [b.block_id for b in whole.rows.broken] == [1, 7]


def test_get_events_serves_the_pruned_range_from_the_archive(small: Small) -> None:
    history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    run_rollup(small.engine)
    key = create_key(small.engine, None, ["admin"], "tests")
    app_ = create_app(small.settings, small.ledger, schedule=False)
    with serving(app_) as base, httpx.Client(base_url=base, timeout=30) as http:
        headers = {"authorization": f"Bearer {key}"}

        def page(after: int) -> Any:
            got = http.get(f"/v1/events?after_seq={after}&limit=25", headers=headers)
            assert got.status_code == 200, got.text
            return got.json()

        before = [page(a) for a in (0, 25, 50)]
        assert prune(small.owner, small.settings, "1d", now=LATER).pruned
        assert [page(a) for a in (0, 25, 50)] == before


def test_the_prune_command_says_why_each_partition_is_kept(
    small: Small, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    run_rollup(small.engine)
    monkeypatch.setenv("DATABASE_URL", small.url)
    monkeypatch.setenv("RENDERLEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RENDERLEDGER_ARCHIVE__PARTITION_EVENTS", str(SIZE))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    cli = CliRunner()
    try:
        young = cli.invoke(app, ["archive", "prune", "--keep", "3mo", "--dry-run"])
        assert young.exit_code == 0, young.output
        assert "kept: too young" in young.output
        # Age the blocks as a superuser could: the first four stored 100 days ago.
        with psycopg.connect(database.libpq_url(small.url), autocommit=True) as su:
            su.execute("ALTER TABLE blocks DISABLE TRIGGER blocks_append_only")
            su.execute(
                "UPDATE blocks SET created_at = created_at - interval '100 days' "
                "WHERE block_id <= 4"
            )
            su.execute("ALTER TABLE blocks ENABLE TRIGGER blocks_append_only")
        dry = cli.invoke(app, ["archive", "prune", "--keep", "3mo", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        assert dry.output.count("would prune") == 2
        assert "cost_events_p41 (seq 41..60): kept: too young" in dry.output
        done = cli.invoke(app, ["archive", "prune", "--keep", "3mo"])
        assert done.exit_code == 0, done.output
        assert "pruned 2 partition(s)" in done.output
        verified = cli.invoke(app, ["verify"])
        assert verified.exit_code == 0, verified.output
        assert "seq 1..40 (blocks 1..4): archive only (pruned from PostgreSQL)" in (verified.output)
        bad = cli.invoke(app, ["archive", "prune", "--keep", "soon"])
        assert bad.exit_code == 1
        assert "not a keep window" in bad.output
    finally:
        get_settings.cache_clear()


def test_keep_windows_are_calendar_months() -> None:
    now = datetime(2026, 5, 31, 12, tzinfo=UTC)
    assert keep_since("3mo", now) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert keep_since("1y", now) == datetime(2025, 5, 31, 12, tzinfo=UTC)
    assert keep_since("2w", now) == now - timedelta(days=14)

"""Invoices drafted from archive + hot tail equal those drafted from PostgreSQL alone (issue 16).

The random histories of test_archive_history.py (new renders, late events of old renders,
reversals of any earlier event, a render's events on both sides of the archive line) are
appended to one fresh database, example after example, and a random prefix of the sealed
blocks is archived. Two tenants bill in different months: one in UTC, one in New York (its
October starts at 04:00Z, so the first hours of 1 October are its September). Checked each
time, for September and October:

1. ``read_usage_history`` (archived files chosen by their statistics, the tail by SQL)
   equals ``read_usage`` (``_USAGE`` on PostgreSQL alone) for any ``after_seq`` and
   ``through_seq``, each tenant alone and both at once;
2. ``draft_all`` through the history drafts the same invoices as ``draft_all`` from
   PostgreSQL alone.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import database
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.journal import head as ledger_head
from reports import history
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.billing.lifecycle import draft_all
from reports.billing.plans import parse_plan, store_plan
from reports.billing.pricing import Usage
from reports.billing.usage import read_usage, read_usage_history, windows_of
from service.settings import Settings
from tests.conftest import ledger_with_prices
from tests.test_archive_history import TENANTS, World, _events, step

SEPTEMBER, OCTOBER = date(2026, 9, 1), date(2026, 10, 1)
ISSUED = date(2026, 11, 2)
PLANS: tuple[dict[str, Any], ...] = (
    {
        "tenant": TENANTS[0],
        "effective_from": "2026-09-01",
        "name": "cost-plus",
        "default": {"markup": "0.35"},
    },
    {
        "tenant": TENANTS[1],
        "effective_from": "2026-09-01",
        "timezone": "America/New_York",
        "name": "per image",
        "default": {"tiers": [{"up_to": 2, "unit_price": "0.05"}, {"unit_price": "0.04"}]},
    },
)


@pytest.fixture
def world(fresh_database: str, tmp_path: Path) -> Iterator[World]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    archive = ArchiveSettings(lag_s=0, commit_events=1)  # one block per commit, a file each
    with connection(engine, transaction=True) as raw:
        for plan in PLANS:
            store_plan(raw, parse_plan(plan))
    yield World(
        engine,
        fresh_database,
        ledger_with_prices(engine),
        Settings(database_url=fresh_database, data_dir=tmp_path, archive=archive),
    )
    engine.dispose()


def _sorted(usage: list[Usage]) -> list[Usage]:
    return sorted(usage, key=lambda u: (u.use_case, u.outcome, u.currency))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    blocks=st.lists(st.lists(step, min_size=1, max_size=6), min_size=1, max_size=3),
    archive_blocks=st.integers(0, 4),
    seed=st.integers(0, 2**32 - 1),
)
def drafts_agree(
    world: World, blocks: list[list[tuple[Any, ...]]], archive_blocks: int, seed: int
) -> None:
    w = world
    for steps in blocks:
        events = _events(w, steps)
        if events:
            w.ledger.append(events)
            w.reversible.extend(e for e in events if e.reverses is None)
    export_sealed(w.engine, w.settings, max_commits=archive_blocks)
    rng = random.Random(seed)
    tenants = list(TENANTS)
    with history.opened(w.engine, w.settings) as past, connection(w.engine) as raw:
        head = ledger_head(raw)
        if past.archive.last_seq:
            w.archived_examples += 1
        if 0 < past.archive.last_seq < head:
            w.split_examples += 1
        for period in (SEPTEMBER, OCTOBER):
            windows = windows_of(raw, tenants, period)
            for _ in range(3):
                through = rng.randint(0, head)
                after = rng.choice((0, rng.randint(0, through)))
                both = read_usage_history(raw, past, windows, through, after_seq=after)
                for t in tenants:
                    alone = read_usage(raw, windows[t], through, tenants=[t], after_seq=after)
                    mine = read_usage_history(raw, past, {t: windows[t]}, through, after_seq=after)
                    assert _sorted(mine.get(t, [])) == _sorted(alone.get(t, [])), (t, period)
                    assert _sorted(both.get(t, [])) == _sorted(alone.get(t, [])), (t, period)
            from_postgres = draft_all(raw, period, tenants, issued_on=ISSUED)
            from_archive = draft_all(raw, period, tenants, issued_on=ISSUED, past=past)
            assert [d.model_dump() for d in from_archive] == [d.model_dump() for d in from_postgres]


def test_drafts_from_archive_and_tail_equal_drafts_from_postgresql(world: World) -> None:
    """The property, and a count that its examples did put the line between archive and
    tail inside the histories."""
    drafts_agree(world)
    assert world.archived_examples >= 3
    assert world.split_examples >= 2


def test_archived_files_outside_the_window_are_not_read(world: World) -> None:
    """A month is read from the files that may hold it, by their statistics; the skipped
    files still count towards the gapless seq (an archive missing one stops the read)."""
    w = world
    for month in (8, 9, 10):  # August, September, October: a block (a file) each
        w.ledger.append([_render_event(datetime(2026, month, 10, 12, tzinfo=UTC))])
    export_sealed(w.engine, w.settings)
    with history.opened(w.engine, w.settings) as past:
        assert past.archive.last_seq == 3

        def read(since: date, until: date, through: int = 3) -> list[int]:
            tables = history.archive_tables_in(
                past,
                ("seq",),
                since=datetime.combine(since, datetime.min.time(), UTC),
                until=datetime.combine(until, datetime.min.time(), UTC),
                through=through,
            )
            return [s for t in tables for s in t.column("seq").to_pylist()]

        assert read(SEPTEMBER, OCTOBER) == [2]
        assert read(OCTOBER, date(2026, 11, 1)) == [3]
        assert read(SEPTEMBER, date(2026, 11, 1)) == [2, 3]
        assert read(date(2026, 11, 1), date(2026, 12, 1)) == []
        assert read(SEPTEMBER, date(2026, 11, 1), through=2) == [2]


def _render_event(at: datetime) -> CostEvent:
    return CostEvent.model_validate(
        {
            "event_id": uuid.uuid4(),
            "tenant_id": TENANTS[0],
            "use_case": "social",
            "render_id": uuid.uuid4(),
            "stage": "render",
            "sku": "render.image",
            "quantity": 1,
            "occurred_at": at,
            "outcome": "delivered",
        }
    )

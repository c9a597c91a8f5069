"""The rebuild from archive + hot tail equals the rebuild from PostgreSQL alone (issue 16).

Random histories are appended to one fresh database, example after example (as in
test_reconciliation.py): new renders with every kind of stage, late events of renders
rolled up long ago (an earlier day, a later block), reversals of any earlier event (their
wall time must come from the event they reverse, which may be archived), hit and miss
cache events, wall times with more places than the rollup keeps. Each example then
archives a random prefix of the sealed blocks, so the line between archive and tail falls
anywhere: inside a render, between a late event and its render, between an event and its
reversal. Checked each time, over the whole database:

1. ``reports.history``'s signed rows from archive + tail equal ``read_events_adbc``'s,
   the rollup's SQL reading of PostgreSQL alone, row by row;
2. the rollup tables rebuilt from archive + tail equal those rebuilt from PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from sqlalchemy import Engine

from ledger import database
from ledger.events import CostEvent
from ledger.store import Ledger
from reports import history, rollup_history
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.jobs import run_rollup
from reports.source import EVENT_SCHEMA, read_events_adbc
from service.settings import Settings
from tests.conftest import ledger_with_prices

DAY0 = datetime(2026, 10, 1, tzinfo=UTC)
TENANTS = ("acme", "globex")
STAGES = (
    ("text_encoder", "gpu.h100.second"),
    ("caption_llm", "llm.gpt-4o-mini.input_token"),
    ("unet", "gpu.h100.second"),
    ("vae_decode", "gpu.a100.second"),
    ("storage", "s3.put_request"),
)


@dataclass
class World:
    engine: Engine
    url: str
    ledger: Ledger
    settings: Settings
    renders: list[tuple[str, str, uuid.UUID]] = field(default_factory=list)
    reversible: list[CostEvent] = field(default_factory=list)
    archived_examples: int = 0
    split_examples: int = 0


@pytest.fixture
def world(fresh_database: str, tmp_path: Path) -> Iterator[World]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    archive = ArchiveSettings(lag_s=0, commit_events=1)  # one block per commit
    yield World(
        engine,
        fresh_database,
        ledger_with_prices(engine),
        Settings(database_url=fresh_database, data_dir=tmp_path, archive=archive),
    )
    engine.dispose()


# A step: ("render", tenant, use case, day, stages, wall, latency, outcome, hit)
#         ("late", which render, stage, day, wall) / ("reverse", which event, wall)
walls = st.one_of(
    st.none(), st.floats(0, 50, allow_nan=False), st.decimals("0", "9", places=12).map(float)
)
render_step = st.tuples(
    st.just("render"),
    st.integers(0, len(TENANTS) - 1),
    st.sampled_from(("social", "ecommerce")),
    st.integers(0, 4),
    st.lists(st.integers(0, len(STAGES) - 1), min_size=0, max_size=3),
    walls,
    st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    st.sampled_from((None, "delivered", "failed")),
    st.booleans(),
)
late_step = st.tuples(
    st.just("late"), st.integers(0, 10**6), st.integers(0, len(STAGES) - 1), st.integers(0, 4),
    walls,
)  # fmt: skip
reverse_step = st.tuples(st.just("reverse"), st.integers(0, 10**6), walls)
step = st.one_of(render_step, render_step, late_step, reverse_step)


def _event(
    tenant: str, use_case: str, render: uuid.UUID, stage: int, day: int, **more: Any
) -> CostEvent:
    name, sku = STAGES[stage]
    fields = {
        "event_id": uuid.uuid4(),
        "tenant_id": tenant,
        "use_case": use_case,
        "render_id": render,
        "stage": name,
        "sku": sku,
        "quantity": Decimal("1.25") + stage,
        "occurred_at": DAY0 + timedelta(days=day, seconds=stage * 7 + 1),
    }
    return CostEvent.model_validate(fields | more)


def _attrs(wall: float | None) -> dict[str, Any]:
    return {} if wall is None else {"wall_s": wall}


def _events(w: World, steps: list[tuple[Any, ...]]) -> list[CostEvent]:
    out: list[CostEvent] = []
    for s in steps:
        if s[0] == "render":
            _, t, use_case, day, stages, wall, latency, outcome, hit = s
            tenant, render = TENANTS[t], uuid.uuid4()
            w.renders.append((tenant, use_case, render))
            for i, stage in enumerate(stages):
                cache = {"cache": "hit" if hit else "miss"} if stage == 0 else {}
                out.append(
                    _event(tenant, use_case, render, stage, day, attributes=_attrs(wall), **cache)
                )
                if i == 0 and stage == 0:
                    out[-1] = out[-1].model_copy(update={"baseline_quantity": Decimal("2")})
            if outcome is not None:
                attributes = {"model": "sdxl", "gpu_type": "h100"}
                if latency is not None:
                    attributes["latency_ms"] = latency
                out.append(
                    CostEvent.model_validate(
                        {
                            "event_id": uuid.uuid4(),
                            "tenant_id": tenant,
                            "use_case": use_case,
                            "render_id": render,
                            "stage": "render",
                            "sku": "render.image",
                            "quantity": Decimal(1),
                            "occurred_at": DAY0 + timedelta(days=day, seconds=99),
                            "outcome": outcome,
                            "attributes": attributes,
                        }
                    )
                )
        elif s[0] == "late" and w.renders:
            _, which, stage, day, wall = s
            tenant, use_case, render = w.renders[which % len(w.renders)]
            out.append(_event(tenant, use_case, render, stage, day, attributes=_attrs(wall)))
        elif s[0] == "reverse" and w.reversible:
            _, which, wall = s
            target = w.reversible.pop(which % len(w.reversible))
            out.append(
                target.model_copy(
                    update={
                        "event_id": uuid.uuid4(),
                        "reverses": target.event_id,
                        "occurred_at": target.occurred_at + timedelta(hours=30),
                        "attributes": _attrs(wall),  # ignored: the reversed event's counts
                    }
                )
            )
    return out


def _tables(url: str) -> dict[str, pl.DataFrame]:
    out = {}
    with psycopg.connect(database.libpq_url(url)) as conn:
        for table, order in (
            ("render_rollup", "render_id, currency"),
            ("daily_rollup", "tenant_id, day, use_case, stage, sku, outcome, currency"),
        ):
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")
            names = [d.name for d in cur.description or ()]
            rows = [tuple(str(v) if isinstance(v, uuid.UUID) else v for v in r) for r in cur]
            out[table] = pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)
    return out


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    blocks=st.lists(st.lists(step, min_size=1, max_size=6), min_size=1, max_size=3),
    archive_blocks=st.integers(0, 4),
)
def rebuilds_agree(world: World, blocks: list[list[tuple[Any, ...]]], archive_blocks: int) -> None:
    w = world
    for steps in blocks:
        events = _events(w, steps)
        if events:
            w.ledger.append(events)
            w.reversible.extend(e for e in events if e.reverses is None)
    export_sealed(w.engine, w.settings, max_commits=archive_blocks)

    with history.opened(w.engine, w.settings) as past:
        if past.archive.last_seq:
            w.archived_examples += 1
        if 0 < past.archive.last_seq < past.head:
            w.split_examples += 1
        frames = list(rollup_history.signed_frames(past, rows=50))
        head = past.head
    if not head:
        return
    got = pl.concat(frames)
    expected = read_events_adbc(database.libpq_url(w.url), 1, head, "renderledger_app")
    assert_frame_equal(got, expected.cast(EVENT_SCHEMA))  # type: ignore[arg-type]

    run_rollup(w.engine, rebuild=True)
    from_postgres = _tables(w.url)
    run_rollup(w.engine, rebuild=True, archive=w.settings, chunk_events=60)
    from_archive = _tables(w.url)
    for table, frame in from_postgres.items():
        assert_frame_equal(from_archive[table], frame, check_dtypes=True)


def test_rebuild_from_archive_and_tail_equals_rebuild_from_postgresql(world: World) -> None:
    """The property, and a count that its examples did put the line between archive and
    tail inside the histories (it is only as good as they are)."""
    rebuilds_agree(world)
    assert world.archived_examples >= 3
    assert world.split_examples >= 2

"""Rollups against a real PostgreSQL: exact to the nano, incremental == rebuild, crash-safe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.locks import ROLLUP
from ledger.store import Ledger
from reports import jobs, rollup_rebuild, rollup_writes
from reports.jobs import run_rollup
from tests.conftest import ledger_with_prices

STAGE_SKUS = [
    ("text_encoder", "gpu.h100.second"),
    ("caption_llm", "llm.gpt-4o-mini.input_token"),
    ("unet", "gpu.a100.second"),
    ("vae_decode", "gpu.h100.second"),
    ("postprocess", "cpu.vcpu.second"),
    ("storage", "s3.put_request"),
]


@pytest.fixture
def own_ledger(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


def rebuild_from_scratch(ledger: Ledger, url: str, chunk: int = 10_000) -> None:
    """Wreck the rollups first (as the owner), so a rebuild that did nothing cannot pass."""
    with psycopg.connect(database.libpq_url(url), autocommit=True) as owner:
        owner.execute("UPDATE render_rollup SET total_nanos = -1")
        owner.execute("DELETE FROM daily_rollup WHERE stage = 'unet'")
    result = run_rollup(ledger.engine, rebuild=True, chunk_events=chunk)
    assert result.ran


def snapshot(ledger: Ledger) -> tuple[list[Any], list[Any]]:
    with connection(ledger.engine) as raw:
        renders = raw.execute("SELECT * FROM render_rollup ORDER BY render_id").fetchall()
        days = raw.execute("SELECT * FROM daily_rollup ORDER BY 1, 2, 3, 4, 5, 6").fetchall()
    return renders, days


def _event(
    tenant: str, render: uuid.UUID, stage: str, sku: str, qty: str, day: int, **extra: Any
) -> CostEvent:
    at = datetime(2026, 10, 1, 12, tzinfo=UTC) + timedelta(days=day)
    return unet_event(
        tenant, render, stage=stage, sku=sku, quantity=Decimal(qty), occurred_at=at, **extra
    )


def test_rollup_totals_equal_the_ledger_to_the_nano(own_ledger: Ledger) -> None:
    from ingest.sample import sample_events

    events = list(sample_events(400, seed=3))
    for i in range(0, len(events), 1000):
        own_ledger.append(events[i : i + 1000])
    result = run_rollup(own_ledger.engine, chunk_events=777)
    assert result.ran
    assert result.events == len(events)
    with connection(own_ledger.engine) as raw:
        (ledger_total,) = raw.execute("SELECT sum(cost_nanos) FROM cost_events").fetchone() or (0,)
        (renders_total,) = raw.execute("SELECT sum(total_nanos) FROM render_rollup").fetchone() or (
            0,
        )
        (daily_total,) = raw.execute("SELECT sum(cost_nanos) FROM daily_rollup").fetchone() or (0,)
        by_tenant_sql = dict(
            raw.execute("SELECT tenant_id, sum(cost_nanos) FROM cost_events GROUP BY 1").fetchall()
        )
        by_tenant_rollup = dict(
            raw.execute("SELECT tenant_id, sum(cost_nanos) FROM daily_rollup GROUP BY 1").fetchall()
        )
    assert ledger_total == renders_total == daily_total
    assert by_tenant_sql == by_tenant_rollup
    assert run_rollup(own_ledger.engine).events == 0  # nothing new: nothing done


histories = st.lists(
    st.tuples(
        st.integers(0, 5),  # which render (few, so renders gain late events)
        st.integers(0, len(STAGE_SKUS) - 1),
        st.integers(1, 4000).map(lambda n: str(Decimal(n) / 1000)),
        st.integers(-3, 20),  # day offset: negative ones arrive late
        st.sampled_from(["none", "render", "reverse", "resend"]),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories, chunk=st.integers(1, 30))
def test_incremental_equals_rebuild(
    own_ledger: Ledger, fresh_database: str, history: list[Any], chunk: int
) -> None:
    tenant = f"h-{uuid.uuid4().hex[:10]}"
    renders = [uuid.uuid4() for _ in range(6)]
    sent: list[CostEvent] = []
    for which, stage_i, qty, day, action in history:
        stage, sku = STAGE_SKUS[stage_i]
        if action == "render":
            event = _event(
                tenant,
                renders[which],
                "render",
                "render.image",
                "1",
                day,
                outcome="delivered",
                attributes={"latency_ms": 100 + day},
            )
        else:
            event = _event(tenant, renders[which], stage, sku, qty, day)
        batch = [event]
        if action == "reverse" and sent:
            target = sent[-1]
            batch = [
                target.model_copy(
                    update={
                        "event_id": uuid.uuid4(),
                        "reverses": target.event_id,
                        "outcome": None,
                        "stage": target.stage,
                    }
                )
            ]
            if (
                target.stage == "render"
                or target.reverses is not None
                or any(e.reverses == target.event_id for e in sent)
            ):
                batch = [event]
        if action == "resend" and sent:
            batch = [sent[-1], event]
        own_ledger.append(batch)
        sent.extend(e for e in batch if e not in sent)
        run_rollup(own_ledger.engine, chunk_events=chunk)  # incremental, often mid-history
    incremental = snapshot(own_ledger)
    rebuild_from_scratch(own_ledger, fresh_database, chunk=max(1, chunk // 2))
    assert snapshot(own_ledger) == incremental


def test_a_job_killed_half_way_and_run_again_changes_nothing(
    own_ledger: Ledger, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingest.sample import sample_events

    events = list(sample_events(60, seed=5))
    own_ledger.append(events)
    # Killed between chunks: the first chunk is committed with its checkpoint.
    assert run_rollup(own_ledger.engine, chunk_events=100, stop_after_chunks=1).last_seq == 100
    # Killed inside a chunk, after the rollup rows were written but before the commit.
    real_save = rollup_writes.save_checkpoint

    def crash(*args: Any) -> None:
        raise RuntimeError("kill -9")

    monkeypatch.setattr("reports.jobs.save_checkpoint", crash)
    with pytest.raises(RuntimeError, match="kill -9"):
        run_rollup(own_ledger.engine, chunk_events=100)
    monkeypatch.setattr("reports.jobs.save_checkpoint", real_save)
    with connection(own_ledger.engine) as raw:
        assert jobs.checkpoint(raw) == 100
    run_rollup(own_ledger.engine, chunk_events=100)
    resumed = snapshot(own_ledger)
    rebuild_from_scratch(own_ledger, fresh_database)
    assert snapshot(own_ledger) == resumed


def test_a_second_runner_skips_while_the_first_holds_the_lock(own_ledger: Ledger) -> None:
    with connection(own_ledger.engine) as raw:
        raw.execute("SELECT pg_advisory_lock(%s)", (ROLLUP,))
        try:
            assert run_rollup(own_ledger.engine).ran is False
        finally:
            raw.execute("SELECT pg_advisory_unlock(%s)", (ROLLUP,))
    assert run_rollup(own_ledger.engine).ran is True


def test_the_bulk_load_functions_refuse_a_table_with_rows(own_ledger: Ledger) -> None:
    own_ledger.append([unet_event("acme")])
    run_rollup(own_ledger.engine)
    with connection(own_ledger.engine) as raw, pytest.raises(psycopg.errors.RaiseException):
        raw.execute("SELECT renderledger_render_rollup_unindex()")
    rebuilt = run_rollup(own_ledger.engine, rebuild=True)
    with connection(own_ledger.engine) as raw:
        indexes = {
            r[0]
            for r in raw.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'render_rollup'"
            )
        }
        rows = raw.execute("SELECT count(*) FROM render_rollup").fetchone()
    assert rebuilt.events == 1
    assert indexes == {
        "render_rollup_pkey",
        "render_rollup_tenant_day",
        "render_rollup_rendered_at",
    }
    assert rows == (1,)


def test_a_rebuild_merges_rows_it_wrote_before_their_late_events(
    own_ledger: Ledger, fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild writes a render once a chunk passes without it, and a day once the log is
    a day past it. Events arriving later (a late stage of an old render, on its old day; a
    second render event) must be merged into those rows, not written beside them."""
    early, other = uuid.uuid4(), uuid.uuid4()
    own_ledger.append([_event("late-co", early, "unet", "gpu.a100.second", "1.5", 0)])
    own_ledger.append(
        [
            _event(
                "late-co", early, "render", "render.image", "1", 0, outcome="delivered"
            ).model_copy(update={"attributes": {"model": "sdxl"}})
        ]
    )
    # Many chunks of other renders days later, then late events of the first render.
    own_ledger.append(
        [_event("late-co", other, "unet", "gpu.a100.second", "2", d) for d in range(3, 9)]
    )
    own_ledger.append(
        [
            _event("late-co", early, "vae_decode", "gpu.h100.second", "0.25", 0),
            _event(
                "late-co",
                early,
                "render",
                "render.image",
                "1",
                0,
                outcome="failed",
                attributes={"latency_ms": 7.0, "model": "other"},
            ),
        ]
    )
    run_rollup(own_ledger.engine, chunk_events=1)  # incremental, event by event
    incremental = snapshot(own_ledger)
    replaced: list[int] = []
    upserted: list[str] = []
    real_replace, real_upsert = rollup_rebuild._merge_written_twice, rollup_writes.upsert

    def replace(raw: Any, keys: Any) -> None:
        replaced.append(keys.height)
        real_replace(raw, keys)

    def upsert(raw: Any, table: str, *args: Any) -> None:
        upserted.append(table)
        real_upsert(raw, table, *args)

    monkeypatch.setattr(rollup_rebuild, "_merge_written_twice", replace)
    monkeypatch.setattr("reports.rollup_rebuild.upsert", upsert)
    rebuild_from_scratch(own_ledger, fresh_database, chunk=1)
    assert replaced == [1]  # the early render, written twice, merged once
    assert upserted == ["daily_rollup"]  # its late day's rows
    assert snapshot(own_ledger) == incremental
    renders = {r[0]: r for r in incremental[0]}
    with connection(own_ledger.engine) as raw:
        outcome, latency, model = raw.execute(
            "SELECT outcome, latency_ms, model FROM render_rollup WHERE render_id = %s", (early,)
        ).fetchone() or (None, None, None)
    assert early in renders
    # First wins: the first render event's outcome and model; its latency, the first given.
    assert (outcome, latency, model) == ("delivered", 7.0, "sdxl")

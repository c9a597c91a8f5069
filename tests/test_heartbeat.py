"""Capacity heartbeats against the real ledger: contiguous spans, nothing lost or doubled."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from ingest.client import DeliveryFailed, Emitter, LedgerTransport, Spool
from ledger import capacity
from ledger.actual_costs import CapacityHeld
from ledger.journal import read_render
from ledger.pools import PoolDefinition
from ledger.store import Ledger
from render.caption import CaptionClient
from render.heartbeat import Heartbeat, HttpCapacitySink, LedgerCapacitySink, heartbeat_event_id
from render.presets import Built, build
from render.renderer import Renderer, RenderRequest
from render.storage import LocalStore
from service.cli.main import app
from tests.conftest import free_port

BEAT = 0.05


def pool_definition(name: str) -> PoolDefinition:
    return PoolDefinition.model_validate(
        {
            "name": name,
            "gpu_sku": "gpu.h100.second",
            "gpus": 2,
            "currency": "USD",
            "effective_from": "2020-01-01T00:00:00Z",
            "payment": {"model": "on_demand", "per_gpu_hour": "3.6"},
        }
    )


@pytest.fixture
def pool(engine: Engine) -> str:
    name = f"hb-{uuid.uuid4().hex[:10]}"
    capacity.load_pools(engine, [pool_definition(name)])
    return name


def spans(engine: Engine, pool: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        return raw.execute(
            "SELECT starts_at, ends_at, gpus, source, cost_nanos, event_id FROM actual_costs "
            "WHERE pool = %s ORDER BY starts_at",
            (pool,),
        ).fetchall()


def assert_contiguous(rows: list[tuple[Any, ...]]) -> timedelta:
    """No gap, no overlap; the total time covered."""
    assert rows
    for before, after in pairwise(rows):
        assert after[0] == before[1], (before, after)
    assert all(r[1] > r[0] for r in rows)
    assert {r[3] for r in rows} == {"heartbeat"}
    assert len({r[5] for r in rows}) == len(rows)
    total: timedelta = rows[-1][1] - rows[0][0]
    assert sum((r[1] - r[0] for r in rows), timedelta(0)) == total
    return total


def assert_held(total: timedelta, held: float, slack: float = 2.0) -> None:
    """Spans cover the time from start to close: measured around both, a little less."""
    covered = total.total_seconds()
    assert covered <= held + 1e-5, (covered, held)
    assert held - covered < slack, (covered, held)


def hold(seconds: float) -> None:
    time.sleep(seconds)


def test_spans_cover_the_time_held_and_stop_with_the_worker(engine: Engine, pool: str) -> None:
    t0 = time.monotonic()
    with Heartbeat(LedgerCapacitySink(engine), pool, interval_s=BEAT) as hb:
        # Until four beats are in (bounded): a busy machine may beat slower than the clock.
        deadline = time.monotonic() + 20
        while len(spans(engine, pool)) < 4 and time.monotonic() < deadline:
            hold(BEAT)
        assert hb.running
    held = time.monotonic() - t0
    assert not hb.running
    assert hb.unacknowledged == timedelta(0)
    rows = spans(engine, pool)
    assert len(rows) >= 5  # ~12 beats, and the final one
    total = assert_contiguous(rows)
    assert_held(total, held)
    assert rows[-1][1] == hb.acknowledged_until
    assert {r[2] for r in rows} == {Decimal(1)}
    # 3.6/hour per GPU = 1 milli-unit per second: what was paid follows the time held.
    paid = sum(r[4] for r in rows)
    assert abs(paid - round(total.total_seconds() * 10**6)) <= len(rows)
    # Stopping stops the beats: nothing arrives afterwards.
    hold(4 * BEAT)
    assert len(spans(engine, pool)) == len(rows)
    hb.close()  # a second close is harmless and records nothing
    assert len(spans(engine, pool)) == len(rows)


class Flaky:
    """A sink whose sends fail on chosen calls: ``before`` sends nothing, ``after`` stores
    and then reports failure (the acknowledgement lost), as a timeout would."""

    def __init__(self, inner: LedgerCapacitySink, plan: dict[int, str]) -> None:
        self.inner, self.plan, self.calls = inner, plan, 0
        self.sent: list[CapacityHeld] = []

    def send(self, records: Sequence[CapacityHeld]) -> None:
        self.calls += 1
        how = self.plan.get(self.calls)
        if how == "before":
            raise DeliveryFailed("connection refused")
        self.inner.send(records)
        self.sent.extend(records)
        if how == "after":
            raise DeliveryFailed("read timeout")

    def close(self) -> None:
        pass


def test_a_failing_sink_loses_nothing_and_doubles_nothing(engine: Engine, pool: str) -> None:
    plan = {2: "before", 3: "before", 4: "after", 6: "after", 7: "before", 9: "after"}
    sink = Flaky(LedgerCapacitySink(engine), plan)
    t0 = time.monotonic()
    with Heartbeat(sink, pool, interval_s=BEAT) as hb:
        while sink.calls < 12 and time.monotonic() - t0 < 10:
            hold(BEAT)
    held = time.monotonic() - t0
    assert hb.failures >= len(plan)
    assert hb.unacknowledged == timedelta(0)
    rows = spans(engine, pool)
    total = assert_contiguous(rows)
    assert_held(total, held)
    # A span stored but not acknowledged was sent again, verbatim: the same id, stored once.
    resent = [r for r in sink.sent if sink.sent.count(r) > 1]
    assert resent
    assert {r.event_id for r in sink.sent} == {r[5] for r in rows}


def test_a_long_outage_is_covered_by_the_next_beat(engine: Engine, pool: str) -> None:
    down = {n: "before" for n in range(1, 8)}
    sink = Flaky(LedgerCapacitySink(engine), down)
    with Heartbeat(sink, pool, interval_s=BEAT):
        while sink.calls < 7:
            hold(BEAT / 10)
        assert spans(engine, pool) == []  # the first span never left; it is the pending one
        deadline = time.monotonic() + 5
        while len(spans(engine, pool)) < 2 and time.monotonic() < deadline:
            hold(BEAT / 10)
        first, rest = spans(engine, pool)[:2]
        # After the outage: the failed span as it was, then one span up to the recovery.
        assert rest[1] - rest[0] >= timedelta(seconds=5 * BEAT)
        assert first[1] - first[0] < rest[1] - rest[0]
    assert_contiguous(spans(engine, pool))


def test_span_ids_are_stable_so_a_resend_is_a_duplicate(engine: Engine, pool: str) -> None:
    worker = uuid.uuid4()
    at = datetime.now(UTC) - timedelta(minutes=5)
    assert heartbeat_event_id(worker, at) == heartbeat_event_id(worker, at.astimezone())
    assert heartbeat_event_id(worker, at) != heartbeat_event_id(uuid.uuid4(), at)
    span = CapacityHeld(
        event_id=heartbeat_event_id(worker, at),
        pool=pool,
        starts_at=at,
        ends_at=at + timedelta(seconds=60),
        gpus=Decimal(1),
        source="heartbeat",
    )
    assert capacity.record(engine, [span]).accepted == 1
    assert capacity.record(engine, [span]).duplicates == 1


def test_an_undeclared_pool_is_refused_and_reported(engine: Engine) -> None:
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    hb = Heartbeat(LedgerCapacitySink(engine), ghost, interval_s=BEAT, retry_s=0.01).start()
    hold(3 * BEAT)
    left = hb.close()
    assert left > timedelta(0)
    assert hb.last_error is not None
    assert "Rejected" in hb.last_error
    assert f"no pool {ghost!r}" in hb.last_error
    assert spans(engine, ghost) == []


def test_settings_are_checked() -> None:
    sink = HttpCapacitySink("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="interval_s"):
        Heartbeat(sink, "a", interval_s=0)
    with pytest.raises(ValueError, match="pool"):
        Heartbeat(sink, "Bad Pool")
    with pytest.raises(ValueError, match="gpus"):
        Heartbeat(sink, "a", gpus=Decimal(0))


# -- over HTTP, to the real API --------------------------------------------------------


def test_http_heartbeats_reach_the_api_and_survive_it_being_away(
    api_base: str, admin_key: str, engine: Engine, pool: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    sink = HttpCapacitySink(dead, api_key=admin_key, timeout_s=2)
    t0 = time.monotonic()
    with Heartbeat(sink, pool, interval_s=BEAT, gpus=Decimal(2)) as hb:
        deadline = time.monotonic() + 10  # the first client builds its TLS context: slow
        while hb.failures < 2 and time.monotonic() < deadline:
            hold(BEAT)
        assert hb.failures >= 2
        assert spans(engine, pool) == []
        sink.close()
        sink.base_url = api_base  # the API is back
        hold(6 * BEAT)
    held = time.monotonic() - t0
    rows = spans(engine, pool)
    total = assert_contiguous(rows)
    assert_held(total, held)
    assert {r[2] for r in rows} == {Decimal(2)}
    assert hb.unacknowledged == timedelta(0)


def test_http_refusal_is_reported_not_retried_into_the_ledger(
    api_base: str, engine: Engine, pool: str
) -> None:
    sink = HttpCapacitySink(api_base, api_key="rlk_wrong_key", timeout_s=5)
    hb = Heartbeat(sink, pool, interval_s=BEAT, retry_s=0.01).start()
    hold(3 * BEAT)
    assert hb.close() > timedelta(0)
    assert hb.last_error is not None
    assert "HTTP 401" in hb.last_error
    assert spans(engine, pool) == []


# -- the renderer ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> Built:
    return build("tiny")


@pytest.fixture
def pooled_renderer(
    tiny: Built, ledger: Ledger, engine: Engine, pool: str, tmp_path: Path
) -> Iterator[Renderer]:
    hb = Heartbeat(LedgerCapacitySink(engine), pool, interval_s=BEAT)
    r = Renderer(
        tiny,
        Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
        captions=CaptionClient([]),
        store=LocalStore(tmp_path / "out"),
        heartbeat=hb,
    )
    hb.start()
    yield r
    r.close()


def test_every_event_names_the_pool_and_idle_time_is_paid_too(
    pooled_renderer: Renderer, ledger: Ledger, engine: Engine, pool: str, tenant: str
) -> None:
    t0 = time.monotonic()
    (result,) = pooled_renderer.render(RenderRequest(tenant, "ecommerce", "red chair", steps=2))
    assert result.outcome.value == "delivered", result.error
    hold(0.3)  # idle: still held, still paid
    held = time.monotonic() - t0
    assert pooled_renderer.close() == 0
    stored = read_render(ledger.engine, result.render_id)
    assert stored
    assert {e.attributes.get("pool") for e in stored} == {pool}
    total = assert_contiguous(spans(engine, pool))
    assert total.total_seconds() >= held
    assert pooled_renderer.heartbeat is not None
    assert not pooled_renderer.heartbeat.running


def test_a_heartbeat_for_another_pool_is_refused(
    tiny: Built, ledger: Ledger, tmp_path: Path
) -> None:
    hb = Heartbeat(HttpCapacitySink("http://127.0.0.1:9"), "pool-a")
    with pytest.raises(ValueError, match="pool-a"):
        Renderer(
            tiny,
            Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
            captions=CaptionClient([]),
            pool="pool-b",
            heartbeat=hb,
        )
    assert not hb.running


def test_render_cli_with_a_pool_sends_heartbeats(
    cli: CliRunner, engine: Engine, pool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import get_settings

    monkeypatch.setenv("RENDERLEDGER_RENDER__HEARTBEAT_S", str(BEAT))
    get_settings.cache_clear()
    argv = ["render", "--tenant", "acme", "--prompt", "a cat", "--steps", "2"]
    result = cli.invoke(app, [*argv, "--pool", pool, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"pool {pool}: capacity recorded up to" in result.output
    assert_contiguous(spans(engine, pool))
    ghost = cli.invoke(app, [*argv, "--pool", "no-such-pool"])
    assert ghost.exit_code == 1
    assert "'no-such-pool' is not declared" in ghost.output

"""Capacity paid lands on tenants exactly once: idle shared by busy time, to the nano."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from ingest.sample import unet_event
from ledger import database
from ledger.actual_costs import CapacityHeld, OverheadIncurred
from ledger.capacity import load_pools, record
from ledger.pools import PoolDefinition
from ledger.store import Ledger
from reports.allocation_job import run_allocation
from tests.conftest import ledger_with_prices

HOUR = datetime(2026, 10, 15, 12, tzinfo=UTC)


@pytest.fixture
def books(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


def h100_pool(name: str = "h100-a", idle: str = "share", per_hour: str = "3.96") -> PoolDefinition:
    return PoolDefinition.model_validate(
        {
            "name": name,
            "gpu_sku": "gpu.h100.second",
            "gpus": 2,
            "currency": "USD",
            "effective_from": "2026-01-01T00:00:00Z",
            "payment": {"model": "on_demand", "per_gpu_hour": per_hour},
            "idle": idle,
        }
    )


def _render(tenant: str, seconds: str, pool: str | None = "h100-a", **kw: Any) -> list[Any]:
    render = uuid.uuid4()
    attrs = {"model": "sdxl"} | ({"pool": pool} if pool else {})
    at = kw.pop("at", HOUR + timedelta(minutes=5))
    return [
        unet_event(tenant, render, quantity=Decimal(seconds), attributes=attrs, occurred_at=at),
        unet_event(
            tenant,
            render,
            stage="render",
            sku="render.image",
            outcome="delivered",
            attributes=attrs,
            occurred_at=at,
        ),
    ]


def _rows(engine: Engine, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        return raw.execute(sql, args).fetchall()


def test_half_used_pool_doubles_the_cost_per_render(books: Ledger) -> None:
    load_pools(books.engine, [h100_pool()])
    # 2 GPUs held for one hour (7,200 GPU-seconds); renders busy for 3,600 of them.
    record(
        books.engine,
        [
            CapacityHeld(
                event_id=uuid.uuid4(),
                pool="h100-a",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
                gpus=Decimal(2),
            )
        ],
    )
    books.append(_render("acme", "2400") + _render("globex", "1200"))
    result = run_allocation(books.engine)
    assert result.ran
    assert result.hours == 1
    paid = 2 * 396 * 10**7  # $7.92
    ((held, paid_nanos, busy, standard),) = _rows(
        books.engine,
        "SELECT held_seconds, paid_nanos, busy_seconds, standard_nanos FROM pool_hourly",
    )
    assert (held, paid_nanos, busy) == (7200, paid, 3600)
    assert busy / held == Decimal("0.5")
    shares = dict(
        _rows(books.engine, "SELECT tenant_id, sum(amount_nanos) FROM allocations GROUP BY 1")
    )
    assert sum(shares.values()) == paid - standard
    direct = {t: Decimal(s) * 1_100_000 for t, s in (("acme", 2400), ("globex", 1200))}
    for t in direct:  # fully-loaded = direct + share of idle = 2 × direct at 50 %
        assert direct[t] + shares[t] == 2 * direct[t]
    # Nothing new: a second run writes nothing.
    assert run_allocation(books.engine).rows_written == 0


def test_late_capacity_reallocates_by_new_rows(books: Ledger) -> None:
    load_pools(books.engine, [h100_pool()])
    books.append(_render("acme", "1800"))
    run_allocation(books.engine)
    # Usage on a pool with nothing paid yet: the variance is −standard, shared back.
    first = _rows(books.engine, "SELECT tenant_id, amount_nanos FROM allocations")
    assert [(t, int(a)) for t, a in first] == [("acme", -1800 * 1_100_000)]
    record(
        books.engine,
        [
            CapacityHeld(
                event_id=uuid.uuid4(),
                pool="h100-a",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
                gpus=Decimal(1),
            )
        ],
    )
    run_allocation(books.engine)
    rows = _rows(books.engine, "SELECT run_id, amount_nanos FROM allocations ORDER BY alloc_id")
    assert len(rows) == 2
    assert rows[0][0] < rows[1][0]
    assert sum(int(a) for _, a in rows) == 396 * 10**7 - 1800 * 1_100_000


def test_keep_policy_and_overheads(books: Ledger) -> None:
    load_pools(books.engine, [h100_pool(idle="keep")])
    record(
        books.engine,
        [
            CapacityHeld(
                event_id=uuid.uuid4(),
                pool="h100-a",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
                gpus=Decimal(1),
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="platform",
                amount=Decimal("3"),
                currency="USD",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
                category="subscription",
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="tenant:acme",
                amount=Decimal("1"),
                currency="USD",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=2),
                category="training",
            ),
        ],
    )
    books.append(_render("acme", "600") + _render("globex", "600") + _render("globex", "600"))
    run_allocation(books.engine)
    got = {
        (k, t): int(a)
        for k, t, a in _rows(
            books.engine,
            "SELECT kind, tenant_id, sum(amount_nanos) FROM allocations GROUP BY 1, 2",
        )
    }
    assert got[("idle", "")] == 396 * 10**7 - 1800 * 1_100_000  # kept on the platform
    assert got[("overhead", "acme")] == 10**9 + 10**9  # its own $1 (both hours) + 1/3 of $3
    assert got[("overhead", "globex")] == 2 * 10**9  # 2/3 of $3 by renders


def test_a_pool_under_its_floor_is_a_finding_with_its_idle_cost(books: Ledger) -> None:
    from ledger.connections import connection
    from reports.alerts.store import open_alerts
    from reports.alerts.utilisation import judge_pools

    load_pools(books.engine, [h100_pool()])
    record(
        books.engine,
        [
            CapacityHeld(
                event_id=uuid.uuid4(),
                pool="h100-a",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
                gpus=Decimal(2),
            )
        ],
    )
    books.append(_render("acme", "1800"))  # 1,800 of 7,200 GPU-seconds: 25 %
    run_allocation(books.engine)
    after = HOUR + timedelta(hours=1, minutes=5)
    with connection(books.engine, transaction=True) as raw:
        assert judge_pools(raw, 0.5, after) == [("h100-a", "opened")]
        assert judge_pools(raw, 0.5, after) == []  # one alert while it stays open
        (alert,) = [a for a in open_alerts(raw) if a["signal"] == "utilisation"]
    assert alert["use_case"] == "pool:h100-a"
    assert alert["detail"]["value"] == 0.25
    assert alert["detail"]["idle_cost_nanos"] == {"USD": 2 * 396 * 10**7 - 1800 * 1_100_000}
    assert "25.0% busy" in alert["message"]
    books.append(_render("acme", "5400"))  # now fully busy
    run_allocation(books.engine)
    with connection(books.engine, transaction=True) as raw:
        assert judge_pools(raw, 0.5, after) == [("h100-a", "resolved")]
        assert not [a for a in open_alerts(raw) if a["signal"] == "utilisation"]

"""Issue 15's detection on real rows: a small tenant's regression, failures that cost money,
history imported in bulk, and an alert's "since" at the change rather than at its window.

Each test appends events through the ledger, rolls them up and runs ``run_detection`` on a
database of its own, as the API does after every rollup.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ingest.sample import unet_event
from ledger import database
from ledger.connections import connection
from ledger.events import CostEvent
from ledger.store import Ledger
from reports.alerts.detect import Rule
from reports.alerts.service import run_detection
from reports.jobs import run_rollup
from tests.conftest import ledger_with_prices

NOW = datetime(2026, 11, 10, 14, 30, tzinfo=UTC)


def _render(
    tenant: str,
    at: datetime,
    seconds: float,
    precision: str = "int8",
    outcome: str = "delivered",
) -> list[CostEvent]:
    render = uuid.uuid4()
    return [
        unet_event(
            tenant, render, use_case="ecommerce", quantity=Decimal(str(seconds)), occurred_at=at
        ),
        unet_event(
            tenant,
            render,
            use_case="ecommerce",
            stage="render",
            sku="render.image",
            outcome=outcome,
            occurred_at=at,
            attributes={"precision": precision},
        ),
    ]


def _every(
    tenant: str, start: datetime, end: datetime, every: timedelta, seconds: float, **kw: str
) -> list[CostEvent]:
    """A render every ``every`` from ``start`` until ``end``; every third a little slower."""
    out: list[CostEvent] = []
    at, k = start, 0
    while at < end:
        out += _render(tenant, at, seconds + 0.02 * (k % 3), **kw)
        at, k = at + every, k + 1
    return out


def _append(ledger: Ledger, events: list[CostEvent]) -> None:
    for k in range(0, len(events), ledger.max_batch_events):
        ledger.append(events[k : k + ledger.max_batch_events])


@pytest.fixture
def own_ledger(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


CHANGE = NOW - timedelta(hours=20)  # the UNet went from int8 to fp16 then: 44 % slower


def _small_tenant(ledger: Ledger, tenant: str) -> None:
    """48 renders a day (one every 30 minutes) for 22 days at 2.0 s of UNet; from CHANGE,
    2.88 s (+44 %) in fp16. Six hours hold 12 renders: far from the busy path's 100."""
    every = timedelta(minutes=30)
    ledger.append(_every(tenant, NOW - timedelta(days=22), CHANGE, every, 2.0))
    ledger.append(_every(tenant, CHANGE, NOW, every, 2.88, precision="fp16"))


def test_a_small_tenants_unet_rise_opens_an_alert_within_a_day_since_the_change(
    own_ledger: Ledger,
) -> None:
    _small_tenant(own_ledger, "smallco")
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert (result.series, result.low_volume) == (1, 1)
    [opened] = result.opened
    detail = opened.detail
    assert opened.signal == "unit_cost"
    assert detail["window"] == "low_volume"
    assert 0.35 < detail["change"] < 0.5
    assert detail["stages"][0]["stage"] == "unet"
    assert "precision changed int8 → fp16" in detail["message"]
    # "since" is when the change began, not where the judged window starts.
    since = datetime.fromisoformat(detail["since"])
    assert abs(since - CHANGE) <= timedelta(hours=1)
    assert f"since {CHANGE:%Y-%m-%d %H}" in detail["message"]


def test_the_same_small_tenant_without_a_change_opens_nothing(own_ledger: Ledger) -> None:
    every = timedelta(minutes=30)
    own_ledger.append(_every("steady", NOW - timedelta(days=22), NOW, every, 2.0))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert (result.series, result.low_volume, result.opened) == (1, 1, [])


def _outage(ledger: Ledger, tenant: str) -> None:
    """1,000 renders at this hour on each of 15 days with 6 failures among them (0.04 %),
    then 6,000 in the last six hours with 19 (0.31 %): never 5 points, but each failed
    render held its GPU for ten minutes before failing (0.66 USD)."""
    events: list[CostEvent] = []
    for day in range(1, 16):
        start = NOW.replace(minute=0) - timedelta(days=day)
        for k in range(1000):
            failed = day <= 6 and k == 500
            at = start + timedelta(seconds=3.6 * k)
            events += _render(tenant, at, 600.0 if failed else 2.0, outcome=_outcome(failed))
    start = NOW - timedelta(hours=6)
    for k in range(6000):
        failed = k % 316 == 100  # 19 of 6,000
        at = start + timedelta(seconds=3.6 * k)
        events += _render(tenant, at, 600.0 if failed else 2.0, outcome=_outcome(failed))
    _append(ledger, events)


def _outcome(failed: bool) -> str:
    return "failed" if failed else "delivered"


def test_failed_renders_rising_from_004_to_031_percent_open_an_alert_for_the_money(
    own_ledger: Ledger,
) -> None:
    _outage(own_ledger, "bigco")
    run_rollup(own_ledger.engine)
    # A money threshold above what was lost: significant, but not worth waking anyone.
    costly = run_detection(own_ledger.engine, lambda _t, _u: Rule(failed_waste_nanos=50e9), NOW)
    assert (costly.series, costly.opened) == (1, [])
    result = run_detection(own_ledger.engine, now=NOW + timedelta(minutes=1))
    [opened] = result.opened
    detail = opened.detail
    assert opened.signal == "failed_waste"
    assert detail["baseline"] < 0.0006  # the pooled 0.04 %, not a floor of 0.1 %
    assert 0.0025 < detail["value"] < 0.0035
    assert detail["failures"] == 19
    assert detail["waste_nanos"] > 1e9  # the default threshold: 1 USD lost beyond the rate
    assert "failed renders 0.04% → 0.32%" in detail["message"]
    assert "USD lost beyond the usual rate" in detail["message"]
    assert abs(datetime.fromisoformat(detail["since"]) - (NOW - timedelta(hours=6))) <= timedelta(
        hours=1
    )


def _history(tenant: str) -> list[CostEvent]:
    """Fifteen days of renders around this hour of day, and the hours just before now."""
    events = _every(
        tenant, NOW - timedelta(hours=5), NOW - timedelta(hours=1), timedelta(minutes=4), 2.0
    )
    for day in range(1, 16):
        for hour in (-1, 0, 1):
            start = NOW.replace(minute=0) - timedelta(days=day, hours=-hour)
            events += _every(
                tenant, start, start + timedelta(minutes=56), timedelta(minutes=7), 2.0
            )
    return events


def test_a_bulk_import_is_judged_by_the_next_plain_pass(own_ledger: Ledger) -> None:
    """Detection has run before (``alert_hourly`` is not empty, so this is no first run);
    then fifteen days of a tenant's history and its regression arrive at once. The next
    pass, without ``backfill``, rebuilds the hours it lacks and opens the alert, whose
    "since" is the regression's first render."""
    own_ledger.append(_history("early"))
    run_rollup(own_ledger.engine)
    run_detection(own_ledger.engine, now=NOW - timedelta(hours=1))
    with connection(own_ledger.engine) as raw:
        assert raw.execute("SELECT count(*) FROM alert_hourly").fetchone() != (0,)
    change = NOW - timedelta(minutes=50)
    own_ledger.append(_history("imported"))
    own_ledger.append(_every("imported", change, NOW, timedelta(seconds=25), 2.8, precision="fp16"))
    run_rollup(own_ledger.engine)
    result = run_detection(own_ledger.engine, now=NOW)
    assert result.rebuilt_from is not None
    assert result.rebuilt_from <= NOW - timedelta(days=15, hours=1)
    [opened] = [d for d in result.opened if d.detail["message"].startswith("imported/")]
    assert opened.signal == "unit_cost"
    assert abs(datetime.fromisoformat(opened.detail["since"]) - change) <= timedelta(minutes=5)
    # Once the hours agree, a pass rebuilds nothing before its window.
    assert run_detection(own_ledger.engine, now=NOW + timedelta(minutes=1)).rebuilt_from is None

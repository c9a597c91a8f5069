"""The report endpoint against a hand-computed fixture, over real HTTP; isolation; metrics."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.sample import unet_event
from ledger.events import CostEvent
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports import scheduler
from reports.jobs import run_rollup

WHATIF = Path(__file__).parents[1] / "service" / "books" / "whatif" / "dalle3.toml"
DAY = datetime(2026, 10, 5, 9, tzinfo=UTC)


def _e(tenant: str, render: uuid.UUID, stage: str, sku: str, qty: str, **extra: Any) -> CostEvent:
    return unet_event(
        tenant,
        render,
        use_case="ecommerce",
        stage=stage,
        sku=sku,
        quantity=Decimal(qty),
        occurred_at=DAY,
        **extra,
    )


def _fixture(tenant: str) -> list[CostEvent]:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    h100 = "gpu.h100.second"  # 1,100,000 nanos per second
    return [
        _e(tenant, a, "unet", h100, "2"),
        _e(tenant, a, "text_encoder", h100, "0", cache="hit", baseline_quantity=Decimal("0.02")),
        _e(
            tenant,
            a,
            "render",
            "render.image",
            "1",
            outcome="delivered",
            attributes={"latency_ms": 1000},
        ),
        _e(tenant, b, "unet", h100, "4"),
        _e(
            tenant, b, "text_encoder", h100, "0.02", cache="miss", baseline_quantity=Decimal("0.02")
        ),
        _e(
            tenant,
            b,
            "render",
            "render.image",
            "1",
            outcome="delivered",
            attributes={"latency_ms": 3000},
        ),
        _e(tenant, c, "unet", h100, "1"),
        _e(
            tenant,
            c,
            "render",
            "render.image",
            "1",
            outcome="failed",
            attributes={"latency_ms": 500},
        ),
    ]


@pytest.fixture
def reported(ledger: Ledger, tenant: str) -> str:
    ledger.load_prices(load_price_book_file(WHATIF))
    ledger.append(_fixture(tenant))
    other = f"o-{tenant}"
    ledger.append([_e(other, uuid.uuid4(), "unet", "gpu.h100.second", "100")])
    assert run_rollup(ledger.engine).ran
    return tenant


def _report(http: httpx.Client, tenant: str, **params: str) -> httpx.Response:
    query = {"from": "2026-10-01", "to": "2026-11-01", **params}
    return http.get(f"/v1/tenants/{tenant}/report", params=query)


def test_report_matches_the_hand_computed_fixture(http: httpx.Client, reported: str) -> None:
    r = _report(http, reported, group_by="use_case", what_if="openai-dalle3-standard")
    assert r.status_code == 200, r.text
    (row,) = r.json()["rows"]
    assert row["use_case"] == "ecommerce"
    assert (row["renders_delivered"], row["renders_failed"]) == (2, 1)
    assert row["cost"] == {"nanos": 7_722_000, "amount": "0.007722000"}
    assert row["cost_per_delivered_render"]["nanos"] == 3_861_000
    assert row["waste"]["nanos"] == 1_100_000
    assert row["cache_savings"]["nanos"] == 22_000
    assert row["cache_hit_rate"] == 0.5
    assert row["latency_p50_ms"] == 1000
    assert row["latency_p95_ms"] == pytest.approx(2800)
    assert row["stage_share"]["unet"] == round(7_700_000 / 7_722_000, 6)
    assert row["what_if"]["cost"]["nanos"] == 80_000_000
    assert row["what_if"]["difference_per_delivered_render"]["nanos"] == 36_139_000


def test_report_by_stage_and_as_csv(http: httpx.Client, reported: str) -> None:
    rows = _report(http, reported, group_by="use_case,stage").json()["rows"]
    unet = next(r for r in rows if r["stage"] == "unet")
    assert unet["cost"]["nanos"] == 7_700_000
    assert unet["waste"]["nanos"] == 1_100_000
    assert unet["share_of_cost"] == round(7_700_000 / 7_722_000, 6)
    text = _report(http, reported, group_by="day", format="csv")
    assert text.headers["content-type"].startswith("text/csv")
    (line,) = list(csv.DictReader(io.StringIO(text.text)))
    assert (line["day"], line["cost_nanos"], line["renders_delivered"]) == (
        "2026-10-05",
        "7722000",
        "2",
    )


def test_one_tenants_report_never_includes_anothers_events(
    http: httpx.Client, reported: str
) -> None:
    mine = _report(http, reported, group_by="").json()["rows"]
    theirs = _report(http, f"o-{reported}", group_by="").json()["rows"]
    assert mine[0]["cost"]["nanos"] == 7_722_000
    assert theirs[0]["cost"]["nanos"] == 110_000_000


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"group_by": "colour"}, 422),
        ({"group_by": "day,day"}, 422),
        ({"from": "2026-12-01"}, 422),
        ({"what_if": "nope"}, 404),
        ({"format": "xml"}, 422),
    ],
)
def test_bad_report_requests(
    http: httpx.Client, reported: str, params: dict[str, str], status: int
) -> None:
    assert _report(http, reported, **params).status_code == status
    assert _report(http, "no-such-tenant").status_code == 404


def test_metrics_show_lag_ingest_and_cost_per_render(
    http: httpx.Client, ledger: Ledger, tenant: str
) -> None:
    now = datetime.now(UTC)
    render = uuid.uuid4()
    today = [
        _e(tenant, render, "unet", "gpu.h100.second", "2").model_copy(update={"occurred_at": now}),
        _e(tenant, render, "render", "render.image", "1", outcome="delivered").model_copy(
            update={"occurred_at": now}
        ),
    ]
    events = [e.model_dump(mode="json") for e in today]
    assert http.post("/v1/events", json=events).status_code == 200
    run_rollup(ledger.engine)
    body = http.get("/metrics").text
    assert "renderledger_rollup_lag_events 0.0" in body
    assert re.search(r"# TYPE renderledger_events(_total)? counter", body)
    assert "renderledger_events_total " in body
    assert 'renderledger_ingest_request_seconds_bucket{le="+Inf",status="200"}' in body
    assert "renderledger_ingested_events_total" in body
    assert (
        f'renderledger_cost_per_render_nanos{{currency="USD",tenant="{tenant}",'
        'use_case="ecommerce"} 2.2e+06' in body
    )
    stages = {
        m[1]: float(m[2])
        for m in re.finditer(
            rf'renderledger_stage_cost_per_render_nanos{{currency="USD",stage="(\w+)",'
            rf'tenant="{tenant}",use_case="ecommerce"}} (\S+)',
            body,
        )
    }
    assert stages["unet"] > 0
    assert stages["vae_decode"] == 0.0
    assert sum(stages.values()) == 2.2e06  # the stages add up to the cost per render


def test_the_scheduler_rolls_up_by_itself(ledger: Ledger, tenant: str) -> None:
    from ledger.connections import connection
    from reports.jobs import checkpoint

    ledger.append(_fixture(tenant))
    sched = scheduler.start(ledger.engine, interval_s=1)
    try:
        for _ in range(100):  # bounded: at most ~10 s
            with connection(ledger.engine) as raw:
                head = raw.execute("SELECT max(last_seq) FROM blocks").fetchone()
                if head and checkpoint(raw) >= head[0]:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the scheduled rollup did not catch up")
    finally:
        sched.shutdown(wait=True)

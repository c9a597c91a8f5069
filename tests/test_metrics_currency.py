"""/metrics in a chosen currency, and pool utilisation, as a Prometheus scrape sees them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ingest.sample import unet_event
from ledger import database
from ledger.actual_costs import CapacityHeld
from ledger.capacity import load_pools, record
from ledger.fx import load_rates, parse_rates
from reports.allocation_job import run_allocation
from reports.jobs import run_rollup
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.conftest import ledger_with_prices, serving
from tests.test_allocation import h100_pool


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_cost_per_render_converted_and_pool_utilisation(fresh_database: str) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    now = datetime.now(UTC)
    today = now.date()
    rates = "date,currency,rate\n" + "".join(
        f"{today - timedelta(days=d)},USD,1.25\n" for d in range(3)
    )
    load_rates(engine, parse_rates(rates), "test rates")  # 1 EUR = 1.25 USD
    events = []
    for seconds in ("10", "30"):
        render = uuid.uuid4()
        at = now - timedelta(minutes=5)
        events += [
            unet_event(
                "acme",
                render,
                quantity=Decimal(seconds),
                occurred_at=at,  # on no pool: the pool's hour below is its own
            ),
            unet_event(
                "acme",
                render,
                stage="render",
                sku="render.image",
                outcome="delivered",
                occurred_at=at,
            ),
        ]
    ledger.append(events)
    run_rollup(engine)
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    load_pools(engine, [h100_pool()])
    record(
        engine,
        [
            CapacityHeld(
                event_id=uuid.uuid4(),
                pool="h100-a",
                starts_at=hour,
                ends_at=hour + timedelta(hours=1),
                gpus=Decimal(2),
            )
        ],
    )
    ledger.append(
        [
            unet_event(
                "acme",
                uuid.uuid4(),
                quantity=Decimal(1800),
                occurred_at=hour + timedelta(minutes=1),
                attributes={"pool": "h100-a"},
            )
        ]
    )
    run_allocation(engine)
    key = create_key(engine, None, ["admin"], "t")
    settings = Settings(database_url=fresh_database)
    settings.reports.metrics_currency = "EUR"
    with serving(create_app(settings, ledger, schedule=False)) as base:
        text = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {key}"}).text
    engine.dispose()
    usd = _samples(text, "renderledger_cost_per_render_nanos")
    key_usd = (("currency", "USD"), ("tenant", "acme"), ("use_case", "social"))
    mean_usd = usd[key_usd]
    eur = _samples(text, "renderledger_cost_per_render_converted_nanos")
    converted = eur[(("currency", "EUR"), ("tenant", "acme"), ("use_case", "social"))]
    assert abs(converted - mean_usd / 1.25) < 1e-3
    assert _samples(text, "renderledger_pool_utilisation") == {(("pool", "h100-a"),): 0.25}

"""Renders for billing tests: a UNet event and an outcome event, at a chosen time."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from ingest.sample import unet_event
from ledger.events import CostEvent
from ledger.store import Ledger


def render_events(
    tenant: str,
    at: datetime,
    *,
    use_case: str = "ecommerce",
    seconds: str = "2.5",
    outcome: str = "delivered",
) -> list[CostEvent]:
    render = uuid.uuid4()
    return [
        unet_event(tenant, render, use_case=use_case, quantity=Decimal(seconds), occurred_at=at),
        unet_event(
            tenant,
            render,
            use_case=use_case,
            stage="render",
            sku="render.image",
            outcome=outcome,
            occurred_at=at,
        ),
    ]


def add_renders(ledger: Ledger, tenant: str, at: datetime, n: int = 1, **kw: str) -> None:
    events = [e for _ in range(n) for e in render_events(tenant, at, **kw)]
    ledger.append(events)


def store_fully_loaded_plans(ledger: Ledger, tenant: str, months: list[date], markup: str) -> None:
    """Cost-plus plans that bill fully-loaded cost, one per month."""
    from ledger.connections import connection
    from reports.billing.plans import Plan, Pricing, store_plan

    with connection(ledger.engine, transaction=True) as raw:
        for month in months:
            plan = Plan(
                tenant=tenant,
                effective_from=month,
                default=Pricing(markup=Decimal(markup)),
                cost_basis="fully_loaded",
            )
            store_plan(raw, plan)

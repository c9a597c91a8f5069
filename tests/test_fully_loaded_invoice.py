"""A cost-plus plan can bill fully-loaded cost: the allocated share is a line of its own."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.actual_costs import CapacityHeld
from ledger.capacity import load_pools, record
from ledger.connections import connection
from ledger.store import Ledger
from reports.allocation_job import run_allocation
from reports.billing.lifecycle import finalize, invoice
from reports.billing.plans import Plan, Pricing, store_plan
from tests.billing_helpers import store_fully_loaded_plans
from tests.test_allocation import _render, books, h100_pool

__all__ = ["books"]  # the fixture, used by name below
SEP, OCT = date(2026, 9, 1), date(2026, 10, 1)
AT = datetime(2026, 9, 15, 12, tzinfo=UTC)


def _hold(ledger: Ledger, start: datetime, gpus: int = 2) -> None:
    span = CapacityHeld(
        event_id=uuid.uuid4(),
        pool="h100-a",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        gpus=Decimal(gpus),
    )
    record(ledger.engine, [span])


def test_fully_loaded_plan_bills_the_allocated_share(books: Ledger) -> None:
    load_pools(books.engine, [h100_pool()])
    store_fully_loaded_plans(books, "acme", [SEP, OCT], "0.2")
    _hold(books, AT)
    books.append(_render("acme", "3600", at=AT + timedelta(minutes=5)))  # 50 % of 2 GPUs
    run_allocation(books.engine)
    with connection(books.engine) as raw:
        sep, _ = finalize(raw, "acme", SEP)
    (share,) = [ln for ln in sep.lines if ln.kind == "allocation"]
    idle = 2 * 396 * 10**7 - 3600 * 1_100_000  # paid − standard, all of it acme's
    assert sep.cost_basis.allocated_nanos == idle
    assert Decimal(share.quantity) == Decimal(idle).scaleb(-9)
    assert Decimal(share.amount) == (Decimal(idle).scaleb(-9) * Decimal("1.2")).quantize(
        Decimal("0.01")
    )
    (usage,) = [ln for ln in sep.lines if ln.kind == "usage"]
    assert Decimal(sep.subtotal) == Decimal(usage.amount) + Decimal(share.amount)
    assert sep.positions.allocations_through is not None

    # Capacity recorded late for September re-allocates it: October bills the difference.
    _hold(books, AT + timedelta(hours=1), gpus=1)
    books.append(_render("acme", "1800", at=AT + timedelta(hours=1, minutes=5)))
    run_allocation(books.engine)
    with connection(books.engine) as raw:
        oct_doc = invoice(raw, "acme", OCT)
    late = [
        ln for ln in oct_doc.lines if ln.kind == "adjustment" and ln.unit.startswith("USD of a")
    ]
    assert [ln.period for ln in late] == ["2026-09"]
    second_idle = 396 * 10**7 - 1800 * 1_100_000
    assert Decimal(late[0].quantity) == Decimal(second_idle).scaleb(-9)


def test_a_direct_plan_stores_and_seals_as_before() -> None:
    plan = Plan(tenant="acme", effective_from=SEP)
    assert "cost_basis" not in plan.model_dump()
    loaded = Plan(tenant="acme", effective_from=SEP, cost_basis="fully_loaded")
    assert loaded.digest() != plan.digest()


def _eur_book(ledger: Ledger, start: str) -> None:
    from ledger.prices import parse_price_book
    from service.cli.common import DEFAULT_PRICES

    text = DEFAULT_PRICES.read_text().replace('currency = "USD"', 'currency = "EUR"')
    text = text.replace('name = "public-list-2026"', 'name = "eur-list"')
    text = text.replace("effective_from = 2025-01-01T00:00:00Z", f"effective_from = {start}")
    ledger.load_prices(parse_price_book(text))


def test_metered_cost_is_a_line_per_currency_never_summed(books: Ledger) -> None:
    from ledger.fx import load_rates, parse_rates
    from reports.billing.invoices import InvoiceError

    _eur_book(books, "2026-09-15T00:00:00Z")
    books.append(_render("acme", "1000", pool=None, at=AT - timedelta(days=5)))  # USD
    books.append(_render("acme", "1000", pool=None, at=AT + timedelta(days=5)))  # EUR
    eur_plan = Plan(
        tenant="acme",
        effective_from=SEP,
        currency="EUR",
        usd_rate=Decimal("0.9"),
        default=Pricing(markup=Decimal("0.1")),
    )
    with connection(books.engine, transaction=True) as raw:
        store_plan(raw, eur_plan)
        doc = invoice(raw, "acme", SEP)
    usage = {ln.unit: ln for ln in doc.lines if ln.kind == "usage"}
    assert set(usage) == {"USD of metered cost", "EUR of metered cost"}
    assert Decimal(usage["USD of metered cost"].unit_price) == Decimal("0.99")  # 1.1 × 0.9
    assert Decimal(usage["EUR of metered cost"].unit_price) == Decimal("1.1")
    assert "in EUR" in usage["EUR of metered cost"].description
    assert doc.cost_basis.other_currencies == {"EUR": 1000 * 1_100_000 + 0}
    assert doc.cost_basis.metered_nanos == 1000 * 1_100_000

    usd_plan = Plan(tenant="globex", effective_from=SEP, default=Pricing(markup=Decimal(0)))
    books.append(_render("globex", "10", pool=None, at=AT + timedelta(days=5)))  # EUR
    with connection(books.engine, transaction=True) as raw:
        store_plan(raw, usd_plan)
    with connection(books.engine) as raw, pytest.raises(InvoiceError, match="in EUR"):
        invoice(raw, "globex", SEP)
    load_rates(books.engine, parse_rates("date,currency,rate\n2026-09-30,USD,1.25\n"), "ecb")
    with connection(books.engine) as raw:
        converted = invoice(raw, "globex", SEP)
    (line,) = [ln for ln in converted.lines if ln.kind == "usage"]
    assert line.unit == "EUR of metered cost"
    assert Decimal(line.unit_price) == Decimal("1.25")  # 1 EUR = 1.25 USD on the last day

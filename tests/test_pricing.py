"""Graduated tiers and cent rounding, against a brute-force image-by-image count."""

from __future__ import annotations

import itertools
from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from reports.billing.plans import Plan, Pricing, Tier
from reports.billing.pricing import Usage, graduated, price_usage, to_minor

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.5"), places=4)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 2_000), min_size=0, max_size=4)))
    tiers = [Tier(up_to=b, unit_price=draw(prices)) for b in bounds]
    return (*tiers, Tier(unit_price=draw(prices)))


@st.composite
def volumes(draw: st.DrawFn) -> tuple[tuple[Tier, ...], int]:
    tiers = draw(schedules())
    edges = [t.up_to for t in tiers if t.up_to is not None]
    near = [e + d for e in edges for d in (-1, 0, 1)]
    at_edge = bool(near) and draw(st.booleans())
    images = draw(st.sampled_from(near)) if at_edge else draw(st.integers(0, 3_000))
    return tiers, max(images, 0)


def brute_force(images: int, tiers: tuple[Tier, ...]) -> Decimal:
    total = Decimal(0)
    for n in range(1, images + 1):
        tier = next(t for t in tiers if t.up_to is None or n <= t.up_to)
        total += tier.unit_price
    return total


@given(volumes())
def test_graduated_tiers_price_each_image_once_at_its_tier(
    case: tuple[tuple[Tier, ...], int],
) -> None:
    tiers, images = case
    parts = graduated(images, tiers)
    assert sum(last - first + 1 for _, first, last, _ in parts) == images
    for (_, _first, last, tier), nxt in itertools.pairwise(parts):
        assert last + 1 == nxt[1]
        assert tier.up_to is None or last <= tier.up_to
    plan = Plan(tenant="t", effective_from=date(2026, 10, 1), default=Pricing(tiers=tiers))
    lines = price_usage(plan, [Usage("u", "delivered", images, images, 0, 1, 1)])
    assert sum(line.exact for line in lines) == brute_force(images, tiers)
    for line in lines:
        assert abs(Decimal(line.amount_minor) / 100 - line.exact) <= Decimal("0.005")


@given(st.integers(0, 10**15), st.decimals(min_value=-1, max_value=3, places=4))
def test_cost_plus_is_exact_before_its_one_rounding(nanos: int, markup: Decimal) -> None:
    plan = Plan(tenant="t", effective_from=date(2026, 10, 1), default=Pricing(markup=markup))
    lines = price_usage(plan, [Usage("u", "", 1, 1, nanos, 1, 1)])
    exact = Decimal(nanos).scaleb(-9) * (1 + markup)
    if lines:
        assert lines[0].exact == exact
        assert lines[0].amount_minor == to_minor(exact, 2)
    else:
        assert nanos == 0


def test_failed_renders_are_neither_images_nor_cost_by_default() -> None:
    plan = Plan(
        tenant="t",
        effective_from=date(2026, 10, 1),
        default=Pricing(tiers=(Tier(unit_price=Decimal("0.01")),)),
    )
    usage = [Usage("u", "delivered", 7, 14, 10, 1, 2), Usage("u", "failed", 3, 6, 10, 3, 4)]
    assert [line.quantity for line in price_usage(plan, usage)] == [7]
    billed = Plan.model_validate(plan.model_dump() | {"failed_renders": "billed"})
    assert [line.quantity for line in price_usage(billed, usage)] == [10]

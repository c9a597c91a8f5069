"""Pricing a month's usage under a plan: pure functions, no database.

Every line is computed exactly (``Decimal`` under ``ledger.money.EXACT``) and rounded to
the currency's minor unit once, half-even; the rounding is kept on the line so the sum of
the lines can always be traced back to the exact figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.money import EXACT
from reports.billing.document import InvoiceLine, LineKind
from reports.billing.plans import FailedRenders, Plan, Tier


@dataclass(frozen=True, slots=True)
class Usage:
    """The events of one use case whose renders ended one way (``""``: no outcome event in
    the period, e.g. a CDN log line for an image delivered the month before)."""

    use_case: str
    outcome: str
    renders: int
    events: int
    cost_nanos: int
    first_seq: int
    last_seq: int
    currency: str = "USD"


class UnbillableCurrency(ValueError):
    """Metered cost in a currency the plan has no rate from; nothing can be billed."""


Rates = dict[str, Decimal]
"""Plan currency per unit of each metered currency besides the plan's own and USD."""


def metered_rate(plan: Plan, currency: str, rates: Rates | None = None) -> Decimal:
    """What one unit of metered ``currency`` is in the plan's: 1 in its own, ``usd_rate``
    from USD (the plan's fixed rate, as agreed), else the FX rate the caller looked up."""
    if currency == plan.currency:
        return Decimal(1)
    if currency == "USD":
        return plan.usd_rate
    if rates and currency in rates:
        return rates[currency]
    raise UnbillableCurrency(
        f"metered cost in {currency}: cost-plus in {plan.currency} needs an FX rate for it "
        "(`renderledger fx load`)"
    )


def _unit(currency: str, what: str) -> str:
    return f"{currency} of {what}"


@dataclass(frozen=True, slots=True)
class Line:
    kind: LineKind
    description: str
    use_case: str
    tier: int | None
    quantity: Decimal
    unit: str
    unit_price: Decimal
    exact: Decimal
    amount_minor: int
    period: str | None = None
    images: int | None = None  # a cost-plus line's billed images, for the customer's copy

    @property
    def key(self) -> tuple[str, str, int | None, str]:
        return (self.kind, self.use_case, self.tier, self.unit)

    def as_invoice_line(self, digits: int) -> InvoiceLine:
        """The line as printed: the same fields, exact decimals as plain text, and the
        amount in the currency's ``digits`` (``12.50``, trailing zeros kept)."""
        amount = Decimal(self.amount_minor).scaleb(-digits)
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["rounding"] = EXACT.subtract(amount, self.exact)
        plain = {k: _plain(v) if isinstance(v, Decimal) else v for k, v in values.items()}
        return InvoiceLine.model_validate(plain | {"amount": format(amount, "f")})


def _plain(value: Decimal) -> str:
    text = format(value.normalize(EXACT), "f")
    return "0" if text in ("-0", "") else text


def to_minor(exact: Decimal, digits: int) -> int:
    return int(exact.scaleb(digits, EXACT).to_integral_value(rounding=ROUND_HALF_EVEN))


def graduated(images: int, tiers: Iterable[Tier]) -> list[tuple[int, int, int, Tier]]:
    """(tier index, first image, last image, tier) for each tier the images reach."""
    out = []
    low = 0
    for index, tier in enumerate(tiers):
        high = images if tier.up_to is None else min(images, tier.up_to)
        if high > low:
            out.append((index, low + 1, high, tier))
        if tier.up_to is None or images <= tier.up_to:
            break
        low = tier.up_to
    return out


def billed_outcomes(plan: Plan) -> frozenset[str]:
    if plan.failed_renders == FailedRenders.BILLED:
        return frozenset({"delivered", "failed", "cancelled", ""})
    return frozenset({"delivered", ""})


def price_usage(
    plan: Plan,
    usage: Iterable[Usage],
    allocated: dict[tuple[str, str], int] | None = None,
    rates: Rates | None = None,
) -> list[Line]:
    """The usage lines; with ``allocated`` (nanos by use case and currency, a fully-loaded
    plan), each cost-plus use case also bills its allocated share of idle capacity and
    overheads. Metered cost is a line per currency, each at its own rate to the plan's."""
    billed = billed_outcomes(plan)
    cost: dict[tuple[str, str], int] = defaultdict(int)
    images: dict[str, int] = defaultdict(int)
    for u in usage:
        if u.outcome in billed:
            cost[(u.use_case, u.currency)] += u.cost_nanos
            if u.outcome:
                images[u.use_case] += u.renders
    digits = plan.minor_digits
    lines: list[Line] = []
    for use_case in sorted({u for u, _ in cost} | set(images)):
        pricing = plan.pricing(use_case)
        if pricing.markup is not None:
            for currency in sorted(c for u, c in cost if u == use_case):
                nanos = cost[(use_case, currency)]
                if nanos == 0:
                    continue
                metered = Decimal(nanos).scaleb(-9, EXACT)
                rate = metered_rate(plan, currency, rates)
                unit_price = EXACT.multiply(1 + pricing.markup, rate)
                exact = EXACT.multiply(metered, unit_price)
                named = "" if currency == "USD" else f" in {currency}"
                lines.append(
                    Line(
                        "usage",
                        f"{use_case}: metered cost{named} {_pct(pricing.markup)}",
                        use_case,
                        None,
                        metered,
                        _unit(currency, "metered cost"),
                        unit_price,
                        exact,
                        to_minor(exact, digits),
                        images=images[use_case],
                    )
                )
            continue
        assert pricing.tiers is not None
        for index, first, last, tier in graduated(images[use_case], pricing.tiers):
            quantity = Decimal(last - first + 1)
            exact = EXACT.multiply(quantity, tier.unit_price)
            lines.append(
                Line(
                    "usage",
                    f"{use_case}: images {first:,}–{last:,}",
                    use_case,
                    index,
                    quantity,
                    "image",
                    tier.unit_price,
                    exact,
                    to_minor(exact, digits),
                )
            )
    return lines + _allocation_lines(plan, allocated or {}, rates)


def _allocation_lines(
    plan: Plan, allocated: dict[tuple[str, str], int], rates: Rates | None
) -> list[Line]:
    """Per-image pricing does not depend on cost, so only cost-plus use cases bill a share;
    one the tenant bears with no use case to spread it over goes by the plan's default."""
    lines = []
    for (use_case, currency), nanos in sorted(allocated.items()):
        pricing = plan.pricing(use_case)
        if pricing.markup is None or nanos == 0:
            continue
        share = Decimal(nanos).scaleb(-9, EXACT)
        unit_price = EXACT.multiply(1 + pricing.markup, metered_rate(plan, currency, rates))
        exact = EXACT.multiply(share, unit_price)
        lines.append(
            Line(
                "allocation",
                f"{use_case or 'all use cases'}: share of idle GPU capacity and overheads "
                f"{_pct(pricing.markup)}",
                use_case,
                None,
                share,
                _unit(currency, "allocated cost"),
                unit_price,
                exact,
                to_minor(exact, plan.minor_digits),
            )
        )
    return lines


def _pct(markup: Decimal) -> str:
    if markup == 0:
        return "at cost"
    sign = "+" if markup > 0 else "−"
    return f"{sign} {_plain(abs(markup) * 100)}%"


def commitment_topup(plan: Plan, subtotal_minor: int) -> Line | None:
    minimum = to_minor(plan.minimum_commitment, plan.minor_digits)
    if subtotal_minor >= minimum:
        return None
    short = minimum - subtotal_minor
    exact = Decimal(short).scaleb(-plan.minor_digits)
    return Line(
        "commitment",
        f"minimum monthly commitment of {_plain(plan.minimum_commitment)} {plan.currency}",
        "",
        None,
        Decimal(1),
        "month",
        exact,
        exact,
        short,
    )


def adjustment_lines(period: str, now: list[Line], before: list[Line]) -> list[Line]:
    """What a finalized month's charge grew (or shrank) by, line by line."""
    old = {line.key: line for line in before}
    new = {line.key: line for line in now}
    out = []
    for key in sorted(
        set(old) | set(new), key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2], k[3])
    ):
        a, b = new.get(key), old.get(key)
        amount = (a.amount_minor if a else 0) - (b.amount_minor if b else 0)
        if amount == 0:
            continue
        ref = a or b
        assert ref is not None
        quantity = (a.quantity if a else Decimal(0)) - (b.quantity if b else Decimal(0))
        exact = (a.exact if a else Decimal(0)) - (b.exact if b else Decimal(0))
        images = None
        if ref.images is not None:
            images = (a.images or 0 if a else 0) - (b.images or 0 if b else 0)
        out.append(
            Line(
                "adjustment",
                f"prior period {period}, late events — {ref.description}",
                ref.use_case,
                ref.tier,
                quantity,
                ref.unit,
                ref.unit_price,
                exact,
                amount,
                period,
                images,
            )
        )
    return out

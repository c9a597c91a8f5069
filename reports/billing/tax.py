"""Tax on an invoice: on the net amount (subtotal, commitment top-up and adjustments), each
rate applied to that one base and rounded once, half-even, to the minor unit.

On the net rather than per line: one rounding per rate, so the tax printed is exactly the
rate of the net printed and a reader can check it with a calculator; per-line rounding would
drift from it by up to half a minor unit per line. Prepaid credits are a means of payment,
applied after tax (as billing tools apply wallets), so they never lower the tax.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal

from ledger.money import EXACT
from reports.billing.document import TaxLine, money
from reports.billing.parties import TaxRate

REVERSE_CHARGE = (
    "Reverse charge: VAT to be accounted for by the recipient "
    "(Article 196, Council Directive 2006/112/EC)."
)


def share(minor: int, numerator: int | Decimal, denominator: int | Decimal) -> int:
    """``minor × numerator / denominator``, exact, rounded once half-even."""
    exact = EXACT.divide(EXACT.multiply(Decimal(minor), Decimal(numerator)), Decimal(denominator))
    return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def tax_lines(net_minor: int, rates: Iterable[TaxRate], digits: int) -> list[TaxLine]:
    out = []
    for rate in rates:
        amount = share(net_minor, rate.percent, 100)
        out.append(
            TaxLine(
                label=rate.label,
                percent=format(rate.percent.normalize(), "f"),
                base=money(net_minor, digits),
                amount=money(amount, digits),
                amount_minor=amount,
            )
        )
    return out

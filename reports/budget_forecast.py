"""The end-of-month spend forecast: what is spent, plus each day left at its weekday's rate.

Spend has a daily rhythm (the detector models it by hour of day) and a weekly one. Over a
month the hours of a whole day add up to the day, so what is left to model for the days
ahead is the weekly rhythm: each remaining day is forecast at the mean spend of the same
weekday over the last four weeks, today's remaining part at its share of the day. A past
day counts for at most three typical days (the median day with any spend): a one-off
spike (a batch job, an incident) is not a rhythm, and left whole it raised its weekday's
rate for four weeks (in the bench, the p90 error went from 12.1 % to 10.4 % with the cap).
A tenant with less history falls back to its mean day, then to its month-to-date hourly
rate.
Pure: the bench runs it over synthetic histories, the service over the rollups.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal

from ledger.money import EXACT

WEEKS = 4
SPIKE = 3  # a past day counts for at most this many median days


def _mean(values: list[Decimal]) -> Decimal:
    return EXACT.divide(sum(values, Decimal(0)), Decimal(len(values)))


def forecast(daily: Mapping[date, Decimal], now: datetime, month_end: date) -> Decimal:
    """The month's total spend, forecast at ``now``.

    ``daily`` is spend per UTC day (absent days spent nothing) over at least the month so
    far, today's partial day included, and up to ``WEEKS`` weeks before; ``month_end`` is
    the first day of the next month.
    """
    today = now.date()
    month_start = today.replace(day=1)
    spent = sum((v for d, v in daily.items() if month_start <= d <= today), Decimal(0))
    past = [d for d in daily if d < today]
    first = min(past, default=today)
    window = [today - timedelta(days=k) for k in range(1, 7 * WEEKS + 1)]
    complete = [d for d in window if d >= first]
    elapsed = Decimal((now - datetime.combine(today, datetime.min.time(), now.tzinfo)).seconds)
    left_today = 1 - elapsed / 86400
    if not complete:  # nothing before today: today's hourly rate, for the rest of the month
        hours = elapsed / 3600
        if hours == 0:
            return spent
        per_hour = EXACT.divide(daily.get(today, Decimal(0)), hours)
        remaining = Decimal((month_end - today).days) * 24 - hours
        return spent + per_hour * remaining
    seen = {d: daily.get(d, Decimal(0)) for d in complete}
    spending = [v for v in seen.values() if v > 0]  # a tenant idle most days is not spiking
    cap = SPIKE * statistics.median(spending) if spending else Decimal(0)
    seen = {d: min(v, cap) for d, v in seen.items()}
    by_weekday: dict[int, list[Decimal]] = {}
    for d, v in seen.items():
        by_weekday.setdefault(d.weekday(), []).append(v)
    mean_day = _mean(list(seen.values()))

    def rate(d: date) -> Decimal:
        same = by_weekday.get(d.weekday())
        return _mean(same) if same else mean_day

    ahead = sum(
        (rate(today + timedelta(days=k)) for k in range(1, (month_end - today).days)),
        Decimal(0),
    )
    return spent + rate(today) * left_today + ahead

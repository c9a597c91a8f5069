"""The budget forecast's error at day 10 of the month on seasonal histories (issue 15).

Each history is one tenant's daily spend over the month before and the month itself: a
base rate (log-uniform, 1 to 10,000 a day), a weekly rhythm (weekends at 30–90 % of a
weekday, drawn per tenant), a slow trend (−10 % to +10 % over the two months), and daily
noise (log-normal, σ 0.10–0.35 per tenant); one in five tenants also has a one-off spike
day (×3–8) somewhere in the two months. The forecast (``reports.budget_forecast``, the same
function the service calls) is taken at 00:00 UTC on the 10th, and at noon of the 10th,
from the days before, and compared with the month's true total. The weekday forecast is
compared with the plain run rate (month-to-date per day × days) on the same histories.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from bench.report import write_section
from reports.budget_forecast import forecast

MONTHS = [date(2026, m, 1) for m in range(2, 13)]


def history(rng: random.Random, month: date) -> dict[date, Decimal]:
    base = 10 ** rng.uniform(0, 4)
    weekend = rng.uniform(0.3, 0.9)
    trend = rng.uniform(-0.1, 0.1)
    sigma = rng.uniform(0.10, 0.35)
    start = (month - timedelta(days=1)).replace(day=1)
    end = (month + timedelta(days=32)).replace(day=1)
    days = (end - start).days
    spike = rng.randrange(days) if rng.random() < 0.2 else -1
    out = {}
    for k in range(days):
        d = start + timedelta(days=k)
        rate = base * (1 + trend * k / days) * (weekend if d.weekday() >= 5 else 1)
        rate *= math.exp(rng.gauss(0, sigma) - sigma * sigma / 2)
        if k == spike:
            rate *= rng.uniform(3, 8)
        out[d] = Decimal(f"{rate:.6f}")
    return out


def errors(n: int, seed: int, hour: int) -> tuple[list[float], list[float]]:
    """(weekday forecast, plain run rate) absolute errors, as fractions of the truth."""
    rng = random.Random(seed)
    ours, plain = [], []
    for i in range(n):
        month = MONTHS[i % len(MONTHS)]
        daily = history(rng, month)
        end = (month + timedelta(days=32)).replace(day=1)
        truth = sum((v for d, v in daily.items() if d >= month), Decimal(0))
        now = datetime(month.year, month.month, 10, hour, tzinfo=UTC)
        today = now.date()
        seen = {d: v for d, v in daily.items() if d < today}
        if hour:
            seen[today] = daily[today] * Decimal(hour) / 24
        guess = forecast(seen, now, end)
        ours.append(abs(float(guess / truth) - 1))
        so_far = sum((v for d, v in seen.items() if d >= month), Decimal(0))
        elapsed = Decimal(9 * 24 + hour) / 24
        rate = so_far / elapsed * Decimal((end - month).days)
        plain.append(abs(float(rate / truth) - 1))
    return ours, plain


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--histories", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    for hour in (0, 12):
        ours, plain = errors(args.histories, args.seed, hour)
        rows.append(
            f"| 10th, {hour:02d}:00 UTC | {statistics.median(ours):.1%} | {pct(ours, 0.9):.1%} "
            f"| {statistics.median(plain):.1%} | {pct(plain, 0.9):.1%} |"
        )
    table = "\n".join(
        [
            "| forecast taken | weekday forecast: median error | p90 | "
            "run rate: median error | p90 |",
            "| --- | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Budget forecast (issue 15)\n\n"
            f"{args.histories:,} synthetic tenant histories (`bench/budgets.py`): a base rate "
            "of 1 to 10,000 a day, weekends at 30–90 % of a weekday, a trend of ±10 % over two "
            "months, daily log-normal noise σ 0.10–0.35, and a one-off spike day (×3–8) in one "
            "history in five, over each month of 2026 from February. Error = |forecast ÷ the "
            "month's true total − 1| for the end-of-month forecast taken on the 10th; target "
            "≤ 10 %. The run rate (month-to-date per day × days in the month) is the "
            "baseline it is measured against, on the same histories.\n\n" + table
        )
        command = f"python -m bench.budgets --histories {args.histories} --write BENCHMARKS.md"
        write_section(args.write, "budgets", body, command)


if __name__ == "__main__":
    main()

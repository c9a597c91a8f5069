"""A small fixed-seed run of the evaluation harness, held to the issue's targets."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl

from ledger.tables import STAGE_COLUMNS
from reports.alerts.detect import Rule, binomial_tail, measure
from reports.alerts.harness import DAY, LOW, START, _renders, evaluate
from reports.alerts.series import HOUR, build, hourly_frame
from reports.alerts.stack import stack


def test_harness_meets_the_targets_on_a_small_fixed_seed_run() -> None:
    result = evaluate(tenants=3, days=36, seed=11, interval_minutes=30)
    s = result.summary
    assert s["regressions_15pct"] >= 8  # enough injected to make the ratios mean something
    assert s["recall_15pct"] >= 0.95
    assert s["precision"] >= 0.9
    assert s["stage_first_right"] >= 0.9
    assert s["max_intervals_to_detect"] <= 2
    assert s["volume_changes_alerted"] == 0
    opened = [d for _, _, d in result.alerts if d.kind == "opened"]
    assert any(d.signal == "unit_cost_decrease" for d in opened)  # decreases are their own alerts
    int8 = [r for r in result.rows if r["injection"].kind == "int8_off"]
    first = next(a for a in int8[0]["alerts"] if a.signal == "unit_cost")
    assert "`unet`" in first.detail["message"]
    assert "precision changed int8 → fp16" in first.detail["message"]


def test_binomial_tail_matches_a_direct_sum() -> None:
    from math import comb

    n, p = 40, 0.03
    for k in (0, 1, 3, 7, 40):
        direct = sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert abs(binomial_tail(k, n, p) - direct) < 1e-12


def test_the_most_specific_rule_wins() -> None:
    from reports.alerts.config import rules
    from service.settings import AlertRule, AlertSettings

    rule_for = rules(
        AlertSettings(
            rules=[
                AlertRule(tenant="acme", use_case="ecommerce", relative=0.3),
                AlertRule(tenant="acme", min_renders=40),
                AlertRule(use_case="ecommerce", relative=0.2, absolute_usd=0.001),
                AlertRule(tenant="globex", failed_waste_absolute=25, low_z=6),
            ],
            horizon_days=3,
        )
    )
    assert rule_for("acme", "ecommerce").relative == 0.3
    assert rule_for("acme", "ecommerce").min_renders == 40
    assert rule_for("acme", "ecommerce").absolute_nanos == 1e6
    assert rule_for("globex", "ecommerce").relative == 0.2
    assert rule_for("globex", "social").relative == 0.1
    assert rule_for("globex", "social").failed_waste_nanos == 25e9
    assert rule_for("globex", "social").low_z == 6
    assert rule_for("acme", "social").failed_waste_nanos == 1e9  # 1 of the currency
    assert rule_for("acme", "social").horizon_hours == 72


def test_the_hourly_series_and_the_series_are_per_currency() -> None:
    """One hour of a tenant × use case with renders in USD and in EUR: two hourly rows and
    two series, neither holding anything of the other's currency."""
    at = datetime(2026, 11, 10, 14, 5, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "tenant_id": "acme",
            "use_case": "ecommerce",
            "currency": ["USD", "USD", "EUR"],
            "rendered_at": [at, at, at],
            "outcome": "delivered",
            "total_nanos": [1_000, 3_000, 5_000],
            **{column: [0, 0, 0] for column in STAGE_COLUMNS.values()},
            "cache_hits": 0,
            "cache_lookups": 0,
        }
    )
    hourly = hourly_frame(frame.lazy()).collect().sort("currency")
    assert hourly.select("currency", "delivered", "delivered_nanos").rows() == [
        ("EUR", 1, 5_000),
        ("USD", 2, 4_000),
    ]
    series = build(frame, hourly)
    assert [(s.currency, s.renders.total.tolist()) for s in series] == [
        ("EUR", [5_000.0]),
        ("USD", [1_000.0, 3_000.0]),
    ]


def test_the_low_volume_population_meets_its_targets_on_a_small_run() -> None:
    """Three tenants at 10–100 renders a day: changes of 30 % or more are caught, those on
    series of two dozen renders a day or more within a day, and nothing else opens."""
    result = evaluate(tenants=3, days=60, seed=4, interval_minutes=60, population=LOW)
    s = result.summary
    assert s["regressions_big"] >= 12
    assert s["recall_big"] >= 0.95
    assert s["precision"] >= 0.9
    assert s["within_day_dozens"] >= 0.95
    assert s["volume_changes_alerted"] == 0
    assert s["median_since_error_minutes"] <= 120  # "since" is the change, not the window
    opened = [d for _, _, d in result.alerts if d.kind == "opened"]
    assert {d.detail["window"] for d in opened} == {"low_volume"}


def test_a_stack_measures_each_series_as_it_would_be_measured_alone() -> None:
    """Busy and low-volume series end to end: the screen sees what each sees on its own."""
    rng = np.random.default_rng(3)
    frames = [
        _renders(rng, f"t{k}", "ecommerce", 30, [], per_day=30.0 if k % 2 else None)
        for k in range(4)
    ]
    now = START + 29 * DAY + 5 * HOUR + 7
    frame = pl.concat(frames).filter(pl.col("rendered_at").dt.epoch("s") <= now)
    hourly = hourly_frame(frame.lazy()).collect()
    st = stack(frame, hourly, hourly)
    together = measure(st.series, st.times(now), Rule())
    assert together.low.tolist() == [False, True, False, True]
    for k in range(len(st.keys)):
        alone = measure(st.one(k), np.array([now]), Rule())
        for name, values in vars(together).items():
            if name not in ("times", "lo", "hi", "far"):  # indices into the stack's renders
                assert np.allclose(values[k], getattr(alone, name)[0], equal_nan=True), name

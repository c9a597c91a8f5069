"""Budgets: the forecast, the threshold alerts' lifecycle, the API, the CLI and /metrics."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from typer.testing import CliRunner

from ledger.connections import connection
from ledger.store import Ledger
from reports.alerts.store import alerts
from reports.budget_forecast import forecast
from reports.budgets import Budget, BudgetError, judge, set_budgets, status
from reports.jobs import run_rollup
from service.cli.main import app
from service.keys import create_key
from tests.billing_helpers import add_renders

NOW = datetime(2026, 10, 20, 12, tzinfo=UTC)


def test_forecast_of_a_steady_month_is_exact() -> None:
    daily = {date(2026, 11, 1) + timedelta(days=k): Decimal(10) for k in range(9)}
    daily |= {date(2026, 10, 4) + timedelta(days=k): Decimal(10) for k in range(28)}
    at = datetime(2026, 11, 10, tzinfo=UTC)  # the 10th has just begun
    assert forecast(daily, at, date(2026, 12, 1)) == Decimal(300)
    assert forecast(daily, at + timedelta(hours=12), date(2026, 12, 1)) == Decimal(295)


def test_forecast_follows_the_week_and_falls_back_without_history() -> None:
    # Weekends spend a fifth of a weekday: a flat average would overshoot a month ending
    # on weekends and undershoot one ending on weekdays.
    def spend(d: date) -> Decimal:
        return Decimal(2) if d.weekday() >= 5 else Decimal(10)

    start = date(2026, 9, 1)
    daily = {start + timedelta(days=k): spend(start + timedelta(days=k)) for k in range(39)}
    at = datetime(2026, 10, 10, tzinfo=UTC)
    truth = sum(spend(date(2026, 10, d)) for d in range(1, 32))
    assert forecast(daily, at, date(2026, 11, 1)) == truth
    flat = {d: v for d, v in daily.items() if d >= date(2026, 10, 10)} | {
        date(2026, 10, 10): Decimal(12)
    }
    # No day before today: today's hourly rate (12 in 6 h) for the rest of the month.
    assert forecast(flat, at + timedelta(hours=6), date(2026, 11, 1)) == Decimal(12) * 4 * 22


def _spend(ledger: Ledger, tenant: str) -> Decimal:
    with connection(ledger.engine) as raw:
        row = raw.execute(
            "SELECT sum(cost_nanos) FROM daily_rollup WHERE tenant_id = %s "
            "AND day >= '2026-10-01' AND day <= '2026-10-20'",
            (tenant,),
        ).fetchone()
    assert row is not None
    return Decimal(row[0]) / Decimal(1_000_000_000)


def test_thresholds_open_once_and_resolve_when_the_month_ends(ledger: Ledger, tenant: str) -> None:
    for day in (3, 9, 15):
        add_renders(ledger, tenant, datetime(2026, 10, day, 10, tzinfo=UTC), 5)
    run_rollup(ledger.engine)
    spent = _spend(ledger, tenant)
    assert spent > 0
    budget = Budget(amount=(spent / Decimal("0.85")).quantize(Decimal("0.000001")), currency="USD")
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, tenant, [budget], "test")
    with connection(ledger.engine) as raw:
        st = status(raw, tenant, budget, NOW)
    assert st.spent == spent
    assert st.used == pytest.approx(0.85, abs=1e-4)
    judged = judge(ledger.engine, NOW)
    assert judged.opened >= 3
    with connection(ledger.engine) as raw:
        mine = {a["signal"]: a for a in alerts(raw, tenant)}
    assert set(mine) == {"budget_50", "budget_80", "budget_forecast"}
    assert mine["budget_80"]["use_case"] == "*"
    assert "85% of the October 2026 budget spent" in mine["budget_80"]["message"]
    assert mine["budget_80"]["detail"]["month"] == "2026-10"
    judge(ledger.engine, NOW + timedelta(hours=1))
    with connection(ledger.engine) as raw:
        assert len(alerts(raw, tenant)) == 3  # judged again: nothing new
    judge(ledger.engine, datetime(2026, 11, 2, tzinfo=UTC))
    with connection(ledger.engine) as raw:
        after = alerts(raw, tenant)
    assert {a["status"] for a in after} == {"resolved"}
    assert {a["resolution"]["reason"] for a in after} == {"its month ended"}


def test_a_raised_budget_resolves_its_alerts(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, 10, tzinfo=UTC), 3)
    run_rollup(ledger.engine)
    spent = _spend(ledger, tenant)
    use_case = Budget(use_case="ecommerce", amount=spent, currency="USD", thresholds=(100,))
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, tenant, [use_case], "test")
    judge(ledger.engine, NOW)
    with connection(ledger.engine) as raw:
        [opened] = alerts(raw, tenant)
    assert (opened["signal"], opened["use_case"], opened["status"]) == (
        "budget_100",
        "ecommerce",
        "open",
    )
    raised = use_case.model_copy(update={"amount": spent * 10})
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, tenant, [raised], "test")
    judge(ledger.engine, NOW)
    with connection(ledger.engine) as raw:
        [closed] = alerts(raw, tenant)
    assert closed["status"] == "resolved"
    assert closed["resolution"]["reason"] == "the budget changed"


def test_spend_in_a_currency_without_a_rate_is_an_error_not_an_alert(
    ledger: Ledger, tenant: str
) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, 10, tzinfo=UTC), 2)
    run_rollup(ledger.engine)
    budget = Budget(amount=Decimal("0.000001"), currency="ISK")
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, tenant, [budget], "test")
        st = status(raw, tenant, budget, NOW)
    assert st.spent is None
    assert st.error is not None
    assert "ISK" in st.error
    judge(ledger.engine, NOW)
    with connection(ledger.engine) as raw:
        assert alerts(raw, tenant) == []


def test_one_budget_per_scope() -> None:
    twice = [Budget(amount=Decimal(1), currency="USD")] * 2
    with pytest.raises(BudgetError, match=r"\[1\].use_case"):
        set_budgets(None, "t", twice, "test")  # type: ignore[arg-type]  # refused before SQL


def test_budgets_over_http_cli_and_metrics(
    http: httpx.Client, api_base: str, ledger: Ledger, tenant: str, cli: CliRunner
) -> None:
    url = f"/v1/tenants/{tenant}/budgets"
    body = [
        {"amount": "500", "currency": "USD"},
        {"use_case": "social", "amount": "50", "currency": "USD"},
    ]
    put = http.put(url, json=body)
    assert put.status_code == 200, put.text
    assert [b["thresholds"] for b in put.json()["budgets"]] == [[50, 80, 100]] * 2
    dup = http.put(url, json=[body[0], body[0]])
    assert dup.status_code == 422
    assert dup.json()["detail"]["errors"][0]["index"] == 1, dup.text
    bad = http.put(url, json=[{"amount": "-1", "currency": "USD"}])
    assert bad.status_code == 422
    key = create_key(ledger.engine, tenant, ["read"])
    with httpx.Client(base_url=api_base, headers={"x-api-key": key}, timeout=30) as mine:
        got = mine.get(url)
        assert got.status_code == 200
        assert got.json()["budgets"][0]["spent"] == "0.00"
        assert mine.put(url, json=body).status_code == 403
        assert mine.get("/v1/tenants/someone-else/budgets").status_code == 404
    metrics = http.get("/metrics").text
    assert (
        f'renderledger_budget_used_ratio{{currency="USD",tenant="{tenant}",use_case="*"}} 0.0'
        in metrics
    )
    shown = cli.invoke(app, ["budgets", "show", tenant])
    assert shown.exit_code == 0, shown.output
    assert "social" in shown.output
    cleared = cli.invoke(app, ["budgets", "clear", tenant, "--use-case", "social"])
    assert cleared.exit_code == 0, cleared.output
    added = cli.invoke(
        app, ["budgets", "set", tenant, "--amount", "20", "--currency", "EUR", "--use-case", "x"]
    )
    assert added.exit_code == 0, added.output
    assert [b["use_case"] for b in http.get(url).json()["budgets"]] == [None, "x"]
    refused = cli.invoke(app, ["budgets", "set", tenant, "--amount", "0", "--currency", "EUR"])
    assert refused.exit_code == 2
    assert "amount" in refused.output
    ran = cli.invoke(app, ["budgets", "run"])
    assert ran.exit_code == 0, ran.output
    assert "budget(s) judged" in ran.output


def test_the_scheduler_judges_budgets_after_each_rollup(ledger: Ledger, tenant: str) -> None:
    from reports import scheduler

    add_renders(ledger, tenant, datetime(2026, 10, 6, 10, tzinfo=UTC), 2)
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, tenant, [Budget(amount=Decimal("0.000001"), currency="USD")], "test")

    def failing() -> None:
        raise RuntimeError("detection down")

    jobs = scheduler.start(
        ledger.engine, 1, after_rollup=failing, budgets=lambda: judge(ledger.engine, NOW)
    )
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        found: list[dict[str, object]] = []
        while not found and datetime.now(UTC) < deadline:
            with connection(ledger.engine) as raw:
                found = alerts(raw, tenant)
            time.sleep(0.2)
    finally:
        jobs.shutdown(wait=True)
    assert {a["signal"] for a in found} >= {"budget_100"}  # a failed detection stops nothing


def test_one_tenants_unconvertible_spend_stops_no_other_budget(ledger: Ledger) -> None:
    """A pass over every tenant: the one whose spend has no FX rate into its budget's
    currency shows an error, and the others are judged in the same pass."""
    odd, plain = f"t-odd-{time.monotonic_ns()}", f"t-plain-{time.monotonic_ns()}"
    for tenant in (odd, plain):
        add_renders(ledger, tenant, datetime(2026, 10, 5, 10, tzinfo=UTC), 2)
    run_rollup(ledger.engine)
    tiny = Decimal("0.000001")
    with connection(ledger.engine, transaction=True) as raw:
        set_budgets(raw, odd, [Budget(amount=tiny, currency="ISK")], "test")
        set_budgets(raw, plain, [Budget(amount=tiny, currency="USD")], "test")
    judge(ledger.engine, NOW)
    with connection(ledger.engine) as raw:
        assert alerts(raw, odd) == []
        assert "budget_100" in {a["signal"] for a in alerts(raw, plain)}

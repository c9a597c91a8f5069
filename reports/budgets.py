"""Budgets: a monthly spend limit per tenant (or per use case), watched like a cost series.

Spend is what the tenant's events cost in the UTC month (``daily_rollup``, every stage and
outcome), converted into the budget's currency at each day's rate. Crossing a threshold
(default 50/80/100 %) or a forecast above 100 % opens an alert of its own signal
(``budget_80``, ``budget_forecast``) through the alert log, so it is listed, acknowledged,
resolved and pushed to webhooks like any other. It resolves when its month ends, or when
a new budget puts the spend back under it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import orjson
import psycopg
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy import Engine

from ledger.connections import job_lock
from ledger.events import USE_CASE_PATTERN
from ledger.fx import FxError, fx_table
from ledger.locks import BUDGETS
from ledger.money import EXACT
from reports.alerts.store import append, open_alerts
from reports.budget_forecast import WEEKS, forecast
from reports.tracing import traced

ALL = "*"  # the use case of a tenant-wide budget's alerts: no use case can be named so
SIGNAL_PREFIX = "budget_"


class Budget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    use_case: Annotated[str, Field(pattern=USE_CASE_PATTERN)] | None = Field(
        default=None, description="None: the tenant's whole spend"
    )
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False, max_digits=24, decimal_places=6)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    thresholds: Annotated[tuple[int, ...], Field(min_length=1, max_length=10)] = (50, 80, 100)

    @field_validator("thresholds")
    @classmethod
    def _percents(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= t <= 1000 for t in value) or len(set(value)) != len(value):
            raise ValueError("thresholds: distinct percents between 1 and 1000")
        return tuple(sorted(value))


Budgets = TypeAdapter(list[Budget])


class BudgetError(ValueError):
    """A budget set that cannot be stored; ``index`` is the offending budget's."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def check(budgets: list[Budget]) -> list[Budget]:
    seen: set[str | None] = set()
    for i, b in enumerate(budgets):
        if b.use_case in seen:
            scope = b.use_case or "the whole tenant"
            raise BudgetError(f"[{i}].use_case: a second budget for {scope}; one per scope", i)
        seen.add(b.use_case)
    return budgets


def set_budgets(
    raw: psycopg.Connection[Any], tenant: str, budgets: list[Budget], actor: str
) -> int:
    """A new version holding the whole set (empty: no budgets); returns its number."""
    body = orjson.dumps([b.model_dump(mode="json") for b in check(budgets)]).decode()
    raw.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    row = raw.execute(
        "INSERT INTO budget_versions (tenant_id, set_by, budgets) VALUES (%s, %s, %s) "
        "RETURNING version",
        (tenant, actor, body),
    ).fetchone()
    assert row is not None
    return int(row[0])


def current(
    raw: psycopg.Connection[Any], tenant: str | None = None
) -> dict[str, tuple[int, list[Budget]]]:
    """Each tenant's budgets in force, with their version."""
    rows = raw.execute(
        "SELECT DISTINCT ON (tenant_id) tenant_id, version, budgets FROM budget_versions "
        "WHERE %(t)s::text IS NULL OR tenant_id = %(t)s ORDER BY tenant_id, version DESC",
        {"t": tenant},
    ).fetchall()
    return {t: (int(v), Budgets.validate_python(b)) for t, v, b in rows if b}


@dataclass(frozen=True, slots=True)
class Status:
    budget: Budget
    month: date
    spent: Decimal | None  # None: a currency could not be converted (``error`` says which)
    forecast: Decimal | None
    error: str | None = None

    @property
    def used(self) -> float | None:
        return None if self.spent is None else float(self.spent / self.budget.amount)

    @property
    def forecast_ratio(self) -> float | None:
        return None if self.forecast is None else float(self.forecast / self.budget.amount)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.budget.model_dump(mode="json"),
            "month": self.month.isoformat()[:7],
            "spent": None
            if self.spent is None
            else format(self.spent.quantize(Decimal("0.01")), "f"),
            "used_ratio": self.used,
            "forecast": None
            if self.forecast is None
            else format(self.forecast.quantize(Decimal("0.01")), "f"),
            "forecast_ratio": self.forecast_ratio,
            "error": self.error,
        }


def _daily(
    raw: psycopg.Connection[Any], tenant: str, budget: Budget, since: date, until: date
) -> dict[date, Decimal]:
    """Spend per UTC day in the budget's currency, each day at its own rate."""
    rows = raw.execute(
        "SELECT day, currency, sum(cost_nanos) FROM daily_rollup WHERE tenant_id = %s "
        "AND day >= %s AND day <= %s AND (%s::text IS NULL OR use_case = %s) "
        "GROUP BY day, currency",
        (tenant, since, until, budget.use_case, budget.use_case),
    ).fetchall()
    others = sorted({c for _, c, _ in rows if c != budget.currency})
    try:
        fx = fx_table(raw, None, since, until, [*others, budget.currency]) if others else None
    except FxError as exc:
        raise FxError(f"spend in {', '.join(others)} into {budget.currency}: {exc}") from exc
    out: dict[date, Decimal] = {}
    for day, currency, nanos in rows:
        amount = Decimal(nanos)
        if currency != budget.currency:
            assert fx is not None
            try:
                amount = fx.convert(amount, currency, budget.currency, day)
            except FxError as exc:
                raise FxError(f"spend in {currency} into {budget.currency}: {exc}") from exc
        out[day] = out.get(day, Decimal(0)) + EXACT.divide(amount, Decimal(1_000_000_000))
    return out


def status(raw: psycopg.Connection[Any], tenant: str, budget: Budget, now: datetime) -> Status:
    today = now.astimezone(UTC).date()
    month = today.replace(day=1)
    end = (month + timedelta(days=32)).replace(day=1)
    try:
        daily = _daily(raw, tenant, budget, today - timedelta(days=7 * WEEKS), today)
    except FxError as exc:
        return Status(budget, month, None, None, f"cannot convert {exc}")
    spent = sum((v for d, v in daily.items() if d >= month), Decimal(0))
    return Status(budget, month, spent, forecast(daily, now.astimezone(UTC), end))


def statuses(raw: psycopg.Connection[Any], tenant: str, now: datetime) -> list[Status]:
    found = current(raw, tenant).get(tenant)
    return [status(raw, tenant, b, now) for b in (found[1] if found else [])]


@dataclass
class Judged:
    budgets: int = 0
    opened: int = 0
    resolved: int = 0
    ran: bool = True


def _crossed(s: Status) -> list[tuple[str, str]]:
    """(signal, message) of every line the month's spend or forecast has crossed."""
    b, used = s.budget, s.used
    if used is None or s.spent is None:
        return []
    scope = f"{b.use_case} " if b.use_case else ""
    name = s.month.strftime("%B %Y")
    out = []
    for t in b.thresholds:
        if used * 100 >= t:
            out.append(
                (
                    f"{SIGNAL_PREFIX}{t}",
                    f"{used:.0%} of the {scope}{name} budget spent "
                    f"({s.spent:.2f} of {b.amount:.2f} {b.currency})",
                )
            )
    ratio = s.forecast_ratio
    if ratio is not None and ratio > 1 and used < 1 and s.forecast is not None:
        out.append(
            (
                f"{SIGNAL_PREFIX}forecast",
                f"the {scope}{name} spend is forecast at {ratio:.0%} of its budget "
                f"({s.forecast:.2f} of {b.amount:.2f} {b.currency})",
            )
        )
    return out


@traced("budgets.judge")
def judge(engine: Engine, now: datetime | None = None) -> Judged:
    """One pass over every tenant's budgets: open what is crossed, resolve what no longer
    is (the month ended, or the budget changed). Skips while another process runs it."""
    now = now or datetime.now(UTC)
    result = Judged()
    with job_lock(engine, BUDGETS) as raw:
        if raw is None:
            return Judged(ran=False)
        with raw.transaction():
            opened = {
                (a["tenant"], a["use_case"], a["signal"], a["currency"]): a
                for a in open_alerts(raw)
                if a["signal"].startswith(SIGNAL_PREFIX)
            }
            still: set[tuple[str, str, str, str | None]] = set()
            for tenant, (version, budgets) in current(raw).items():
                for budget in budgets:
                    result.budgets += 1
                    s = status(raw, tenant, budget, now)
                    scope = budget.use_case or ALL
                    for signal, text in _crossed(s):
                        key = (tenant, scope, signal, budget.currency)
                        still.add(key)
                        if (
                            key in opened
                            and opened[key]["detail"].get("month") == s.as_dict()["month"]
                        ):
                            continue
                        detail = {
                            "message": f"{tenant}: {text}",
                            "currency": budget.currency,
                            "value": s.used,
                            "forecast_ratio": s.forecast_ratio,
                            "budget": format(budget.amount, "f"),
                            "spent": s.as_dict()["spent"],
                            "forecast": s.as_dict()["forecast"],
                            "month": s.as_dict()["month"],
                            "budget_version": version,
                        }
                        if key in opened:  # last month's: resolved, then this month's opens
                            _resolve(raw, opened.pop(key), "a new month began")
                            result.resolved += 1
                        append(
                            raw,
                            uuid.uuid4(),
                            tenant,
                            scope,
                            signal,
                            "opened",
                            detail,
                            currency=budget.currency,
                        )
                        result.opened += 1
            for key, alert in opened.items():
                if key not in still:
                    month = now.astimezone(UTC).strftime("%Y-%m")
                    why = (
                        "its month ended"
                        if alert["detail"].get("month") != month
                        else ("the budget changed")
                    )
                    _resolve(raw, alert, why)
                    result.resolved += 1
    return result


def _resolve(raw: psycopg.Connection[Any], alert: dict[str, Any], why: str) -> None:
    append(
        raw,
        uuid.UUID(alert["alert_id"]),
        alert["tenant"],
        alert["use_case"],
        alert["signal"],
        "resolved",
        {"currency": alert["currency"], "reason": why},
        currency=alert["currency"],
    )

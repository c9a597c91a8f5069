"""Billing plans: per tenant, versioned by the month they take effect, loaded from TOML or JSON.

A plan prices each use case either at cost plus a markup or per delivered image on a
graduated tier schedule (Stripe's "graduated" mode: the first 100,000 images at one price,
the next ones at the next). The plan in force on the first day of a month prices the whole
month, so a month never has two plans.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import psycopg
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ledger.events import TENANT_PATTERN, USE_CASE_PATTERN
from reports.billing.months import check_month
from reports.billing.versions import (
    store_version,
    version_in_force,
    versions_in_force,
    versions_of,
)

Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=30, decimal_places=9)]
# Stored as JSONB (which refuses NUL) and printed on invoices: one line of printable text.
Label = Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")]
UseCase = Annotated[str, Field(pattern=USE_CASE_PATTERN)]
MINOR_DIGITS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "HUF": 2, "KWD": 3, "BHD": 3}


class PlanError(ValueError):
    """A plan or credit file that cannot be loaded; says where and why."""


class FailedRenders(StrEnum):
    NOT_BILLED = "not_billed"  # failed and cancelled renders cost the platform, not the tenant
    BILLED = "billed"  # billed like delivered ones (counted as images, their cost marked up)


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    up_to: Annotated[int, Field(gt=0)] | None = None  # images in the month; None: no end
    unit_price: Money


class Pricing(BaseModel):
    """Exactly one of ``markup`` (cost-plus) or ``tiers`` (per image)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    markup: Annotated[Decimal, Field(ge=-1, le=100, allow_inf_nan=False)] | None = None
    tiers: tuple[Tier, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.markup is None) == (self.tiers is None):
            raise ValueError("give either markup (cost-plus) or tiers (per image), not both")
        if self.tiers is not None:
            if not self.tiers:
                raise ValueError("tiers: at least one")
            bounds = [t.up_to for t in self.tiers]
            if bounds[-1] is not None or None in bounds[:-1]:
                raise ValueError("tiers: only the last tier is open-ended, and it must be")
            inner = [b for b in bounds if b is not None]
            if inner != sorted(set(inner)):
                raise ValueError("tiers: up_to must increase")
        return self


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Annotated[str, Field(pattern=TENANT_PATTERN)]
    effective_from: date
    name: Label = ""
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    # Plan currency per USD of metered cost; only cost-plus pricing uses it.
    usd_rate: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] = Decimal(1)
    timezone: str = "UTC"
    failed_renders: FailedRenders = FailedRenders.NOT_BILLED
    minimum_commitment: Money = Decimal(0)
    default: Pricing = Pricing(markup=Decimal(0))
    use_cases: dict[UseCase, Pricing] = {}
    # "fully_loaded": cost-plus lines also bill the tenant's allocated share of idle
    # capacity and overheads (reports/allocation.py), as a line of its own per use case.
    cost_basis: Literal["direct", "fully_loaded"] = Field(
        default="direct", exclude_if=lambda v: v == "direct"
    )

    @field_validator("effective_from")
    @classmethod
    def _first_of_month(cls, value: date) -> date:
        if value.day != 1:
            raise ValueError("a plan takes effect on the first day of a month")
        return check_month(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _rate_for_foreign_currency(self) -> Self:
        cost_plus = any(p.markup is not None for p in (self.default, *self.use_cases.values()))
        if cost_plus and self.currency != "USD" and self.usd_rate == 1:
            raise ValueError(f"usd_rate: cost-plus in {self.currency} needs a rate per USD")
        return self

    def pricing(self, use_case: str) -> Pricing:
        return self.use_cases.get(use_case, self.default)

    @property
    def minor_digits(self) -> int:
        return MINOR_DIGITS.get(self.currency, 2)

    def digest(self) -> str:
        doc = self.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


# The body of ``PUT /plans/{effective_from}``: a plan without the fields its path gives.
# Derived from ``Plan`` so the two cannot drift; it documents the body, and ``parse_plan``
# still validates it, so a refusal names ``plan.<field>`` as it always has.
_TERMS: dict[str, Any] = {
    name: (field.annotation, field)
    for name, field in Plan.model_fields.items()
    if name not in ("tenant", "effective_from")
}
PlanTerms = create_model(
    "PlanTerms",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A plan's terms; the tenant and the month it takes effect come from the path.",
    **_TERMS,
)


def default_plan(tenant: str, period: date) -> Plan:
    """A tenant with no plan is billed at cost, in USD, UTC months, failed renders free."""
    return Plan(tenant=tenant, effective_from=period.replace(day=1), name="at cost")


class CreditGrant(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Annotated[str, Field(pattern=TENANT_PATTERN)]
    id: Annotated[str, Field(min_length=1, max_length=100)]
    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False, decimal_places=3)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    granted_on: date
    note: Label = ""

    @field_validator("granted_on")
    @classmethod
    def _in_range(cls, value: date) -> date:
        return check_month(value)

    @property
    def amount_minor(self) -> int:
        digits = MINOR_DIGITS.get(self.currency, 2)
        minor = self.amount.scaleb(digits)
        if minor != minor.to_integral_value():
            raise PlanError(f"credit {self.id}: {self.amount} has more than {digits} decimals")
        return int(minor)


def _where(exc: ValidationError, prefix: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"{prefix}{'.' + loc if loc else ''}: {first['msg']}"


def parse_plan(data: dict[str, Any], where: str = "plan") -> Plan:
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanError(_where(exc, where)) from exc


def read_file(path: Path) -> tuple[list[Plan], list[CreditGrant]]:
    """``[[plan]]`` and ``[[credit]]`` tables from a TOML file; every entry is checked first."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"{path}: {exc}") from exc
    unknown = set(doc) - {"plan", "credit"}
    if unknown:
        raise PlanError(
            f"{path}: unknown table(s) {', '.join(sorted(unknown))}; use [[plan]], [[credit]]"
        )
    plans = [parse_plan(p, f"{path}: plan[{i}]") for i, p in enumerate(doc.get("plan", []))]
    credits = []
    for i, c in enumerate(doc.get("credit", [])):
        try:
            grant = CreditGrant.model_validate(c)
        except ValidationError as exc:
            raise PlanError(_where(exc, f"{path}: credit[{i}]")) from exc
        grant.amount_minor  # noqa: B018  # refuses sub-cent grants before anything is written
        credits.append(grant)
    return plans, credits


def store_plan(raw: psycopg.Connection[Any], plan: Plan) -> bool:
    """Record a plan version; the same content again is a no-op, other content a conflict."""
    body = orjson.dumps(plan.model_dump(mode="json")).decode()
    stored = store_version(
        raw, "billing_plans", plan.tenant, plan.effective_from, body, plan.digest()
    )
    if stored is None:
        raise PlanError(
            f"{plan.tenant}: a different plan already takes effect on {plan.effective_from}; "
            "plans are history — add one for a later month instead"
        )
    return stored


def store_grant(raw: psycopg.Connection[Any], grant: CreditGrant) -> bool:
    row = raw.execute(
        "INSERT INTO credit_grants (tenant_id, grant_id, amount_minor, currency, granted_on, note) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (grant.tenant, grant.id, grant.amount_minor, grant.currency, grant.granted_on, grant.note),
    ).fetchone()
    if row is not None:
        return True
    old = raw.execute(
        "SELECT amount_minor, currency, granted_on FROM credit_grants "
        "WHERE tenant_id = %s AND grant_id = %s",
        (grant.tenant, grant.id),
    ).fetchone()
    if old is not None and tuple(old) != (grant.amount_minor, grant.currency, grant.granted_on):
        raise PlanError(f"{grant.tenant}: credit {grant.id!r} already granted with other terms")
    return False


def plan_for(raw: psycopg.Connection[Any], tenant: str, period: date) -> Plan:
    found = version_in_force(raw, "billing_plans", tenant, period)
    return default_plan(tenant, period) if found is None else Plan.model_validate(found)


def plans_of(raw: psycopg.Connection[Any], tenant: str) -> list[Plan]:
    return [Plan.model_validate(p) for p in versions_of(raw, "billing_plans", tenant)]


def plans_for(raw: psycopg.Connection[Any], tenants: list[str], period: date) -> dict[str, Plan]:
    """Each tenant's plan in force in ``period`` (the default for those without one)."""
    found = versions_in_force(raw, "billing_plans", tenants, period)
    return {
        t: Plan.model_validate(found[t]) if t in found else default_plan(t, period) for t in tenants
    }

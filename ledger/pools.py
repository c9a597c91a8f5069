"""GPU pools: capacity a platform holds and how it pays for it, busy or idle.

A pool's definition prices *held* capacity (its actual cost), where the price book prices
*used* GPU-seconds (the standard cost). Three ways to pay:

- ``on_demand``: per GPU-hour held;
- ``reserved``: per GPU per calendar month, spread evenly over that month's seconds;
- ``owned``: the purchase price amortised over N calendar months, plus power per GPU-hour.

Definitions are versioned by ``effective_from`` like price books; a span of held capacity is
priced by the version in force at its start, exactly, and rounded once to the nano.
"""

from __future__ import annotations

import bisect
import hashlib
import tomllib
from calendar import monthrange
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ledger.money import EXACT, NANOS_PER_UNIT

POOL_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_US = timedelta(microseconds=1)
HOURS_PER_MONTH = Decimal(730)
"""The month break-even figures are quoted in: 8,760 hours a year over 12, as clouds bill."""

Amount = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, max_digits=24, decimal_places=9)]


class PoolError(ValueError):
    """A pool file or definition that cannot be used, with the reason."""


class OnDemand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: Literal["on_demand"]
    per_gpu_hour: Amount


class Reserved(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: Literal["reserved"]
    per_gpu_month: Amount


class Owned(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    model: Literal["owned"]
    purchase_price: Amount
    amortise_months: Annotated[int, Field(ge=1, le=240)]
    power_per_gpu_hour: Amount = Decimal(0)


Payment = Annotated[OnDemand | Reserved | Owned, Field(discriminator="model")]


class PoolDefinition(BaseModel):
    """One version of a pool, as its TOML file or ``PUT /v1/pools/{name}`` states it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=POOL_PATTERN)]
    gpu_sku: Annotated[str, Field(pattern=r"^gpu\.[a-z0-9_.:/-]{1,120}$")]
    gpus: Annotated[int, Field(ge=1, le=100_000, description="GPUs the pool is sized for")]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    effective_from: AwareDatetime
    payment: Payment
    idle: Literal["share", "keep"] = Field(
        "share",
        description="share: idle cost goes to tenants by busy GPU-seconds; keep: to the platform",
    )

    def monthly_cost(self) -> Decimal:
        """What the pool's GPUs cost in a 730-hour month (break-even's fixed cost F)."""
        p = self.payment
        if isinstance(p, OnDemand):
            per_gpu = p.per_gpu_hour * HOURS_PER_MONTH
        elif isinstance(p, Reserved):
            per_gpu = p.per_gpu_month
        else:
            per_gpu = EXACT.divide(p.purchase_price, p.amortise_months) + (
                p.power_per_gpu_hour * HOURS_PER_MONTH
            )
        return EXACT.multiply(per_gpu, self.gpus)

    def cost_nanos(self, starts: datetime, ends: datetime, gpus: Decimal) -> int:
        """The actual cost of holding ``gpus`` GPUs over [starts, ends): month by month, each
        at its own rate, summed as exact fractions and rounded once, half-even."""
        exact = sum(
            (
                Fraction((hi - lo) // _US, 10**6) * self.per_gpu_second(lo)
                for lo, hi in calendar_months(starts, ends)
            ),
            Fraction(0),
        )
        return round(exact * Fraction(gpus) * NANOS_PER_UNIT)

    def per_gpu_second(self, at: datetime) -> Fraction:
        """What one GPU-second costs at ``at``, exactly: a decimal's last digit could tip a
        rounding, or the floor that weighs one month's part of a span against another's."""
        p = self.payment
        if isinstance(p, OnDemand):
            return Fraction(p.per_gpu_hour) / 3600
        month = monthrange(at.year, at.month)[1] * 86400
        if isinstance(p, Reserved):
            return Fraction(p.per_gpu_month) / month
        amortised = Fraction(p.purchase_price) / p.amortise_months / month
        return amortised + Fraction(p.power_per_gpu_hour) / 3600


def calendar_months(starts: datetime, ends: datetime) -> Iterator[tuple[datetime, datetime]]:
    """[starts, ends) cut at calendar-month boundaries (UTC): monthly rates differ by month."""
    lo = starts.astimezone(UTC)
    ends = ends.astimezone(UTC)
    while lo < ends:
        nxt = datetime(lo.year + lo.month // 12, lo.month % 12 + 1, 1, tzinfo=UTC)
        hi = min(nxt, ends)
        yield lo, hi
        lo = hi


@dataclass(frozen=True)
class Pools:
    """Every version of every pool; the one in force at a time is a binary search away."""

    versions: tuple[PoolDefinition, ...] = ()
    _by_pool: dict[str, list[PoolDefinition]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_pool: dict[str, list[PoolDefinition]] = {}
        for v in sorted(self.versions, key=lambda v: (v.name, v.effective_from)):
            by_pool.setdefault(v.name, []).append(v)
        object.__setattr__(self, "_by_pool", by_pool)

    @property
    def names(self) -> list[str]:
        return sorted(self._by_pool)

    def latest(self, name: str) -> PoolDefinition | None:
        found = self._by_pool.get(name)
        return found[-1] if found else None

    def in_force(self, name: str, at: datetime) -> PoolDefinition | None:
        found = self._by_pool.get(name, [])
        i = bisect.bisect_right([v.effective_from for v in found], at)
        return found[i - 1] if i else None


@dataclass(frozen=True)
class PoolFile:
    definitions: tuple[PoolDefinition, ...]
    source_sha256: str


def parse_pool_file(text: str) -> PoolFile:
    """Parse the TOML format documented in ``service/books/example_pools.toml``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PoolError(f"not valid TOML: {exc}") from exc
    table = doc.get("pools")
    if not isinstance(table, dict) or not table:
        raise PoolError("the file declares no pool: add a [pools.<name>] table")
    out = []
    for name, body in sorted(table.items()):
        if not isinstance(body, dict):
            raise PoolError(f"pools.{name}: expected a table")
        try:
            out.append(PoolDefinition.model_validate({"name": name, **body}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PoolError(f"pools.{name}.{where}: {first['msg']}") from exc
    return PoolFile(tuple(out), hashlib.sha256(text.encode()).hexdigest())

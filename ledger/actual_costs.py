"""What the platform paid: GPU capacity it held and overheads, as immutable records.

Render events carry *standard* cost (the price book). These carry *actual* cost: a span of
held capacity priced by its pool's definition, or an overhead (a training run, checkpoint
storage, a hosting minimum, a subscription) with its amount. They go to ``actual_costs``,
an append-only log of their own, because they belong to a pool or an overhead account, not
to a render; reports/allocation.py spreads them over tenants hour by hour.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self
from uuid import UUID, uuid5

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from ledger.events import EARLIEST, MAX_FUTURE, TENANT_ID, TENANT_PATTERN, Quantity
from ledger.money import canonical_decimal, format_nanos, round_nanos, to_nanos
from ledger.pools import POOL_PATTERN, Pools

MAX_SPAN = timedelta(days=400)
MAX_ACTUAL_COST_NANOS = 10**18
"""One record may cost at most a billion units: a year of a large reservation fits, and
the column (64 bits) and every sum of it (NUMERIC, Int128) stay exact."""
ACCOUNT_PATTERN = rf"^(platform|tenant:{TENANT_ID}|model:[^\x00]{{1,200}})$"
_SCHEDULE = UUID("6f0cbbf2-7a52-4d4f-9d1b-0c3d8f0f4b61")
Text = Annotated[str, Field(max_length=500, pattern=r"^[^\x00]*$")]


class _Span(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    description: Text = ""

    @model_validator(mode="after")
    def _plausible(self) -> Self:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at: must be after starts_at")
        if self.ends_at - self.starts_at > MAX_SPAN:
            raise ValueError(f"ends_at: a span may last {MAX_SPAN.days} days at most; split it")
        if self.starts_at < EARLIEST:
            raise ValueError(f"starts_at: before {EARLIEST.year}")
        if self.ends_at > datetime.now(UTC) + MAX_FUTURE:
            raise ValueError("ends_at: in the future; record capacity once it has been held")
        return self


class CapacityHeld(_Span):
    """GPUs of a pool held over a span, busy or not: a heartbeat, or a schedule row."""

    kind: Literal["capacity"] = "capacity"
    pool: Annotated[str, Field(pattern=POOL_PATTERN)]
    gpus: Annotated[Decimal, Field(gt=0, le=100_000, allow_inf_nan=False, decimal_places=6)]
    source: Literal["heartbeat", "schedule"] = "schedule"


Category = Literal["training", "checkpoint_storage", "hosting_minimum", "subscription", "other"]
Basis = Literal["direct", "renders", "gpu_seconds", "fixed", "keep"]


class OverheadIncurred(_Span):
    """A cost no render caused, attributed to a tenant, a model, or the platform.

    ``allocate_by`` says how it reaches tenants: ``direct`` (its tenant), ``renders`` or
    ``gpu_seconds`` (tenants' delivered renders or busy GPU-seconds in each hour; for a
    model, only renders of that model), ``fixed`` (``shares``), or ``keep`` (platform)."""

    kind: Literal["overhead"] = "overhead"
    account: Annotated[str, Field(pattern=ACCOUNT_PATTERN)]
    category: Category = "other"
    amount: Quantity
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    allocate_by: Basis | None = None
    shares: dict[Annotated[str, Field(pattern=TENANT_PATTERN)], Quantity] | None = None

    @model_validator(mode="after")
    def _basis_fits_account(self) -> Self:
        basis = self.basis
        if self.account.startswith("tenant:") and basis != "direct":
            raise ValueError("allocate_by: a tenant's overhead is direct")
        if basis == "direct" and not self.account.startswith("tenant:"):
            raise ValueError("allocate_by: direct needs a tenant:<id> account")
        if self.account.startswith("model:") and basis not in ("renders", "gpu_seconds"):
            raise ValueError("allocate_by: a model's overhead goes by renders or gpu_seconds")
        if (basis == "fixed") != (self.shares is not None):
            raise ValueError("shares: given exactly when allocate_by is fixed")
        if self.shares is not None and not any(self.shares.values()):
            raise ValueError("shares: at least one share must be above zero")
        if round_nanos(to_nanos(self.amount)) > MAX_ACTUAL_COST_NANOS:
            raise ValueError(f"amount: above {format_nanos(MAX_ACTUAL_COST_NANOS)}; split it")
        return self

    @property
    def basis(self) -> Basis:
        if self.allocate_by is not None:
            return self.allocate_by
        return "direct" if self.account.startswith("tenant:") else "renders"


ActualCost = Annotated[CapacityHeld | OverheadIncurred, Field(discriminator="kind")]


def schedule_event_id(pool: str, starts: datetime, ends: datetime, gpus: Decimal) -> UUID:
    """The id of a schedule row without one: a re-import of the same file is a duplicate."""
    span = f"{starts.astimezone(UTC).isoformat()}|{ends.astimezone(UTC).isoformat()}"
    return uuid5(_SCHEDULE, f"{pool}|{span}|{canonical_decimal(gpus)}")


def content_hash(record: CapacityHeld | OverheadIncurred) -> bytes:
    doc = record.model_dump(mode="json")
    for key in ("gpus", "amount"):
        if key in doc:
            doc[key] = canonical_decimal(Decimal(doc[key]))
    if doc.get("shares"):
        doc["shares"] = {t: canonical_decimal(Decimal(v)) for t, v in doc["shares"].items()}
    for key in ("starts_at", "ends_at"):
        doc[key] = getattr(record, key).astimezone(UTC).isoformat()
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).digest()


def row(record: CapacityHeld | OverheadIncurred, pools: Pools) -> dict[str, Any]:
    """The stored row, priced; ValueError (with the field first) if it cannot be priced."""
    common = {
        "event_id": record.event_id,
        "kind": record.kind,
        "starts_at": record.starts_at,
        "ends_at": record.ends_at,
        "description": record.description,
        "content_hash": content_hash(record),
    }
    if isinstance(record, CapacityHeld):
        definition = pools.in_force(record.pool, record.starts_at)
        if definition is None:
            raise ValueError(
                f"pool: no pool {record.pool!r} in force at {record.starts_at.isoformat()}; "
                "declare it with `renderledger pools load` or PUT /v1/pools/{name}"
            )
        cost = definition.cost_nanos(record.starts_at, record.ends_at, record.gpus)
        if cost > MAX_ACTUAL_COST_NANOS:
            raise ValueError(f"gpus: costs above {format_nanos(MAX_ACTUAL_COST_NANOS)}; split it")
        return common | {
            "pool": record.pool,
            "account": f"pool:{record.pool}",
            "allocate_by": "pool",
            "shares": None,
            "gpus": record.gpus,
            "cost_nanos": cost,
            "currency": definition.currency,
            "source": record.source,
        }
    shares = None
    if record.shares is not None:
        shares = {t: str(v) for t, v in record.shares.items()}
    return common | {
        "pool": None,
        "account": record.account,
        "allocate_by": record.basis,
        "shares": shares,
        "gpus": None,
        "cost_nanos": round_nanos(to_nanos(record.amount)),
        "currency": record.currency,
        "source": record.category,
    }

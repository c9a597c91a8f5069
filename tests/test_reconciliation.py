"""Every cost paid lands somewhere, exactly once, to the nano (issue 13, DESIGN.md "Cost
accounting: standard cost, actual cost, and the variance").

With ``paid`` the capacity cost of ``actual_costs`` (kind ``capacity``) cut into hours by
cumulative floors of time, as reports/allocation.py documents (each stored span cost is also
checked against an exact rational price of its pool's terms, month by month), ``standard``
the cost of usage *on a pool* (an event whose ``pool`` attribute names a declared pool, on a
``gpu.*`` SKU; reversals carry negated cost) and ``direct`` the cost of every usage event,
the identities checked are:

1. per hour, pool and currency: Σ allocations of source ``pool:<p>`` = paid − standard;
2. per overhead (and per hour of it): Σ allocations of source ``overhead:<seq>`` = its cost;
3. per currency: Σ_t (direct(t) + allocated(t)) + unallocated (tenant ``''``)
   = Σ capacity paid + Σ usage cost not on a declared pool's GPU SKUs + Σ overheads.

(3) follows from (1) and (2) once every allocation row has a known source, so it is also
checked that every row has one, and one currency (nothing of two currencies is summed: every
key above has the currency in it). After the last batch, a run with nothing new must write
no row, and ``run_allocation(full=True)`` must leave every (hour, source, currency) its money.

Beyond the sums, every split is checked against its documented weights (busy GPU-seconds,
delivered renders, fixed shares, the tenant, or the platform): each part is within a nano
(plus the float rounding of the weights) of its exact proportion, and goes to no one
without a positive weight.

Isolation. A fresh database per example would take minutes, so each test function gets one
fresh database and every example appends to it, deliberately in the *same* 16-hour window
(2025-03-31 18:00 to 2025-04-01 10:00 UTC: a month boundary at its 7th hour, the EUR price
book from its 11th). Pools are named afresh in each example; tenants, use cases, models and
hours are shared, so a later example's events are late events in hours earlier examples had
already allocated, and the renders and GPU-seconds that overheads are shared by come from
several examples. Nothing is restricted to one example: the identities are checked over the
whole database after every ``run_allocation``, which is stronger than per example, since
they must hold for any union of histories. The price of that: a failure may depend on the
examples before it, and then hypothesis reports it as flaky rather than shrinking it.
"""

from __future__ import annotations

import itertools
import math
import uuid
from calendar import monthrange
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from ledger import database
from ledger.actual_costs import CapacityHeld, OverheadIncurred
from ledger.capacity import load_pools, record
from ledger.events import CostEvent
from ledger.pools import PoolDefinition
from ledger.prices import parse_price_book
from ledger.store import Ledger
from reports.allocation import overhead_shares, split
from reports.allocation_job import run_allocation
from tests.conftest import ledger_with_prices

WINDOW = datetime(2025, 3, 31, 18, tzinfo=UTC)
HOURS = 16
EUR_FROM = datetime(2025, 4, 1, 4, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
NANOS = 10**9
TENANTS = ("acme", "globex", "initech", "umbrella")
USE_CASES = ("social", "ecommerce", "game_assets")
MODELS = ("sdxl", "flux")
GPU_SKUS = ("gpu.h100.second", "gpu.a100.second")
EUR_BOOK = f"""
name = "reconciliation-eur"
effective_from = {EUR_FROM.isoformat().replace("+00:00", "Z")}
currency = "EUR"

[prices."gpu.h100.second"]
unit = "second"
price = "0.00097"

[prices."gpu.a100.second"]
unit = "second"
price = "0.00043"

[prices."llm.gpt-4o-mini.input_token"]
unit = "token"
price = "0.00000013"

[prices."s3.put_request"]
unit = "request"
price = "0.0000043"

[prices."render.image"]
unit = "image"
price = "0"
"""

Key = tuple[Any, ...]


# -- the random histories -------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    idle: Literal["share", "keep"]
    gpu_sku: str
    currency: str
    payment: dict[str, Any]


@dataclass(frozen=True)
class RenderSpec:
    tenant: str
    use_case: str
    offset_s: int
    pool: str | None  # "share" / "keep": this example's pools; "elsewhere": undeclared
    model: str
    sku: str
    unet_s: Decimal
    tokens: int
    delivered: bool


@dataclass(frozen=True)
class SpanSpec:
    offset_s: int
    duration_s: int


@dataclass(frozen=True)
class CapacitySpec:
    pool: Literal["share", "keep"]
    span: SpanSpec
    gpus: Decimal


@dataclass(frozen=True)
class OverheadSpec:
    basis: str
    tenant: str
    model: str
    shares: dict[str, Decimal]
    currency: str
    amount: Decimal
    span: SpanSpec


@dataclass(frozen=True)
class Batch:
    renders: list[RenderSpec]
    capacity: list[CapacitySpec]
    overheads: list[OverheadSpec]
    reversals: list[tuple[int, int]]  # (which earlier event, hours later)
    run_after: bool


@dataclass(frozen=True)
class History:
    share: PoolSpec
    keep: PoolSpec
    batches: list[Batch]


def _money(lo: int, hi: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(lo, hi, places=places, allow_nan=False, allow_infinity=False)


payments = st.one_of(
    st.builds(
        lambda p: {"model": "on_demand", "per_gpu_hour": str(p)},
        _money(0, 6, 4),
    ),
    st.builds(
        lambda p: {"model": "reserved", "per_gpu_month": str(p)},
        _money(100, 3000, 2),
    ),
    st.builds(
        lambda p, n, w: {
            "model": "owned",
            "purchase_price": str(p),
            "amortise_months": n,
            "power_per_gpu_hour": str(w),
        },
        _money(5000, 40000, 2),
        st.integers(1, 48),
        _money(0, 1, 3),
    ),
)


def pools(idle: Literal["share", "keep"]) -> st.SearchStrategy[PoolSpec]:
    return st.builds(
        PoolSpec,
        idle=st.just(idle),
        gpu_sku=st.sampled_from(GPU_SKUS),
        currency=st.sampled_from(("USD", "EUR")),
        payment=payments,
    )


# Hours drawn uniformly (hypothesis favours small integers): the EUR hours get their share.
instants = st.builds(lambda h, s: h * 3600 + s, st.sampled_from(range(HOURS)), st.integers(0, 3599))
spans = st.builds(
    SpanSpec,
    offset_s=st.one_of(instants, st.integers(-1800, 0)),
    duration_s=st.integers(1, 20 * 3600),
)
renders = st.builds(
    RenderSpec,
    tenant=st.sampled_from(TENANTS),
    use_case=st.sampled_from(USE_CASES),
    offset_s=instants,
    pool=st.sampled_from(("share", "keep", "elsewhere", None)),
    model=st.sampled_from(MODELS),
    sku=st.sampled_from(GPU_SKUS),
    unet_s=_money(0, 3000, 3).filter(lambda d: d > 0),
    tokens=st.integers(0, 500),
    delivered=st.booleans(),
)
capacities = st.builds(
    CapacitySpec,
    pool=st.sampled_from(("share", "keep")),
    span=spans,
    gpus=st.sampled_from([Decimal(1), Decimal(2), Decimal("0.5"), Decimal(3), Decimal("1.25")]),
)
BASES = ("direct", "renders", "gpu_seconds", "fixed", "keep", "model_renders", "model_gpu")
overheads = st.builds(
    OverheadSpec,
    basis=st.sampled_from(BASES),
    tenant=st.sampled_from(TENANTS),
    model=st.sampled_from((*MODELS, "kandinsky")),  # kandinsky renders nothing: the platform
    shares=st.dictionaries(st.sampled_from(TENANTS), _money(0, 5, 2), min_size=1).filter(
        lambda d: any(d.values())
    ),
    currency=st.sampled_from(("USD", "EUR")),
    amount=_money(0, 500, 12),
    span=spans,
)
batches = st.builds(
    Batch,
    renders=st.lists(renders, max_size=8),
    capacity=st.lists(capacities, max_size=3),
    overheads=st.lists(overheads, max_size=3),
    reversals=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 3)), max_size=4),
    run_after=st.booleans(),
)
histories = st.builds(
    History,
    share=pools("share"),
    keep=pools("keep"),
    batches=st.lists(batches, min_size=1, max_size=3),
)


# -- writing a history ----------------------------------------------------------------------


def _at(offset_s: int) -> datetime:
    return WINDOW + timedelta(seconds=offset_s)


def _span(s: SpanSpec) -> dict[str, Any]:
    return {"starts_at": _at(s.offset_s), "ends_at": _at(s.offset_s + s.duration_s)}


def _render_events(r: RenderSpec, names: dict[str, str]) -> list[CostEvent]:
    attrs: dict[str, Any] = {"model": r.model}
    sku = r.sku
    if r.pool is not None:
        attrs["pool"] = names[r.pool]
    common = {
        "tenant_id": r.tenant,
        "use_case": r.use_case,
        "render_id": uuid.uuid4(),
        "occurred_at": _at(r.offset_s),
        "attributes": attrs,
    }

    def event(stage: str, sku: str, quantity: Decimal, **kw: Any) -> CostEvent:
        fields = {"event_id": uuid.uuid4(), "stage": stage, "sku": sku, "quantity": quantity}
        return CostEvent.model_validate(common | fields | kw)

    out = [
        event("unet", sku, r.unet_s),
        # Carries the pool attribute too, but an LLM token is no GPU-second: external cost.
        event("caption_llm", "llm.gpt-4o-mini.input_token", Decimal(r.tokens)),
        event(
            "render", "render.image", Decimal(1), outcome="delivered" if r.delivered else "failed"
        ),
    ]
    if r.delivered:
        out.append(event("storage", "s3.put_request", Decimal(1)))
    return out


def _overhead(o: OverheadSpec) -> OverheadIncurred:
    account, by, shares = "platform", o.basis, None
    if o.basis == "direct":
        account = f"tenant:{o.tenant}"
    elif o.basis.startswith("model_"):
        account = f"model:{o.model}"
        by = "renders" if o.basis == "model_renders" else "gpu_seconds"
    elif o.basis == "fixed":
        shares = o.shares
    return OverheadIncurred.model_validate(
        {
            "event_id": uuid.uuid4(),
            "account": account,
            "allocate_by": by,
            "shares": shares,
            "amount": o.amount,
            "currency": o.currency,
            "category": "training" if account.startswith("model:") else "other",
            **_span(o.span),
        }
    )


def _reverse(e: CostEvent, hours_later: int) -> CostEvent:
    return CostEvent.model_validate(
        e.model_dump()
        | {
            "event_id": uuid.uuid4(),
            "reverses": e.event_id,
            "occurred_at": e.occurred_at + timedelta(hours=hours_later),
        }
    )


# -- the oracle: every expected figure from the stored inputs, none from derived tables ----


def _rows(engine: Engine, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        return raw.execute(sql, args).fetchall()


def _us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


SPECS: dict[str, PoolSpec] = {}
"""Every pool declared so far, by name: a capacity span's price by month comes from it."""


def capacity_cut(
    pool: str, starts: datetime, ends: datetime, gpus: Decimal, cost: int
) -> Iterator[tuple[datetime, int]]:
    """A capacity span's stored cost over its UTC hours: cut first at each calendar month's
    edge, in proportion to what each month's exact rate makes of its part (cumulative floors,
    so the pieces sum to the stored cost), then each piece by time (``hourly_cut``)."""
    bounds = [starts]
    while bounds[-1] < ends:
        lo = bounds[-1]
        nxt = datetime(lo.year + lo.month // 12, lo.month % 12 + 1, 1, tzinfo=UTC)
        bounds.append(min(nxt, ends))
    if len(bounds) == 2:
        yield from hourly_cut(starts, ends, cost)
        return
    weights = [
        _exact_capacity_cost(SPECS[pool], lo, hi, gpus) for lo, hi in itertools.pairwise(bounds)
    ]
    total = sum(weights, Fraction(0))
    if total <= 0:  # a free pool: nothing to weigh months by, so time alone (as the job)
        yield from hourly_cut(starts, ends, cost)
        return
    running, before = Fraction(0), 0
    for (lo, hi), weight in zip(itertools.pairwise(bounds), weights, strict=True):
        running += weight
        upto = math.floor(cost * running / total)
        yield from hourly_cut(lo, hi, upto - before)
        before = upto
    assert before == cost, (pool, starts, ends, before, cost)


def hourly_cut(starts: datetime, ends: datetime, cost: int) -> Iterator[tuple[datetime, int]]:
    """A span's cost over its UTC hours by cumulative floors of its micro-seconds."""
    s, e = _us(starts), _us(ends)
    total, cum = e - s, 0
    h = s - s % HOUR_US
    while h < e:
        before = cum
        cum += min(e, h + HOUR_US) - max(s, h)
        yield EPOCH + timedelta(microseconds=h), cost * cum // total - cost * before // total
        h += HOUR_US


@dataclass
class Books:
    """The stored inputs and outputs, read once per check."""

    events: list[tuple[Any, ...]]
    actuals: list[tuple[Any, ...]]
    declared: dict[str, str]  # pool -> idle policy (latest version)
    allocations: list[tuple[datetime, str, str, str, str, str, int]]

    @classmethod
    def read(cls, engine: Engine) -> Books:
        events = _rows(
            engine,
            # A reversal counts where the event it reverses did: its hour, pool and model.
            "SELECT date_trunc('hour', coalesce(o.occurred_at, e.occurred_at), 'UTC'), "
            "e.tenant_id, e.use_case, e.sku, e.cost_nanos, e.currency, "
            "coalesce(coalesce(o.attributes, e.attributes)->>'pool', ''), "
            "coalesce(coalesce(o.attributes, e.attributes)->>'model', ''), e.stage, e.outcome, "
            "e.reverses IS NOT NULL, e.quantity FROM cost_events e LEFT JOIN cost_events o "
            "ON o.tenant_id = e.tenant_id AND o.event_id = e.reverses",
        )
        actuals = _rows(
            engine,
            "SELECT seq, kind, pool, account, allocate_by, shares, starts_at, ends_at, "
            "cost_nanos, currency, gpus FROM actual_costs",
        )
        declared = {
            p: d["idle"]
            for p, d in _rows(
                engine,
                "SELECT DISTINCT ON (pool) pool, definition FROM pool_versions "
                "ORDER BY pool, effective_from DESC",
            )
        }
        allocations = [
            (h, s, k, t, u, c, _integral(a))
            for h, s, k, t, u, c, a in _rows(
                engine,
                "SELECT hour, source, kind, tenant_id, use_case, currency, amount_nanos "
                "FROM allocations",
            )
        ]
        return cls(events, actuals, declared, allocations)

    def pooled(self, sku: str, pool: str) -> bool:
        return sku.startswith("gpu.") and pool in self.declared


def _integral(value: Decimal) -> int:
    assert value == value.to_integral_value(), f"an allocation of a fraction of a nano: {value}"
    return int(value)


def _sums(rows: Iterable[tuple[Key, int]]) -> dict[Key, int]:
    out: dict[Key, int] = defaultdict(int)
    for k, v in rows:
        out[k] += v
    return dict(out)


def _same(got: dict[Key, int], want: dict[Key, int], what: str) -> None:
    keys = {k for k in got.keys() | want.keys() if got.get(k, 0) or want.get(k, 0)}
    wrong = {k: (got.get(k, 0), want.get(k, 0)) for k in keys if got.get(k, 0) != want.get(k, 0)}
    assert not wrong, f"{what}: (got, want) = {sorted(wrong.items())[:5]} of {len(wrong)}"


def _check_split(
    what: str,
    parts: dict[tuple[str, str], int],
    amount: int,
    weights: dict[tuple[str, str], Fraction],
    slack: Fraction,
) -> None:
    """``amount`` over ``weights`` (positive ones only): each part within a nano of its exact
    share (plus ``slack`` × amount / Σw for weights the job rounds through floats); with no
    positive weight, all of it to the platform."""
    parts = {k: v for k, v in parts.items() if v}
    positive = {k: w for k, w in weights.items() if w > 0}
    assert sum(parts.values()) == amount, what
    if not positive:
        assert set(parts) <= {("", "")}, f"{what}: no one to share by, yet {parts}"
        return
    assert set(parts) <= set(positive), f"{what}: {set(parts) - set(positive)} have no weight"
    total = sum(positive.values())
    tolerance = 1 + abs(amount) * slack * (len(positive) + 1) / total
    for k, w in positive.items():
        exact = amount * w / total
        assert abs(parts.get(k, 0) - exact) <= tolerance, (what, k, parts.get(k, 0), exact)


def check_identities(engine: Engine) -> None:
    b = Books.read(engine)
    by_source: dict[str, list[tuple[datetime, str, str, str, str, int]]] = defaultdict(list)
    for h, source, kind, t, u, c, a in b.allocations:
        assert c in ("USD", "EUR"), f"an allocation in currency {c!r}"
        assert kind == ("idle" if source.startswith("pool:") else "overhead"), (source, kind)
        by_source[source].append((h, kind, t, u, c, a))
    overheads = {f"overhead:{a[0]}": a for a in b.actuals if a[1] == "overhead"}
    declared_sources = {f"pool:{p}" for p in b.declared}
    assert set(by_source) <= declared_sources | set(overheads), "an allocation from nowhere"

    # 1. Per hour, pool and currency: Σ allocations = paid − standard.
    paid = _sums(
        ((h, a[2], a[9]), part)
        for a in b.actuals
        if a[1] == "capacity"
        for h, part in capacity_cut(a[2], a[6], a[7], Decimal(a[10]), int(a[8]))
    )
    standard = _sums(((e[0], e[6], e[5]), int(e[4])) for e in b.events if b.pooled(e[3], e[6]))
    allocated = _sums(
        ((h, source[5:], c), a)
        for source, rows in by_source.items()
        if source.startswith("pool:")
        for h, _, _, _, c, a in rows
    )
    variance = {k: paid.get(k, 0) - standard.get(k, 0) for k in paid.keys() | standard.keys()}
    _same(allocated, variance, "pool variance per hour, pool and currency")
    stored = {
        (h, p, c): (int(pd), int(sd))
        for h, p, c, pd, sd in _rows(
            engine, "SELECT hour, pool, currency, paid_nanos, standard_nanos FROM pool_hourly"
        )
    }
    for k in (
        stored.keys() | {k for k, v in paid.items() if v} | {k for k, v in standard.items() if v}
    ):
        assert stored.get(k) == (paid.get(k, 0), standard.get(k, 0)), ("pool_hourly", k)

    # Who the variance went to: busy GPU-seconds of the hour and pool (any currency), or the
    # platform under ``keep``.
    busy: dict[Key, Fraction] = defaultdict(Fraction)
    gpu_us: dict[Key, Fraction] = defaultdict(Fraction)
    delivered: dict[Key, Fraction] = defaultdict(Fraction)
    for h, t, u, sku, _, _, pool, model, stage, outcome, is_reversal, q in b.events:
        sign = -1 if is_reversal else 1
        if sku.startswith("gpu."):
            gpu_us[(h, model, t, u)] += sign * Fraction(q) * 10**6
            if pool in b.declared:
                busy[(h, pool, t, u)] += sign * Fraction(q) * 10**6
        if stage == "render" and outcome == "delivered":
            delivered[(h, model, t, u)] += sign
    for (h, pool, c), amount in variance.items():
        parts = _sums(
            ((t, u), a)
            for hh, _, t, u, cc, a in by_source.get(f"pool:{pool}", [])
            if (hh, cc) == (h, c)
        )
        weights = {} if b.declared[pool] == "keep" else _pick(busy, h, pool)
        _check_split(f"pool:{pool} {h} {c}", parts, amount, weights, Fraction(2))

    # 2. Per overhead, and per hour of it: Σ allocations = its cost, in its currency.
    for source, overhead in overheads.items():
        _, _, _, account, by, shares, starts, ends, cost, currency, _ = overhead
        rows = by_source.get(source, [])
        assert {c for _, _, _, _, c, _ in rows} <= {currency}, f"{source}: another currency"
        assert sum(a for *_, a in rows) == cost, f"{source}: allocated ≠ cost"
        for h, part in hourly_cut(starts, ends, int(cost)):
            parts = _sums(((t, u), a) for hh, _, t, u, _, a in rows if hh == h)
            what = f"{source} ({account}, {by}) {h}"
            model = account[6:] if account.startswith("model:") else None
            if by == "direct":
                owners = {t for (t, _), a in parts.items() if a}
                assert owners <= {account.removeprefix("tenant:")}, what
                assert sum(parts.values()) == part, what
            elif by == "keep":
                _check_split(what, parts, part, {}, Fraction(0))
            elif by == "fixed":
                w = {(t, ""): Fraction(Decimal(s)) * 10**6 for t, s in shares.items()}
                _check_split(what, parts, part, w, Fraction(2))
            elif by == "renders":
                _check_split(what, parts, part, _by_model(delivered, h, model), Fraction(0))
            else:
                _check_split(what, parts, part, _by_model(gpu_us, h, model), Fraction(2))

    # 3. Globally, per currency: what tenants bear + what no one bears = what was spent.
    direct: dict[Key, int] = _sums(((e[5], e[1]), int(e[4])) for e in b.events)
    loaded = _sums(((c, t), a) for _, _, _, t, _, c, a in b.allocations)
    for currency in ("USD", "EUR"):
        tenants = {t for c, t in direct.keys() | loaded.keys() if c == currency and t}
        fully_loaded = sum(
            direct.get((currency, t), 0) + loaded.get((currency, t), 0) for t in tenants
        )
        unallocated = loaded.get((currency, ""), 0)
        capacity = sum(int(a[8]) for a in b.actuals if a[1] == "capacity" and a[9] == currency)
        external = sum(int(e[4]) for e in b.events if e[5] == currency and not b.pooled(e[3], e[6]))
        spent = sum(int(a[8]) for a in b.actuals if a[1] == "overhead" and a[9] == currency)
        assert fully_loaded + unallocated == capacity + external + spent, currency


def _pick(weights: dict[Key, Fraction], h: datetime, pool: str) -> dict[tuple[str, str], Fraction]:
    out: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for (hh, p, t, u), w in weights.items():
        if (hh, p) == (h, pool):
            out[(t, u)] += w
    return dict(out)


def _by_model(
    weights: dict[Key, Fraction], h: datetime, model: str | None
) -> dict[tuple[str, str], Fraction]:
    """Per tenant and use case in hour ``h`` (of one model, if given): the job nets a tenant's
    models before it drops the non-positive."""
    out: dict[tuple[str, str], Fraction] = defaultdict(Fraction)
    for (hh, m, t, u), w in weights.items():
        if hh == h and model in (None, m):
            out[(t, u)] += w
    return dict(out)


def net_allocations(engine: Engine) -> dict[Key, int]:
    rows = _rows(
        engine,
        "SELECT hour, source, kind, tenant_id, use_case, currency, sum(amount_nanos) "
        "FROM allocations GROUP BY 1, 2, 3, 4, 5, 6",
    )
    return {tuple(r[:6]): int(r[6]) for r in rows if r[6] != 0}


def _per_source(net: dict[Key, int]) -> dict[Key, int]:
    """Net allocations per (hour, source, kind, currency): tenants and use cases summed."""
    return {
        k: v
        for k, v in _sums(((h, s, k, c), a) for (h, s, k, _, _, c), a in net.items()).items()
        if v
    }


def _exact_capacity_cost(p: PoolSpec, starts: datetime, ends: datetime, gpus: Decimal) -> Fraction:
    """What holding ``gpus`` over the span costs in nanos, exactly (no rounding at all)."""
    pay = {k: v if k == "model" else Fraction(v) for k, v in p.payment.items()}
    total = Fraction(0)
    lo = starts
    while lo < ends:
        nxt = datetime(lo.year + lo.month // 12, lo.month % 12 + 1, 1, tzinfo=UTC)
        hi = min(nxt, ends)
        month_s = monthrange(lo.year, lo.month)[1] * 86400
        if pay["model"] == "on_demand":
            rate = pay["per_gpu_hour"] / 3600
        elif pay["model"] == "reserved":
            rate = pay["per_gpu_month"] / month_s
        else:
            rate = pay["purchase_price"] / pay["amortise_months"] / month_s
            rate += pay["power_per_gpu_hour"] / 3600
        total += Fraction((hi - lo) // timedelta(microseconds=1), 10**6) * rate
        lo = hi
    return total * Fraction(gpus) * NANOS


# -- the tests ------------------------------------------------------------------------------


@pytest.fixture
def books(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    ledger.load_prices(parse_price_book(EUR_BOOK))
    yield ledger
    engine.dispose()


def _definition(name: str, p: PoolSpec) -> PoolDefinition:
    return PoolDefinition.model_validate(
        {
            "name": name,
            "gpu_sku": p.gpu_sku,
            "gpus": 4,
            "currency": p.currency,
            "effective_from": "2025-01-01T00:00:00Z",
            "payment": p.payment,
            "idle": p.idle,
        }
    )


def test_every_nano_paid_lands_exactly_once(books: Ledger) -> None:
    engine = books.engine
    example = itertools.count()

    def play(h: History) -> None:
        k = next(example)
        names = {"share": f"share-{k}", "keep": f"keep-{k}", "elsewhere": f"nowhere-{k}"}
        specs = {"share": h.share, "keep": h.keep}
        SPECS.update({names[i]: specs[i] for i in ("share", "keep")})
        load_pools(engine, [_definition(names[i], specs[i]) for i in ("share", "keep")])
        reversible: list[CostEvent] = []
        for i, batch in enumerate(h.batches):
            events = [e for r in batch.renders for e in _render_events(r, names)]
            for which, later in batch.reversals:
                if reversible:
                    events.append(_reverse(reversible.pop(which % len(reversible)), later))
            assert books.append(events).accepted == len(events)
            reversible += [e for e in events if e.reverses is None]
            capacity = [
                CapacityHeld(
                    event_id=uuid.uuid4(), pool=names[c.pool], gpus=c.gpus, **_span(c.span)
                )
                for c in batch.capacity
            ]
            actuals: list[CapacityHeld | OverheadIncurred] = [*capacity]
            actuals += [_overhead(o) for o in batch.overheads]
            record(engine, actuals)
            stored = dict(
                _rows(
                    engine,
                    "SELECT event_id, cost_nanos FROM actual_costs WHERE event_id = ANY(%s)",
                    [a.event_id for a in actuals],
                )
            )
            for c, held in zip(batch.capacity, capacity, strict=True):
                exact = _exact_capacity_cost(specs[c.pool], held.starts_at, held.ends_at, c.gpus)
                assert abs(stored[held.event_id] - exact) <= Fraction(1, 2), (c, exact)
            for o, a in zip(batch.overheads, actuals[len(capacity) :], strict=True):
                assert stored[a.event_id] == round(Fraction(o.amount) * NANOS)
            if batch.run_after or i == len(h.batches) - 1:
                assert run_allocation(engine).ran
                check_identities(engine)
        # Nothing new: nothing written.
        assert run_allocation(engine).rows_written == 0
        # A full rebuild leaves every (hour, source, tenant, use case, currency) with exactly
        # the money it had: weights are exact integers, so no row order can move a nano.
        before = net_allocations(engine)
        assert run_allocation(engine, full=True).ran
        assert net_allocations(engine) == before
        assert _per_source(net_allocations(engine)) == _per_source(before)
        check_identities(engine)
        assert run_allocation(engine).rows_written == 0

    settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))(
        given(histories)(play)
    )()


# -- the split itself -----------------------------------------------------------------------

HOUR = datetime(2026, 10, 15, 12, tzinfo=UTC)


def _split(amount: int, weights: list[int]) -> pl.DataFrame:
    amounts = pl.LazyFrame(
        {"hour": [HOUR], "source": ["s"], "currency": ["USD"], "amount": [amount]},
        schema={
            "hour": pl.Datetime("us", "UTC"),
            "source": pl.String,
            "currency": pl.String,
            "amount": pl.Int128,
        },
    )
    w = pl.LazyFrame(
        {
            "hour": [HOUR] * len(weights),
            "tenant_id": [f"t{i:05d}" for i in range(len(weights))],
            "use_case": ["u"] * len(weights),
            "weight": weights,
        },
        schema={
            "hour": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String,
            "use_case": pl.String,
            "weight": pl.Int64,
        },
    )
    return split(amounts, w, ["hour"]).collect()


GPU_HOUR_US = 3_600_000_000  # a busy GPU-hour in micro-seconds, the weight pools split by


@pytest.mark.parametrize(
    ("amount", "weights"),
    [
        (-7, [1, 1, 1]),
        (-1, [5, 3]),
        (-(10**18), [1, 2, 3, 4, 5, 6, 7]),
        (10, [0, 0, 0]),  # no positive weight: the platform, whole
        (-10, [0]),
        (10, []),
        (0, [1, 2]),
        (7, [0, 3, 0]),
        (1, [1]),
        (10**18 - 1, [GPU_HOUR_US]),
        (10**18, list(range(1, 1001))),
        (-(10**18), [GPU_HOUR_US * 1000 - i for i in range(1000)]),
        (10**18, [GPU_HOUR_US * 100_000] * 50),  # a 100,000-GPU pool, busy all hour, 50 ways
        (10**18 + 7, [1] * 999 + [2**40]),
    ],
)
def test_cumulative_floors_sum_to_the_amount(amount: int, weights: list[int]) -> None:
    out = _split(amount, weights)
    assert out["amount_nanos"].dtype == pl.Int128
    assert sum(out["amount_nanos"].to_list()) == amount
    positive = [w for w in weights if w > 0]
    if not positive:
        assert out["tenant_id"].to_list() == [""]
        return
    assert out.height == len(positive)
    total = sum(positive)
    got = dict(zip(out["tenant_id"].to_list(), out["amount_nanos"].to_list(), strict=True))
    for i, w in enumerate(weights):
        if w > 0:  # cumulative floors: each part within a nano of its exact share
            assert abs(got[f"t{i:05d}"] - Fraction(amount * w, total)) < 1


def _usage(order: list[int]) -> pl.LazyFrame:
    # One hour: acme's busy seconds of one model in three usage_hourly rows (three pools),
    # globex's in one. 765.207 + 1348.473 + 1486.305 = 3599.985 exactly; in floats, the
    # order of the additions decides whether × 1e6 floors to 3599985000 or 3599984999.
    rows = [
        ("acme", 765.207),
        ("acme", 1486.305),
        ("acme", 1348.473),
        ("globex", 3000.0),
    ]
    return pl.LazyFrame(
        {
            "hour": [HOUR] * 4,
            "tenant_id": [rows[i][0] for i in order],
            "use_case": ["social"] * 4,
            "model": ["sdxl"] * 4,
            "busy_seconds": [rows[i][1] for i in order],
            # What the job reads: floor(busy_seconds * 1e6) of each stored NUMERIC row.
            "busy_us": [int(Decimal(str(rows[i][1])).scaleb(6)) for i in order],
            "renders": [1] * 4,
        },
        schema={
            "hour": pl.Datetime("us", "UTC"),
            "tenant_id": pl.String,
            "use_case": pl.String,
            "model": pl.String,
            "busy_seconds": pl.Float64,
            "busy_us": pl.Int128,
            "renders": pl.Int64,
        },
    )


def test_weights_ignore_row_order() -> None:
    parts = pl.LazyFrame(
        {
            "seq": [1],
            "hour": [HOUR],
            "account": ["platform"],
            "allocate_by": ["gpu_seconds"],
            "currency": ["USD"],
            "cost_nanos": [10**12],  # $1,000 of overhead by GPU-seconds
        },
        schema={
            "seq": pl.Int64,
            "hour": pl.Datetime("us", "UTC"),
            "account": pl.String,
            "allocate_by": pl.String,
            "currency": pl.String,
            "cost_nanos": pl.Int128,
        },
    )
    fixed = pl.LazyFrame(schema={"seq": pl.Int64, "tenant_id": pl.String, "weight": pl.Int64})

    def shares(order: list[int]) -> dict[str, int]:
        out = overhead_shares(parts, _usage(order), fixed).collect()
        return dict(zip(out["tenant_id"].to_list(), out["amount_nanos"].to_list(), strict=True))

    assert shares([0, 1, 2, 3]) == shares([0, 2, 1, 3])


@pytest.mark.parametrize(
    ("amount", "weights"),
    [
        (-(10**20), [2**62] * 100),  # amount × Σ weights far past 2^127, before scaling
        (10**21, [2**62, 1, 2**61, 3_600_000_000]),
        (10**18, [2**63 - 1] * 7),
    ],
)
def test_huge_weights_are_scaled_not_wrapped(amount: int, weights: list[int]) -> None:
    """A tenant that makes its busy seconds enormous cannot overflow the split: a group's
    weights are scaled to at most MAX_WEIGHT in total, which moves proportions by at most
    amount × n / MAX_WEIGHT and never a nano of the total."""
    from reports.allocation import MAX_WEIGHT

    out = _split(amount, weights)
    assert sum(out["amount_nanos"].to_list()) == amount
    total = sum(weights)
    got = dict(zip(out["tenant_id"].to_list(), out["amount_nanos"].to_list(), strict=True))
    bound = 1 + Fraction(abs(amount) * 2 * len(weights), MAX_WEIGHT)
    for i, w in enumerate(weights):
        assert abs(got.get(f"t{i:05d}", 0) - Fraction(amount * w, total)) <= bound

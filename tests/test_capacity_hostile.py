"""A hostile review of capacity accounting (issue 13): pools, actual costs, allocation.

Every test runs on a database of its own. The invariants every history must keep:

- per pool, hour and currency, Σ idle allocations = paid − standard (``pool_hourly``);
- per overhead, Σ its allocations = its cost, in its own currency;
- per pool and currency, Σ ``pool_hourly.paid`` = Σ capacity recorded in ``actual_costs``;
- a rebuild (``run_allocation(full=True)``) after incremental runs writes no row.

Tests that fail here name a defect in their assertion message.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from ingest.capacity_schedule import ScheduleInvalid, parse_schedule
from ingest.sample import unet_event
from ledger import database
from ledger.actual_costs import CapacityHeld, OverheadIncurred
from ledger.capacity import load_pools, record
from ledger.connections import connection
from ledger.errors import LedgerError
from ledger.events import CostEvent
from ledger.prices import load_price_book_file, parse_price_book
from ledger.store import Ledger
from reports.allocation_job import run_allocation
from reports.billing.lifecycle import finalize, invoice
from reports.capacity_report import pool_rows, tenant_rows, unallocated
from service.cli.main import DEFAULT_PRICES
from service.http.app import create_app
from service.keys import create_key
from service.settings import Settings
from tests.billing_helpers import store_fully_loaded_plans
from tests.conftest import ledger_with_prices, serving

HOUR = datetime(2026, 10, 15, 12, tzinfo=UTC)
GPU_HOUR = 396 * 10**7  # $3.96, one H100-hour on the pool
PER_SECOND = 1_100_000  # the book's H100-second, $0.0011
SEP, OCT, NOV = date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1)


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def books(fresh_database: str) -> Iterator[Ledger]:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    yield ledger_with_prices(engine)
    engine.dispose()


@pytest.fixture
def api(fresh_database: str) -> Iterator[tuple[httpx.Client, Ledger, str]]:
    """An admin client on a database of its own, the ledger, and the base URL."""
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    ledger.load_prices(load_price_book_file(DEFAULT_PRICES.parent / "whatif/sdxl-api-0004.toml"))
    key = create_key(engine, None, ["admin"], "hostile")
    settings = Settings(database_url=fresh_database)
    settings.ingest.max_body_bytes = 256 * 1024
    app = create_app(settings, ledger, schedule=False)
    with (
        serving(app) as base,
        httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {key}"}
        ) as client,
    ):
        yield client, ledger, base
    engine.dispose()


def pool(
    name: str = "h100-a",
    *,
    idle: str = "share",
    per_hour: str = "3.96",
    gpus: int = 1,
    effective: str = "2026-01-01T00:00:00Z",
    payment: dict[str, Any] | None = None,
) -> Any:
    from ledger.pools import PoolDefinition

    return PoolDefinition.model_validate(
        {
            "name": name,
            "gpu_sku": "gpu.h100.second",
            "gpus": gpus,
            "currency": "USD",
            "effective_from": effective,
            "payment": payment or {"model": "on_demand", "per_gpu_hour": per_hour},
            "idle": idle,
        }
    )


def hold(
    start: datetime, *, hours: float = 1, gpus: str = "1", pool_name: str = "h100-a"
) -> CapacityHeld:
    return CapacityHeld(
        event_id=uuid.uuid4(),
        pool=pool_name,
        starts_at=start,
        ends_at=start + timedelta(hours=hours),
        gpus=Decimal(gpus),
    )


def gpu(
    tenant: str, seconds: str, at: datetime, pool_name: str | None = "h100-a", **kw: Any
) -> CostEvent:
    attrs = kw.pop("attributes", {"model": "sdxl"} | ({"pool": pool_name} if pool_name else {}))
    return unet_event(
        tenant,
        kw.pop("render", None) or uuid.uuid4(),
        quantity=Decimal(seconds),
        occurred_at=at,
        attributes=attrs,
        **kw,
    )


def delivered(
    tenant: str, at: datetime, render: uuid.UUID, attributes: dict[str, Any]
) -> CostEvent:
    return unet_event(
        tenant,
        render,
        stage="render",
        sku="render.image",
        outcome="delivered",
        occurred_at=at,
        attributes=attributes,
    )


def rows(engine: Engine, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with connection(engine) as raw:
        return raw.execute(sql, args).fetchall()


def allocated(engine: Engine, tenant: str, hour: datetime | None = None) -> int:
    where = "tenant_id = %s" + (" AND hour = %s" if hour else "")
    args: tuple[Any, ...] = (tenant, hour) if hour else (tenant,)
    ((total,),) = rows(
        engine, f"SELECT coalesce(sum(amount_nanos), 0) FROM allocations WHERE {where}", *args
    )
    return int(total)


def books_balance(engine: Engine) -> None:
    """The invariants of the module docstring, each failing with what broke."""
    pools_off = rows(
        engine,
        """
        WITH a AS (SELECT hour, substr(source, 6) AS pool, currency, sum(amount_nanos) AS got
                   FROM allocations WHERE kind = 'idle' GROUP BY 1, 2, 3)
        SELECT hour, pool, currency, coalesce(p.paid_nanos - p.standard_nanos, 0) AS want,
               coalesce(a.got, 0) AS got
        FROM pool_hourly p FULL JOIN a USING (hour, pool, currency)
        WHERE coalesce(p.paid_nanos - p.standard_nanos, 0) <> coalesce(a.got, 0)
        ORDER BY 1 LIMIT 5
        """,
    )
    assert not pools_off, (
        f"Σ idle allocations ≠ paid − standard (hour, pool, cur, want, got): {pools_off}"
    )
    overheads_off = rows(
        engine,
        """
        SELECT c.seq, c.cost_nanos, coalesce(sum(a.amount_nanos), 0) FROM actual_costs c
        LEFT JOIN allocations a ON a.source = 'overhead:' || c.seq AND a.currency = c.currency
        WHERE c.kind = 'overhead' GROUP BY 1, 2
        HAVING c.cost_nanos <> coalesce(sum(a.amount_nanos), 0) LIMIT 5
        """,
    )
    assert not overheads_off, (
        f"an overhead not allocated whole (seq, cost, allocated): {overheads_off}"
    )
    crossed = rows(
        engine,
        "SELECT count(*) FROM allocations a JOIN actual_costs c ON a.source = 'overhead:' || c.seq "
        "WHERE a.currency <> c.currency",
    )
    assert crossed == [(0,)], "an overhead allocated in another currency than its own"
    paid_off = rows(
        engine,
        """
        WITH c AS (SELECT pool, currency, sum(cost_nanos) AS cost FROM actual_costs
                   WHERE kind = 'capacity' GROUP BY 1, 2),
             p AS (SELECT pool, currency, sum(paid_nanos) AS paid FROM pool_hourly GROUP BY 1, 2)
        SELECT pool, currency, coalesce(c.cost, 0), coalesce(p.paid, 0)
        FROM c FULL JOIN p USING (pool, currency)
        WHERE coalesce(c.cost, 0) <> coalesce(p.paid, 0)
        """,
    )
    assert not paid_off, (
        f"capacity paid in pool_hourly ≠ recorded (pool, cur, recorded, paid): {paid_off}"
    )


# -- defects: each of these fails on the code as reviewed -----------------------------------


def test_a_reversal_in_a_later_hour_does_not_bill_another_tenant(books: Ledger) -> None:
    """A reversal need not repeat occurred_at or attributes; the fold puts it in its own
    hour and pool, so the variance of *another* tenant's hour grows by the reversed cost."""
    load_pools(books.engine, [pool()])
    record(books.engine, [hold(HOUR), hold(HOUR + timedelta(hours=1))])
    mine = gpu("acme", "1800", HOUR + timedelta(minutes=5))
    books.append([mine, gpu("globex", "1800", HOUR + timedelta(hours=1, minutes=5))])
    # acme cancels its render an hour later (a reversal carries its own occurred_at).
    undo = unet_event(
        "acme",
        mine.render_id,
        quantity=mine.quantity,
        occurred_at=HOUR + timedelta(hours=1, minutes=10),
        reverses=mine.event_id,
        attributes={"pool": "h100-a"},
    )
    books.append([undo])
    run_allocation(books.engine)
    books_balance(books.engine)
    globex = allocated(books.engine, "globex")
    fair = GPU_HOUR - 1800 * PER_SECOND  # its own hour's idle, all of it its own
    assert globex == fair, (
        "DEFECT reports/allocation_job.py _FOLD: a reversal is folded into its own hour and "
        "pool, not the reversed event's; acme's cancelled GPU cost "
        f"({1800 * PER_SECOND} nanos) lands on globex: allocated {globex}, fair {fair}"
    )


def test_a_reversal_without_attributes_frees_the_pool(books: Ledger) -> None:
    """A reversal that does not repeat ``pool`` leaves the usage busy on the pool: the tenant
    bears idle cost for a render it cancelled, and utilisation counts time no one used."""
    load_pools(books.engine, [pool()])
    record(books.engine, [hold(HOUR)])
    mine = gpu("acme", "1800", HOUR + timedelta(minutes=5))
    undo = unet_event(
        "acme",
        mine.render_id,
        quantity=mine.quantity,
        occurred_at=HOUR + timedelta(minutes=6),
        reverses=mine.event_id,
    )
    books.append([mine])
    books.append([undo])
    run_allocation(books.engine)
    books_balance(books.engine)
    ((busy,),) = rows(books.engine, "SELECT busy_seconds FROM pool_hourly")
    acme = allocated(books.engine, "acme")
    assert (busy, acme) == (0, 0), (
        "DEFECT reports/allocation_job.py _FOLD: a reversal's pool is read from its own "
        "attributes; with none, the reversed usage stays busy on the pool "
        f"(busy {busy} s) and acme bears {acme} nanos of idle for a cancelled render"
    )


def test_a_backdated_pool_version_does_not_reprice_recorded_capacity(books: Ledger) -> None:
    """A span is priced once, when recorded; a version loaded later with an earlier
    effective_from must not change what pool_hourly says was paid."""
    load_pools(books.engine, [pool()])
    start = datetime(2026, 8, 31, 12, tzinfo=UTC)  # crosses into September
    record(books.engine, [hold(start, hours=24)])
    ((stored,),) = rows(books.engine, "SELECT cost_nanos FROM actual_costs")
    assert stored == 24 * GPU_HOUR
    run_allocation(books.engine)
    books_balance(books.engine)
    # A second version, back-dated before the span: refused (terms are not rewritten under
    # recorded capacity), and a later one leaves what was paid as recorded.
    with pytest.raises(LedgerError, match="capacity recorded until"):
        load_pools(books.engine, [pool(per_hour="7.92", effective="2026-06-01T00:00:00Z")])
    load_pools(books.engine, [pool(per_hour="7.92", effective="2026-09-02T00:00:00Z")])
    run_allocation(books.engine, full=True)
    ((paid,),) = rows(books.engine, "SELECT sum(paid_nanos) FROM pool_hourly")
    assert paid == stored, (
        "DEFECT reports/allocation_job.py month_pieces: a month-crossing span is re-priced "
        "by the version in force *now* (pools.in_force), not the cost stored when it was "
        f"recorded: paid {paid} nanos in pool_hourly, {stored} recorded in actual_costs "
        "(money invented)"
    )


def test_a_new_pool_version_does_not_change_the_idle_policy_of_past_hours(books: Ledger) -> None:
    """The idle policy is part of a version; a version from November on must not re-allocate
    October's hours (the job takes every hour's policy from ``pools.latest``)."""
    load_pools(books.engine, [pool()])
    record(books.engine, [hold(HOUR)])
    books.append([gpu("acme", "1800", HOUR + timedelta(minutes=5))])
    run_allocation(books.engine)
    before = allocated(books.engine, "acme")
    assert before == GPU_HOUR - 1800 * PER_SECOND
    load_pools(books.engine, [pool(idle="keep", effective="2026-11-01T00:00:00Z")])
    written = run_allocation(books.engine, full=True).rows_written
    after = allocated(books.engine, "acme")
    assert (after, written) == (before, 0), (
        "DEFECT reports/allocation_job.py allocate_hours: `declared` takes each pool's idle "
        "policy from pools.latest(), so a version effective 2026-11-01 re-allocates "
        f"October: acme's idle share {before} → {after} nanos, {written} rows rewritten"
    )


def test_a_pool_declared_over_http_reallocates_usage_already_folded(
    api: tuple[httpx.Client, Ledger, str],
) -> None:
    """`pools load` runs the job with full; PUT /v1/pools/{name} does not, so usage folded
    before the pool existed is never re-allocated until someone rebuilds."""
    client, ledger, _ = api
    ledger.append([gpu("acme", "1800", HOUR + timedelta(minutes=5), pool_name="late-pool")])
    assert client.post("/v1/allocation/run").json()["ran"] is True
    body = pool("late-pool").model_dump(mode="json")
    assert client.put("/v1/pools/late-pool", json=body).status_code == 200
    assert client.post("/v1/allocation/run").json()["ran"] is True
    rebuilt = client.post("/v1/allocation/run", params={"full": "true"}).json()
    assert rebuilt["rows_written"] == 0, (
        "DEFECT service/http/capacity.py put_pool: declaring a pool over HTTP does not "
        "re-allocate (the CLI's `pools load` runs run_allocation(full=True)); the "
        "incremental state differs from a rebuild, which wrote "
        f"{rebuilt['rows_written']} rows"
    )


def test_break_even_never_adds_two_currencies(api: tuple[httpx.Client, Ledger, str]) -> None:
    """The break-even's variable cost per render is read from usage_hourly over every
    currency the pool's renders were priced in; a EUR render's cost joins USD figures."""
    client, ledger, _ = api
    assert client.put("/v1/pools/h100-a", json=pool().model_dump(mode="json")).status_code == 200
    render = uuid.uuid4()
    attrs = {"pool": "h100-a"}
    ledger.append(
        [
            gpu("acme", "60", HOUR + timedelta(minutes=5), attributes=attrs, render=render),
            delivered("acme", HOUR + timedelta(minutes=5), render, attrs),
        ]
    )
    eur = parse_price_book(
        'name = "eur-2026"\neffective_from = 2026-10-15T13:00:00Z\ncurrency = "EUR"\n'
        '[prices."gpu.h100.second"]\nunit = "second"\nprice = "0.001"\n'
        '[prices."render.image"]\nunit = "image"\nprice = "1.00"\n'
    )
    ledger.load_prices(eur)
    render = uuid.uuid4()
    at = HOUR + timedelta(hours=1, minutes=5)
    ledger.append(
        [
            gpu("globex", "60", at, attributes=attrs, render=render),
            delivered("globex", at, render, attrs),
        ]
    )
    client.post("/v1/allocation/run")
    got = client.get(
        "/v1/break-even",
        params={
            "pool": "h100-a",
            "api_book": "sdxl-api-0004",
            "from": "2026-10-15",
            "to": "2026-10-16",
        },
    )
    assert got.status_code == 200, got.text
    variable = Decimal(got.json()["variable_per_render"])
    assert variable == 0, (
        "DEFECT reports/break_even.py observed(): sum(cost_nanos - standard_nanos) over "
        "usage_hourly of every currency: 1.00 EUR of a EUR-priced render is averaged into a "
        f"USD break-even as {variable} USD per render (the USD renders' non-GPU cost is 0)"
    )


def test_fixed_shares_below_a_millionth_still_split(books: Ledger) -> None:
    """Shares that validation accepts (each above zero) are floored to millionths by the
    job; all of them below one millionth makes the overhead the platform's."""
    record(
        books.engine,
        [
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="platform",
                allocate_by="fixed",
                shares={"acme": Decimal("0.0000001"), "globex": Decimal("0.0000003")},
                amount=Decimal(4),
                currency="USD",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(hours=1),
            )
        ],
    )
    run_allocation(books.engine)
    books_balance(books.engine)
    got = (allocated(books.engine, "acme"), allocated(books.engine, "globex"))
    assert got == (10**9, 3 * 10**9), (
        "DEFECT reports/allocation_job.py _fixed_shares: int(Decimal(weight).scaleb(6)) "
        "floors shares to millionths, so shares 1:3 of 1e-7 each become 0:0 and the $4 "
        f"stay on the platform; (acme, globex) got {got}"
    )


def test_late_capacity_alone_is_billed_on_the_next_invoice(books: Ledger) -> None:
    """A finalized month re-allocated by late *capacity* (no late event) must show up as a
    prior-period adjustment; late months are found from the event log only."""
    load_pools(books.engine, [pool(gpus=2)])
    at = datetime(2026, 9, 15, 12, tzinfo=UTC)
    store_fully_loaded_plans(books, "acme", [SEP, OCT], "0.2")
    record(books.engine, [hold(at, gpus="2")])
    books.append([gpu("acme", "3600", at + timedelta(minutes=5))])
    run_allocation(books.engine)
    with connection(books.engine) as raw:
        finalize(raw, "acme", SEP)
    record(books.engine, [hold(at, gpus="1")])  # a third GPU held that hour, recorded late
    run_allocation(books.engine)
    assert allocated(books.engine, "acme") == 3 * GPU_HOUR - 3600 * PER_SECOND
    with connection(books.engine) as raw:
        oct_doc = invoice(raw, "acme", OCT)
    late = [ln for ln in oct_doc.lines if ln.kind == "adjustment" and ln.period == "2026-09"]
    assert [Decimal(ln.quantity) for ln in late] == [Decimal(GPU_HOUR).scaleb(-9)], (
        "DEFECT reports/billing/invoices.py compute/_adjustments: late months come from "
        "late_months() over the event log only, so September's re-allocation by late "
        "capacity (+3.96 USD to acme, alloc_id past the invoice's allocations_through) is "
        f"billed by no invoice, ever; October's September adjustments: {late}"
    )


# -- regressions: attacks the code withstands -----------------------------------------------


LONG_MODEL = "é" * 100 + "模" * 100  # 200 characters, 500 bytes


def test_hostile_history_balances_to_the_nano_and_rebuilds_identically(books: Ledger) -> None:
    early = datetime(2000, 1, 1, tzinfo=UTC)
    books.load_prices(
        parse_price_book(
            'name = "y2k"\neffective_from = 2000-01-01T00:00:00Z\ncurrency = "USD"\n'
            '[prices."gpu.h100.second"]\nunit = "second"\nprice = "0.0011"\n'
            '[prices."render.image"]\nunit = "image"\nprice = "0"\n'
        )
    )
    load_pools(
        books.engine,
        [
            pool(gpus=2, effective="2000-01-01T00:00:00Z"),
            pool(
                "a100-r",
                idle="keep",
                effective="2000-01-01T00:00:00Z",
                payment={"model": "reserved", "per_gpu_month": "1100"},
            ),
            pool(
                "own",
                effective="2025-01-01T00:00:00Z",
                payment={
                    "model": "owned",
                    "purchase_price": "25000",
                    "amortise_months": 36,
                    "power_per_gpu_hour": "0.5",
                },
            ),
            # A second version from mid-hour: spans priced at their start, whole.
            pool(
                "own",
                effective="2026-10-15T12:30:00Z",
                payment={
                    "model": "owned",
                    "purchase_price": "25000",
                    "amortise_months": 36,
                    "power_per_gpu_hour": "1.0",
                },
            ),
        ],
    )
    year_end = datetime(2026, 10, 1, tzinfo=UTC)
    overhead: dict[str, Any] = {
        "currency": "USD",
        "starts_at": HOUR,
        "ends_at": HOUR + timedelta(hours=2),
    }
    record(
        books.engine,
        [
            hold(HOUR, hours=2, gpus="2"),
            hold(early, gpus="0.000001"),
            hold(year_end - timedelta(days=400), hours=400 * 24, gpus="1.5", pool_name="a100-r"),
            hold(HOUR, hours=2, gpus="100000", pool_name="own"),
            OverheadIncurred(
                event_id=uuid.uuid4(), account="platform", amount=Decimal("1e-9"), **overhead
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="platform",
                allocate_by="gpu_seconds",
                amount=Decimal("999999999"),
                **overhead,
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account=f"model:{LONG_MODEL}",
                amount=Decimal("7"),
                **overhead,
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="model:nobody-uses-me",
                amount=Decimal("5"),
                **overhead,
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="platform",
                allocate_by="fixed",
                shares={"acme": Decimal(0), "globex": Decimal("999999999999.999999999999999999")},
                amount=Decimal("3"),
                **overhead,
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="tenant:acme",
                amount=Decimal("1000"),
                currency="USD",
                starts_at=year_end - timedelta(days=400),
                ends_at=year_end,
            ),
            OverheadIncurred(
                event_id=uuid.uuid4(),
                account="platform",
                amount=Decimal("11"),
                currency="EUR",
                starts_at=HOUR,
                ends_at=HOUR + timedelta(microseconds=1),
            ),
        ],
    )
    at = HOUR + timedelta(minutes=5)
    r = uuid.uuid4()
    weird = {"pool": "h100-a", "model": LONG_MODEL}
    books.append(
        [
            gpu("acme", "2400", at, attributes=weird, render=r),
            delivered("acme", at, r, weird),
            gpu(
                "globex",
                "60",
                at,
                attributes={"pool": "H100-A", "model": "'; DROP TABLE allocations; --"},
            ),
            gpu("initech", "60", at, attributes={"pool": "x" * 200, "model": "\u202e\U0001f600"}),
            gpu("acme", "0.000000000000000001", early + timedelta(minutes=30)),
            gpu("acme", "30", at, pool_name="own"),
        ]
    )
    run_allocation(books.engine)
    books_balance(books.engine)
    # A second wave: huge usage, a reversal repeating the pool, usage for the year span.
    big = gpu("globex", "900000000", HOUR + timedelta(hours=1, minutes=1))
    small = gpu("acme", "10", HOUR + timedelta(hours=1, minutes=2))
    books.append(
        [big, small, gpu("initech", "100", year_end - timedelta(days=3), pool_name="a100-r")]
    )
    books.append(
        [
            unet_event(
                "acme",
                small.render_id,
                quantity=small.quantity,
                occurred_at=small.occurred_at,
                reverses=small.event_id,
                attributes={"pool": "h100-a", "model": "sdxl"},
            )
        ]
    )
    run_allocation(books.engine)
    books_balance(books.engine)
    assert allocated(books.engine, "globex") > 0  # the fixed share and the gpu-seconds overhead
    ((platform_model,),) = rows(
        books.engine,
        "SELECT sum(a.amount_nanos) FROM allocations a JOIN actual_costs c "
        "ON a.source = 'overhead:' || c.seq WHERE c.account = 'model:nobody-uses-me' "
        "AND a.tenant_id = ''",
    )
    assert platform_model == 5 * 10**9  # a model no one used: the platform bears it
    written = run_allocation(books.engine, full=True).rows_written
    assert written == 0, f"a rebuild rewrote {written} rows of an unchanged history"
    books_balance(books.engine)
    with connection(books.engine) as raw:
        pools = pool_rows(raw, date(1, 1, 1), date(9999, 12, 31))
        tenants = tenant_rows(raw, date(1, 1, 1), date(9999, 12, 31))
        kept = unallocated(raw, date(1, 1, 1), date(9999, 12, 31))
    assert {p.pool for p in pools} == {"h100-a", "a100-r", "own"}
    assert {t.tenant_id for t in tenants} == {"acme", "globex", "initech"}
    assert set(kept) == {"USD"}  # the EUR overhead went by renders, to acme's one render
    eur = rows(
        books.engine,
        "SELECT tenant_id, sum(amount_nanos) FROM allocations WHERE currency = 'EUR' GROUP BY 1",
    )
    assert eur == [("acme", 11 * 10**9)]
    assert {t.currency for t in tenants if t.tenant_id == "acme"} == {"USD", "EUR"}


def test_http_surface_refuses_hostile_requests_without_a_500(
    api: tuple[httpx.Client, Ledger, str],
) -> None:
    client, ledger, base = api
    tenant_key = create_key(ledger.engine, "acme", ["read", "ingest"], "tenant")
    assert client.put("/v1/pools/h100-a", json=pool().model_dump(mode="json")).status_code == 200
    ledger.append([gpu("acme", "60", HOUR + timedelta(minutes=5))])
    assert client.post("/v1/allocation/run").status_code == 200
    extremes = {"from": "0001-01-01", "to": "9999-12-31"}
    for path, params in [
        ("/v1/pools/report", extremes),
        ("/v1/tenants/acme/fully-loaded", extremes),
        ("/v1/break-even", extremes | {"pool": "h100-a", "api_book": "sdxl-api-0004"}),
        ("/v1/tenants/acme/report", extremes | {"group_by": "use_case"}),
        ("/v1/tenants/acme/report", {"from": "0001-01-02", "to": "9999-12-31", "group_by": "day"}),
    ]:
        got = client.get(path, params=params)
        assert got.status_code == 200, (path, got.status_code, got.text[:300])
    refused: list[tuple[str, str, dict[str, str] | None, Any, int]] = [
        ("GET", "/v1/pools/report", {"from": "2026-13-01", "to": "2026-12-01"}, None, 422),
        ("GET", "/v1/pools/report", {"from": "2026-12-01", "to": "2026-11-01"}, None, 422),
        ("GET", "/v1/pools/report", {"from": "10000-01-01", "to": "10000-02-01"}, None, 422),
        ("GET", "/v1/pools/report", {"from": "-0001-01-01", "to": "2026-01-01"}, None, 422),
        (
            "GET",
            "/v1/break-even",
            extremes | {"pool": "nope", "api_book": "sdxl-api-0004"},
            None,
            404,
        ),
        ("GET", "/v1/break-even", extremes | {"pool": "h100-a", "api_book": "nope"}, None, 404),
        ("GET", "/v1/break-even", extremes | {"pool": "Ünïcode", "api_book": "x"}, None, 422),
        ("GET", "/v1/tenants/ACME/fully-loaded", extremes, None, 422),
        ("PUT", "/v1/pools/x" + "y" * 70, None, pool().model_dump(mode="json"), 422),
        ("PUT", "/v1/pools/h100-b", None, [1, 2, 3], 422),
        ("PUT", "/v1/pools/h100-b", None, {"name": 5}, 422),
        ("PUT", "/v1/pools/h100-b", None, {"gpus": "x" * 10_000}, 422),
        (
            "PUT",
            "/v1/pools/h100-b",
            None,
            pool("h100-b").model_dump(mode="json")
            | {"effective_from": "9999-12-31T23:59:59+14:00"},
            200,
        ),
    ]
    for method, path, query, body, status in refused:
        got = client.request(method, path, params=query, json=body)
        assert got.status_code == status, (method, path, query, got.status_code, got.text[:300])

    def post(payload: Any, raw: bytes | None = None) -> httpx.Response:
        return client.post(
            "/v1/capacity", content=raw if raw is not None else orjson.dumps(payload)
        )

    span = {
        "kind": "capacity",
        "pool": "h100-a",
        "starts_at": HOUR.isoformat(),
        "ends_at": (HOUR + timedelta(hours=1)).isoformat(),
        "gpus": "1",
    }
    over = {
        "kind": "overhead",
        "account": "platform",
        "amount": "1",
        "currency": "USD",
        "starts_at": HOUR.isoformat(),
        "ends_at": (HOUR + timedelta(hours=1)).isoformat(),
    }

    def one(**kw: Any) -> list[dict[str, Any]]:
        base_doc = over if kw.pop("overhead", False) else span
        return [base_doc | {"event_id": str(uuid.uuid4())} | kw]

    bad_bodies: list[tuple[Any, int]] = [
        (one(pool="nope"), 422),
        (one(pool=""), 422),
        (one(pool="é" * 10), 422),
        (one(gpus="0"), 422),
        (one(gpus="NaN"), 422),
        (one(gpus="1e400"), 422),
        (one(gpus=1e308), 422),
        (one(gpus="0.0000001"), 422),
        (one(starts_at="0001-01-01T00:00:00Z", ends_at="0001-01-02T00:00:00Z"), 422),
        (one(starts_at="9999-12-30T00:00:00Z", ends_at="9999-12-31T00:00:00Z"), 422),
        (one(ends_at=(HOUR + timedelta(days=400, microseconds=1)).isoformat()), 422),
        (one(ends_at=HOUR.isoformat()), 422),
        (one(starts_at="2026-10-15T12:00:00"), 422),  # no zone
        (
            one(gpus="100000", starts_at=(HOUR - timedelta(days=200)).isoformat()),
            422,  # costs above 10**18 nanos
        ),
        (one(gpus="sNaN"), 422),
        (one(gpus="Infinity"), 422),
        (one(overhead=True, amount="sNaN"), 422),
        (one(overhead=True, allocate_by="fixed", shares={"acme": "sNaN"}), 422),
        (one(overhead=True, account="model:" + "m" * 201), 422),
        (one(overhead=True, account="model:"), 422),
        (one(overhead=True, account="model:a\x00b"), 422),
        (one(overhead=True, account="tenant:ACME"), 422),
        (one(overhead=True, account="pool:h100-a"), 422),
        (one(overhead=True, amount="-1"), 422),
        (one(overhead=True, amount="1000000000.000000001"), 422),
        (one(overhead=True, currency="usd"), 422),
        (one(overhead=True, allocate_by="fixed", shares={"acme": "0"}), 422),
        (one(overhead=True, allocate_by="fixed", shares={"ACME": "1"}), 422),
        (one(overhead=True, allocate_by="fixed", shares={"acme": "-1"}), 422),
        (one(overhead=True, allocate_by="fixed"), 422),
        (one(overhead=True, allocate_by="direct"), 422),
        (one(overhead=True, account="model:sdxl", allocate_by="fixed", shares={"a": "1"}), 422),
        (one(overhead=True, description="x" * 501), 422),
        (one(overhead=True, kind="nonsense"), 422),
        ({"not": "a list"}, 422),
        ([], 200),
        ([None], 422),
        ([[[[[[]]]]]], 422),
    ]
    for body, status in bad_bodies:
        got = post(body)
        assert got.status_code == status, (body if len(str(body)) < 300 else "…", got.text[:300])
    for raw_body in (b"", b"{", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b"nan"):
        got = post(None, raw_body)
        assert got.status_code in (400, 413, 422), (raw_body[:20], got.status_code, got.text[:200])
    assert post(None, b"[" + b" " * (300 * 1024) + b"]").status_code == 413
    many = [span | {"event_id": str(uuid.uuid4())} for _ in range(10_001)]
    assert post(None, orjson.dumps(many)).status_code == 413
    # The same id with other content is a conflict, not a 500.
    (first,) = one()
    assert post([first]).json()["accepted"] == 1
    assert post([first | {"gpus": "2"}]).status_code == 409
    assert post([first, first]).status_code == 422
    # Every capacity route but a tenant's own fully-loaded cost is an admin's.
    with httpx.Client(
        base_url=base, timeout=30, headers={"authorization": f"Bearer {tenant_key}"}
    ) as tenant:
        assert tenant.get("/v1/tenants/acme/fully-loaded", params=extremes).status_code == 200
        assert tenant.get("/v1/tenants/globex/fully-loaded", params=extremes).status_code == 404
        for method, path in [
            ("GET", "/v1/pools"),
            ("GET", "/v1/pools/report"),
            ("GET", "/v1/break-even"),
            ("PUT", "/v1/pools/h100-a"),
            ("POST", "/v1/capacity"),
            ("POST", "/v1/allocation/run"),
        ]:
            got = tenant.request(method, path, params=extremes)
            assert got.status_code in (401, 403), (method, path, got.status_code)
    assert client.post("/v1/allocation/run").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_capacity_appends_and_runs_in_parallel_skip_nothing(books: Ledger) -> None:
    """Appends to both logs while allocation runs: every actual cost and every event ends up
    allocated once, and a rebuild agrees with the incremental result."""
    load_pools(books.engine, [pool(gpus=4)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def appender() -> None:
        try:
            for i in range(24):
                at = HOUR + timedelta(hours=i % 6, minutes=i)
                record(books.engine, [hold(at, hours=0.5, gpus="1")])
                books.append([gpu(f"t{i % 3}", "100", at + timedelta(minutes=1))])
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def allocator() -> None:
        try:
            while not stop.is_set():
                run_allocation(books.engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=appender),
        *(threading.Thread(target=allocator) for _ in range(2)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert run_allocation(books.engine).ran
    books_balance(books.engine)
    ((cost,),) = rows(books.engine, "SELECT sum(cost_nanos) FROM actual_costs")
    assert cost == 24 * GPU_HOUR // 2
    ((busy,),) = rows(books.engine, "SELECT sum(busy_seconds) FROM usage_hourly")
    assert busy == 2400
    checkpoint = rows(books.engine, "SELECT last_actual_seq FROM allocation_checkpoints")
    assert checkpoint == rows(books.engine, "SELECT max(seq) FROM actual_costs")
    written = run_allocation(books.engine, full=True).rows_written
    assert written == 0, f"a rebuild after concurrent runs rewrote {written} rows"


def test_a_late_reallocation_with_a_late_event_is_billed_once(books: Ledger) -> None:
    load_pools(books.engine, [pool(gpus=2)])
    at = datetime(2026, 9, 15, 12, tzinfo=UTC)
    store_fully_loaded_plans(books, "acme", [SEP, OCT, NOV], "0")
    record(books.engine, [hold(at, gpus="2")])
    books.append([gpu("acme", "3600", at + timedelta(minutes=5))])
    run_allocation(books.engine)
    with connection(books.engine) as raw:
        finalize(raw, "acme", SEP)
    record(books.engine, [hold(at, gpus="1")])
    books.append([gpu("acme", "60", at + timedelta(minutes=6))])  # a late event too
    run_allocation(books.engine)
    with connection(books.engine) as raw:
        oct_doc, _ = finalize(raw, "acme", OCT)
        nov_doc = invoice(raw, "acme", NOV)
    sep_in_oct = sum(
        Decimal(ln.quantity)
        for ln in oct_doc.lines
        if ln.period == "2026-09" and ln.unit.startswith("USD of a")
    )
    assert sep_in_oct == Decimal(GPU_HOUR - 60 * PER_SECOND).scaleb(-9)
    assert not [ln for ln in nov_doc.lines if ln.period == "2026-09"], "billed twice"


def test_a_hostile_schedule_file_is_refused_by_row(books: Ledger) -> None:
    load_pools(books.engine, [pool()])
    header = "pool,start,end,gpus,event_id\n"
    cases = [
        "h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,NaN,",
        "h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,sNaN,",
        f"h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,sNaN,{uuid.uuid4()}",
        f"h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,Infinity,{uuid.uuid4()}",
        "h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,1e400,",
        "h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,-1,",
        "h100-a,2026-10-15T12:00:00,2026-10-15T13:00:00Z,1,",
        "h100-a,2025-01-01T00:00:00Z,2026-02-05T00:00:00.000001Z,1,",
        "H100-A,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,1,",
        "h100-a,0001-01-01T00:00:00Z,0001-01-01T01:00:00Z,1,",
        "h100-a,2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,1,not-a-uuid",
        '"h100-a\x00",2026-10-15T12:00:00Z,2026-10-15T13:00:00Z,1,',
    ]
    for case in cases:
        with pytest.raises(ScheduleInvalid):
            parse_schedule(header + case + "\n")
    records, _ = parse_schedule(
        header + "h100-a,2026-10-15T12:00:00+14:00,2026-10-15T13:00:00+14:00,0.000001,\n"
    )
    assert record(books.engine, records).accepted == 1
    run_allocation(books.engine)
    books_balance(books.engine)


def test_a_book_name_with_a_nul_is_unknown_not_a_500(
    api: tuple[httpx.Client, Ledger, str],
) -> None:
    """Found by the schema fuzz: PostgreSQL refuses to compare a text with a NUL in it."""
    client = api[0]
    params = {"from": "2026-10-01", "to": "2026-11-01"}
    even = client.get("/v1/break-even", params=params | {"pool": "a", "api_book": "x\x00y"})
    assert even.status_code == 404, even.text
    report = client.get("/v1/tenants/acme/report", params=params | {"what_if": "x\x00y"})
    assert report.status_code == 404, report.text
    assert report.json()["detail"]["message"].startswith("what_if:")

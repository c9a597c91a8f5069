"""The append path against a real PostgreSQL: receipts, idempotency, atomicity, reversals."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import database
from ledger.connections import connection
from ledger.errors import BatchInvalid, BatchTooLarge, EventConflict
from ledger.events import CostEvent
from ledger.journal import last_seq, read_after, read_render
from ledger.prices import parse_price_book
from ledger.store import Ledger
from tests.conftest import EventFactory, ledger_with_prices


def _tenant_rows(ledger: Ledger, tenant: str) -> list[tuple[object, ...]]:
    with connection(ledger.engine) as raw:
        return raw.execute(
            "SELECT event_id, cost_nanos FROM cost_events WHERE tenant_id = %s ORDER BY seq",
            (tenant,),
        ).fetchall()


def test_append_rates_and_returns_a_receipt(ledger: Ledger, make_event: EventFactory) -> None:
    events = [make_event(quantity=Decimal("2.5")), make_event(quantity=Decimal("0.000001"))]
    receipt = ledger.append(events)
    assert receipt.accepted == 2
    assert receipt.duplicates == 0
    assert receipt.first_seq is not None
    assert receipt.last_seq == receipt.first_seq + 1
    stored = read_render(ledger.engine, events[0].render_id)
    # $0.0011 per H100 second = 1,100,000 nanos; 2.5 s = 2,750,000 nanos exactly.
    assert [e.cost_nanos for e in stored] == [2_750_000, 1]
    assert {e.block_id for e in stored} == {receipt.block_id}
    assert stored[0].price_version >= 1
    assert stored[0].currency == "USD"


def test_same_content_again_is_a_duplicate_not_a_second_row(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    events = [make_event() for _ in range(3)]
    first = ledger.append(events)
    again = ledger.append(events)
    mixed = ledger.append([*events[:2], make_event()])
    assert (first.accepted, again.accepted, again.duplicates) == (3, 0, 3)
    assert again.block_id is None
    assert (mixed.accepted, mixed.duplicates) == (1, 2)
    assert len(_tenant_rows(ledger, tenant)) == 4


def test_duplicate_inside_one_batch_is_stored_once(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    event = make_event()
    receipt = ledger.append([event, event])
    assert (receipt.accepted, receipt.duplicates) == (1, 1)
    assert len(_tenant_rows(ledger, tenant)) == 1


def test_conflicting_resend_names_every_id_and_writes_nothing(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    a, b = make_event(), make_event()
    ledger.append([a, b])
    changed_a = a.model_copy(update={"quantity": Decimal("9")})
    changed_b = b.model_copy(update={"attributes": {"model": "other"}})
    with pytest.raises(EventConflict) as info:
        ledger.append([make_event(), changed_a, changed_b])
    assert info.value.event_ids == [a.event_id, b.event_id]
    assert str(a.event_id) in str(info.value)
    assert len(_tenant_rows(ledger, tenant)) == 2


def test_unknown_sku_names_sku_and_time_and_writes_nothing(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    with pytest.raises(BatchInvalid) as info:
        ledger.append([make_event(), make_event(sku="gpu.b200.second")])
    (error,) = info.value.errors
    assert (error.index, error.field) == (1, "sku")
    assert "gpu.b200.second" in error.message
    assert "2026-10-15T12:00:00+00:00" in error.message
    assert _tenant_rows(ledger, tenant) == []


def test_event_before_any_price_book_is_unpriced(ledger: Ledger, make_event: EventFactory) -> None:
    early = make_event(occurred_at=datetime(2019, 1, 1, tzinfo=UTC))
    with pytest.raises(BatchInvalid, match=r"no price for SKU 'gpu\.h100\.second' at 2019"):
        ledger.append([early])


def test_oversize_batch_is_refused(ledger: Ledger, make_event: EventFactory) -> None:
    small = Ledger(ledger.engine, max_batch_events=3)
    with pytest.raises(BatchTooLarge):
        small.append([make_event() for _ in range(4)])


def test_the_version_in_force_at_occurred_at_prices_the_event(
    fresh_database: str, make_event: EventFactory
) -> None:
    # A database of its own: a new book in force from an hour ago would reprice other tests.
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    switch = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    text = (Path(__file__).parents[1] / "service" / "books" / "default_prices.toml").read_text()
    newer = text.replace('name = "public-list-2026"', 'name = "newer"').replace(
        "effective_from = 2025-01-01T00:00:00Z", f"effective_from = {switch.isoformat()}"
    )
    newer = newer.replace('price = "0.0011"', 'price = "0.0022"')
    version, created = ledger.load_prices(parse_price_book(newer))
    assert created
    before = make_event(occurred_at=switch - timedelta(microseconds=1))
    after = make_event(occurred_at=switch)
    ledger.append([before, after])
    stored = {e.event_id: e for e in read_render(ledger.engine, before.render_id)}
    assert stored[before.event_id].cost_nanos == 2_750_000
    assert stored[after.event_id].cost_nanos == 5_500_000
    assert stored[after.event_id].price_version == version.version
    # The same file again is a no-op, not a third version.
    assert ledger.load_prices(parse_price_book(newer))[1] is False
    engine.dispose()


def test_reversal_negates_cost_and_only_once(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    original = make_event(quantity=Decimal("3"))
    ledger.append([original])
    reversal = make_event(quantity=Decimal("3"), reverses=original.event_id)
    ledger.append([reversal])
    costs = dict(_tenant_rows(ledger, tenant))
    assert costs[reversal.event_id] == -costs[original.event_id] == -3_300_000
    assert ledger.append([reversal]).duplicates == 1
    with pytest.raises(BatchInvalid, match="already reversed"):
        ledger.append([make_event(quantity=Decimal("3"), reverses=original.event_id)])


def test_reversal_of_unknown_or_mismatched_event_is_refused(
    ledger: Ledger, make_event: EventFactory
) -> None:
    with pytest.raises(BatchInvalid, match="not in the ledger") as info:
        ledger.append([make_event(reverses=uuid.uuid4())])
    assert info.value.errors[0].field == "reverses"
    original = make_event(quantity=Decimal("3"))
    ledger.append([original])
    with pytest.raises(BatchInvalid, match="repeat the reversed event's quantity"):
        ledger.append([make_event(quantity=Decimal("1"), reverses=original.event_id)])


def test_reversal_of_an_event_earlier_in_the_same_batch(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    original = make_event()
    reversal = make_event(reverses=original.event_id)
    assert ledger.append([original, reversal]).accepted == 2
    assert sum(cost for _, cost in _tenant_rows(ledger, tenant)) == 0


# Up to a million units: every SKU then stays under the per-event cost limit.
quantities = st.decimals(min_value=0, max_value=Decimal("1e6"), places=9, allow_nan=False)
skus = st.sampled_from(
    ["gpu.h100.second", "llm.gpt-4o-mini.input_token", "s3.standard.gb_month", "cdn.egress.gb"]
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(st.tuples(skus, quantities), min_size=1, max_size=40))
def test_rating_is_exact(ledger: Ledger, items: list[tuple[str, Decimal]]) -> None:
    """Stored costs sum to the exactly computed costs, each rounded half-even once."""
    tenant = f"h-{uuid.uuid4().hex[:12]}"
    render = uuid.uuid4()
    at = datetime(2026, 10, 1, tzinfo=UTC)
    events = [
        CostEvent(
            event_id=uuid.uuid4(),
            tenant_id=tenant,
            use_case="social",
            render_id=render,
            stage="unet",
            sku=sku,
            quantity=q,
            occurred_at=at,
        )
        for sku, q in items
    ]
    ledger.append(events)
    book = ledger.price_book().in_force(at)
    assert book is not None
    expected = 0
    for sku, q in items:
        exact = Fraction(q) * Fraction(book.prices[sku].unit_price_nanos)
        expected += round(exact)  # Python rounds Fractions half-to-even
    assert sum(cost for _, cost in _tenant_rows(ledger, tenant)) == expected


def test_concurrent_appenders_lose_nothing_and_a_follower_misses_nothing(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    threads, batches, size = 4, 15, 40
    start_seq = last_seq(ledger.engine)
    produced: list[uuid.UUID] = []
    lock = threading.Lock()
    seen: list[int] = []
    done = threading.Event()

    def produce() -> None:
        for _ in range(batches):
            batch = [make_event() for _ in range(size)]
            ledger.append(batch)
            with lock:
                produced.extend(e.event_id for e in batch)

    def follow() -> None:
        position = start_seq
        for _ in range(10_000):  # bounded: stops by itself even if producers hang
            finished = done.is_set()
            page = read_after(ledger.engine, position, 500, tenant_id=None)
            for event in page:
                if event.tenant_id == tenant:
                    seen.append(event.seq)
                assert event.seq == position + 1, "a follower by seq saw a gap"
                position = event.seq
            if finished and not page:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    follower.join(timeout=60)
    stored = [eid for eid, _ in _tenant_rows(ledger, tenant)]
    assert sorted(stored) == sorted(produced)
    assert len(stored) == threads * batches * size
    assert len(seen) == len(stored)

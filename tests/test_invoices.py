"""Invoices against a real PostgreSQL: reconciliation, lifecycle, late events, credits."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.store import Ledger
from reports.billing.credit_notes import issue_credit_note
from reports.billing.document import Invoice
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import draft_all, finalize, invoice, list_invoices
from reports.billing.plans import CreditGrant, Plan, PlanError, parse_plan, store_grant, store_plan
from tests.billing_helpers import add_renders

OCT = date(2026, 10, 1)
SEP = date(2026, 9, 1)
NOV = date(2026, 11, 1)


def _store(engine: Engine, *items: Plan | CreditGrant) -> None:
    with connection(engine, transaction=True) as raw:
        for item in items:
            if isinstance(item, Plan):
                store_plan(raw, item)
            else:
                store_grant(raw, item)


def _series(number: str | None) -> int:
    """The position of a document in the issuer's one series (``RL-<year>-<n>``)."""
    assert number is not None
    return int(number.rsplit("-", 1)[1])


def _sum_of_events(engine: Engine, tenant: str, start: datetime, end: datetime) -> int:
    with connection(engine) as raw:
        row = raw.execute(
            "SELECT coalesce(sum(cost_nanos), 0) FROM cost_events WHERE tenant_id = %s "
            "AND occurred_at >= %s AND occurred_at < %s",
            (tenant, start, end),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _doc(engine: Engine, tenant: str, period: date) -> Invoice:
    with connection(engine) as raw:
        return invoice(raw, tenant, period)


def test_cost_basis_reconciles_to_the_nano(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 1, 0, 0, tzinfo=UTC), 3, seconds="1.000000003")
    add_renders(ledger, tenant, datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 2, seconds="7.77")
    add_renders(ledger, tenant, datetime(2026, 10, 12, tzinfo=UTC), 1, outcome="failed")
    add_renders(ledger, tenant, datetime(2026, 11, 1, tzinfo=UTC), 4)  # next month
    add_renders(ledger, tenant, datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC), 4)  # the one before
    doc = _doc(ledger.engine, tenant, OCT)
    expected = _sum_of_events(
        ledger.engine, tenant, datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )
    basis = doc.cost_basis
    assert basis.metered_nanos == expected > 0
    assert basis.renders == {"delivered": 5, "failed": 1}
    # The default plan bills at cost and leaves failed renders to the platform.
    assert basis.billed_nanos + basis.not_billed_nanos == expected
    assert basis.not_billed_nanos > 0
    exact = sum((Decimal(line.exact) for line in doc.lines), Decimal(0))
    assert exact == Decimal(basis.billed_nanos).scaleb(-9)
    assert Decimal(doc.total) == exact.quantize(Decimal("0.01"))
    assert doc.status == "draft"
    assert doc.number is None


def test_tenant_time_zone_moves_the_month(ledger: Ledger, tenant: str) -> None:
    _store(ledger.engine, Plan(tenant=tenant, effective_from=SEP, timezone="America/New_York"))
    # 02:00 UTC on 1 October is still 30 September in New York.
    add_renders(ledger, tenant, datetime(2026, 10, 1, 2, tzinfo=UTC), 2)
    add_renders(ledger, tenant, datetime(2026, 11, 1, 2, tzinfo=UTC), 3)
    oct_doc = _doc(ledger.engine, tenant, OCT)
    assert oct_doc.cost_basis.renders == {"delivered": 3}
    assert oct_doc.window.start == "2026-10-01T04:00:00+00:00"
    assert _doc(ledger.engine, tenant, SEP).cost_basis.renders == {"delivered": 2}


def test_per_image_tiers_commitment_and_credits(ledger: Ledger, tenant: str) -> None:
    plan = parse_plan(
        {
            "tenant": tenant,
            "effective_from": "2026-09-01",
            "currency": "USD",
            "minimum_commitment": "1.00",
            "default": {"markup": "0.25"},
            "use_cases": {
                "ecommerce": {"tiers": [{"up_to": 3, "unit_price": "0.04"}, {"unit_price": "0.03"}]}
            },
        }
    )
    _store(
        ledger.engine,
        plan,
        CreditGrant(tenant=tenant, id="prepay", amount=Decimal("0.10"), granted_on=SEP),
    )
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC), 5, use_case="ecommerce")
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC), 1, use_case="social")
    doc = _doc(ledger.engine, tenant, OCT)
    by = {(ln.use_case, ln.tier): ln for ln in doc.lines if ln.kind == "usage"}
    assert by["ecommerce", 0].quantity == "3"
    assert by["ecommerce", 0].amount == "0.12"
    assert by["ecommerce", 1].quantity == "2"
    assert by["ecommerce", 1].amount == "0.06"
    social = by["social", None]
    assert Decimal(social.unit_price) == Decimal("1.25")
    subtotal = Decimal("0.18") + Decimal(social.amount)
    assert Decimal(doc.subtotal) == subtotal
    assert Decimal(doc.commitment_topup) == Decimal("1.00") - subtotal
    assert doc.credits_applied == "0.10"
    # Credits pay the invoice: the total is the month's charge, the amount due what is left.
    assert doc.total == "1.00"
    assert doc.amount_due == "0.90"


def test_finalize_is_idempotent_and_immutable(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 9, tzinfo=UTC), 2)
    with connection(ledger.engine) as raw:
        first, created = finalize(raw, tenant, OCT)
        again, created_again = finalize(raw, tenant, OCT)
    assert created
    assert not created_again
    assert first == again
    assert re.fullmatch(r"RL-\d{4}-\d{6}", first.number or ""), first.number
    assert first.status == "finalized"
    add_renders(ledger, tenant, datetime(2026, 10, 20, tzinfo=UTC), 3)  # late
    assert _doc(ledger.engine, tenant, OCT) == first
    with connection(ledger.engine) as raw, pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("UPDATE invoices SET total_minor = 0 WHERE tenant_id = %s", (tenant,))


def test_late_event_is_a_prior_period_adjustment(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 9, 9, tzinfo=UTC), 2, seconds="900")
    with connection(ledger.engine) as raw:
        sep, _ = finalize(raw, tenant, SEP)
    add_renders(ledger, tenant, datetime(2026, 9, 29, tzinfo=UTC), 1, seconds="900")  # late
    add_renders(ledger, tenant, datetime(2026, 10, 2, tzinfo=UTC), 4)
    with connection(ledger.engine) as raw:
        oct_doc, _ = finalize(raw, tenant, OCT)
    adjustments = [ln for ln in oct_doc.lines if ln.kind == "adjustment"]
    assert [ln.period for ln in adjustments] == ["2026-09"]
    one_render = Decimal(sep.subtotal) / 2
    assert abs(Decimal(oct_doc.adjustments) - one_render) <= Decimal("0.01")
    assert _series(oct_doc.number) > _series(sep.number)
    assert oct_doc.positions.adjustments_after_seq == sep.positions.through_seq
    # Nothing late since October's finalization: November carries no adjustment.
    with connection(ledger.engine) as raw:
        nov = invoice(raw, tenant, NOV)
    assert nov.adjustments == "0.00"


def test_months_are_finalized_in_order_and_only_when_over(ledger: Ledger, tenant: str) -> None:
    with connection(ledger.engine) as raw:
        finalize(raw, tenant, SEP)
        with pytest.raises(InvoiceError, match="finalize 2026-10 first"):
            finalize(raw, tenant, NOV, now=datetime(2027, 1, 1, tzinfo=UTC))
        with pytest.raises(InvoiceError, match="not over"):
            finalize(raw, tenant, OCT, now=datetime(2026, 10, 31, tzinfo=UTC))


def test_credit_notes_never_exceed_the_invoice(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 9, tzinfo=UTC), 40)
    with connection(ledger.engine) as raw:
        with pytest.raises(InvoiceError, match="no finalized invoice"):
            issue_credit_note(raw, tenant, OCT, Decimal("0.01"), "goodwill")
        doc, _ = finalize(raw, tenant, OCT)
        total = Decimal(doc.total)
        note = issue_credit_note(raw, tenant, OCT, total - Decimal("0.01"), "outage")
        assert _series(note.number) > _series(doc.number)  # the same one series
        with pytest.raises(InvoiceError, match="exceed"):
            issue_credit_note(raw, tenant, OCT, Decimal("0.02"), "more")
        listed = list_invoices(raw, tenant)
    assert listed[0].credit_notes[0].amount_minor == int((total - Decimal("0.01")) * 100)


def test_batch_drafts_equal_single_drafts(ledger: Ledger, tenant: str) -> None:
    others = [f"{tenant}-{i}" for i in range(3)]
    _store(ledger.engine, Plan(tenant=others[1], effective_from=OCT, timezone="Asia/Tokyo"))
    for i, t in enumerate(others):
        add_renders(ledger, t, datetime(2026, 10, 1 + i, tzinfo=UTC), 2 + i)
    with connection(ledger.engine) as raw:
        batch = draft_all(raw, OCT, tenants=others)
        single = [invoice(raw, t, OCT) for t in others]
    assert batch == single


def test_a_tenant_read_by_keys_equals_the_month_scan(ledger: Ledger, tenant: str) -> None:
    """A few tenants' usage is found through event_keys, many tenants' by a scan of the
    month: the same usage either way, nothing outside the window or another tenant's."""
    from ledger.journal import head as journal_head
    from reports.billing.usage import _BY_KEYS, read_usage, window_of

    other = f"{tenant}-other"
    add_renders(ledger, tenant, datetime(2026, 10, 3, tzinfo=UTC), 3)
    add_renders(ledger, tenant, datetime(2026, 10, 9, tzinfo=UTC), 1, outcome="failed")
    add_renders(ledger, tenant, datetime(2026, 11, 1, tzinfo=UTC), 2)  # outside the window
    add_renders(ledger, other, datetime(2026, 10, 3, tzinfo=UTC), 4)
    many = [tenant, other, *(f"{tenant}-absent-{i}" for i in range(_BY_KEYS))]
    with connection(ledger.engine) as raw:
        window = window_of(raw, tenant, OCT)
        head = journal_head(raw)
        by_keys = read_usage(raw, window, head, tenants=[tenant])
        scanned = read_usage(raw, window, head, tenants=many)
    assert by_keys[tenant] == scanned[tenant]
    assert sum(u.renders for u in by_keys[tenant]) == 4
    assert set(by_keys) == {tenant}


def test_plan_files_are_checked_before_anything_is_stored(ledger: Ledger, tenant: str) -> None:
    with pytest.raises(PlanError, match="first day of a month"):
        parse_plan({"tenant": tenant, "effective_from": "2026-10-02"})
    with pytest.raises(PlanError, match="only the last tier"):
        parse_plan(
            {
                "tenant": tenant,
                "effective_from": "2026-10-01",
                "default": {"tiers": [{"unit_price": "1"}, {"unit_price": "2"}]},
            }
        )
    _store(ledger.engine, Plan(tenant=tenant, effective_from=OCT))
    _store(ledger.engine, Plan(tenant=tenant, effective_from=OCT))  # the same again: a no-op
    with pytest.raises(PlanError, match="different plan"):
        _store(
            ledger.engine,
            Plan(tenant=tenant, effective_from=OCT, currency="EUR", usd_rate=Decimal("0.9")),
        )


# A finalized document as stored before the document had a type, byte for byte what the
# invoices table holds: it must load, write back the same JSON and hash to the same digest.
STORED = {
    "adjustments": "0.00",
    "commitment_topup": "4.85",
    "content_sha256": "4a44ad15ec2b71b7b3c35ec4beccd4d1ec04df1aaa9c380f4453e61f0e64ed9d",
    "cost_basis": {
        "events": 6,
        "metered": "0.008250000",
        "renders": {"delivered": 3},
        "currency": "USD",
        "by_use_case": {"ecommerce": 8250000},
        "billed_nanos": 8250000,
        "metered_nanos": 8250000,
        "not_billed_nanos": 0,
    },
    "credits_applied": "2.00",
    "credits_applied_minor": 200,
    "currency": "USD",
    "issued_on": "2027-01-01",
    "lines": [
        {
            "kind": "usage",
            "tier": 0,
            "unit": "image",
            "exact": "0.15",
            "amount": "0.15",
            "period": None,
            "quantity": "3",
            "rounding": "0",
            "use_case": "ecommerce",
            "unit_price": "0.05",
            "description": "ecommerce: images 1–3",
            "amount_minor": 15,
        },
        {
            "kind": "commitment",
            "tier": None,
            "unit": "month",
            "exact": "4.85",
            "amount": "4.85",
            "period": None,
            "quantity": "1",
            "rounding": "0",
            "use_case": "",
            "unit_price": "4.85",
            "description": "minimum monthly commitment of 5 USD",
            "amount_minor": 485,
        },
    ],
    "number": "RL-2026-08-0001",
    "period": "2026-08",
    "plan": {
        "name": "Growth <b>",
        "sha256": "0a6633ba18d64cd9f71f5fe95790b302bcc16a933e2c79994dc29d8c6f3a089a",
        "effective_from": "2026-08-01",
        "failed_renders": "billed",
    },
    "positions": {"last_seq": 6, "first_seq": 1, "through_seq": 132, "adjustments_after_seq": None},
    "status": "finalized",
    "subtotal": "0.15",
    "tenant": "snap-a",
    "timezone": "America/New_York",
    "total": "3.00",
    "total_minor": 300,
    "window": {"end": "2026-09-01T04:00:00+00:00", "start": "2026-08-01T04:00:00+00:00"},
}


def test_a_document_stored_before_it_had_a_type_loads_and_seals_the_same() -> None:
    doc = Invoice.model_validate(STORED)
    assert doc.stored() == STORED
    assert doc.sealed().content_sha256 == STORED["content_sha256"]
    assert doc.credit_notes == []


def test_one_gapless_series_across_tenants_even_at_once(ledger: Ledger) -> None:
    """Concurrent finalizes of different tenants get distinct, consecutive numbers."""
    import threading
    import uuid

    tenants = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(6)]
    for t in tenants:
        add_renders(ledger, t, datetime(2026, 10, 9, tzinfo=UTC), 1)
    numbers: list[str] = []

    def one(tenant: str) -> None:
        with connection(ledger.engine) as raw:
            doc, _ = finalize(raw, tenant, OCT)
        assert doc.number is not None
        numbers.append(doc.number)

    threads = [threading.Thread(target=one, args=(name,)) for name in tenants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    positions = sorted(_series(n) for n in numbers)
    assert len(positions) == len(tenants)
    assert positions == list(range(positions[0], positions[0] + len(tenants)))
    with connection(ledger.engine) as raw, pytest.raises(psycopg.errors.InsufficientPrivilege):
        raw.execute("DELETE FROM document_numbers")

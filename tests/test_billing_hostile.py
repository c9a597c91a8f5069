"""Issue 11's billing findings: month boundaries under time-zone changes, months that fall
between invoices, markup in PDF text, and months outside any reasonable range."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from typer.testing import CliRunner

from ledger.connections import connection
from ledger.store import Ledger
from reports.billing.document import Invoice, InvoiceWindow
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import Prepared, draft_all, finalize, invoice
from reports.billing.months import Window, next_month, window
from reports.billing.plans import Plan, store_plan
from service.cli.main import app
from tests.billing_helpers import add_renders

AUG, SEP, OCT, NOV = (date(2026, m, 1) for m in (8, 9, 10, 11))
LATER = datetime(2027, 1, 1, tzinfo=UTC)


def _zones() -> list[str]:
    out = []
    for name in sorted(available_timezones()):
        try:
            ZoneInfo(name)
        except (OSError, ValueError):
            continue
        out.append(name)
    return out


ZONES = st.sampled_from(_zones())


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[date], list[str], list[str], range]:
    """Consecutive months; each month's plan zone when it was finalized and now (plans may
    change after a finalization); and which months were finalized (a consecutive run)."""
    first = date(draw(st.integers(2000, 2990)), draw(st.integers(1, 12)), 1)
    months = [first]
    for _ in range(draw(st.integers(2, 14))):
        months.append(next_month(months[-1]))
    months.append(next_month(months[-1]))  # the month after: its zone ends the last window
    then = [draw(ZONES) for _ in months]
    now = [draw(ZONES) if draw(st.booleans()) else z for z in then]
    lo = draw(st.integers(0, len(months) - 2))
    hi = draw(st.integers(lo, len(months) - 2))
    return months, then, now, range(lo, hi if draw(st.booleans()) else lo)


@settings(max_examples=300, deadline=None)
@given(histories(), st.lists(st.floats(0, 1), min_size=1, max_size=20))
def test_windows_of_consecutive_months_meet_exactly(
    history: tuple[list[date], list[str], list[str], range], fractions: list[float]
) -> None:
    months, then, now, final = history
    recorded: dict[date, tuple[datetime, datetime]] = {}
    for i in final:  # finalized in order, under the zones of the time
        w = window(months[i], dict(zip(months, then, strict=True)).__getitem__, recorded)
        recorded[months[i]] = (w.start, w.end)
    zone_now = dict(zip(months, now, strict=True)).__getitem__
    windows: list[Window] = [window(m, zone_now, recorded) for m in months[:-1]]
    for w in windows:
        assert w.start < w.end
        if w.period in recorded:
            assert (w.start, w.end) == recorded[w.period]
    for a, b in itertools.pairwise(windows):
        assert a.end == b.start
    # Every instant from the first window's start to the last one's end: exactly one month.
    span = windows[-1].end - windows[0].start
    for f in fractions:
        at = windows[0].start + span * f
        if at < windows[-1].end:
            assert sum(w.start <= at < w.end for w in windows) == 1


def _store(ledger: Ledger, *plans: Plan) -> None:
    with connection(ledger.engine, transaction=True) as raw:
        for plan in plans:
            store_plan(raw, plan)


def _renders(doc: Invoice) -> int:
    return sum(doc.cost_basis.renders.values())


@pytest.mark.parametrize(
    ("sep_zone", "oct_zone", "boundary", "in_sep"),
    [
        # October begins at October's own midnight: UTC's, then New York's.
        ("America/New_York", "UTC", "2026-10-01T00:00:00+00:00", 0),
        ("UTC", "America/New_York", "2026-10-01T04:00:00+00:00", 1),
    ],
)
def test_a_time_zone_change_bills_the_boundary_render_once(
    ledger: Ledger, tenant: str, sep_zone: str, oct_zone: str, boundary: str, in_sep: int
) -> None:
    _store(
        ledger,
        Plan(tenant=tenant, effective_from=SEP, timezone=sep_zone),
        Plan(tenant=tenant, effective_from=OCT, timezone=oct_zone),
    )
    add_renders(ledger, tenant, datetime(2026, 10, 1, 2, tzinfo=UTC))
    with connection(ledger.engine) as raw:
        single = [invoice(raw, tenant, p) for p in (SEP, OCT)]
        batch = [draft_all(raw, p, [tenant])[0] for p in (SEP, OCT)]
    assert single == batch
    sep, oct_ = single
    assert sep.window.end == oct_.window.start == boundary
    assert (_renders(sep), _renders(oct_)) == (in_sep, 1 - in_sep)


def test_a_finalized_window_stays_when_the_next_plan_changes_zone(
    ledger: Ledger, tenant: str
) -> None:
    _store(ledger, Plan(tenant=tenant, effective_from=SEP, timezone="America/New_York"))
    add_renders(ledger, tenant, datetime(2026, 10, 1, 2, tzinfo=UTC))  # still September in NY
    with connection(ledger.engine) as raw:
        sep, _ = finalize(raw, tenant, SEP, now=LATER)
    assert sep.window.end == "2026-10-01T04:00:00+00:00"
    assert _renders(sep) == 1
    _store(ledger, Plan(tenant=tenant, effective_from=OCT, timezone="UTC"))
    with connection(ledger.engine) as raw:
        oct_ = invoice(raw, tenant, OCT)
    assert oct_.window == InvoiceWindow(
        start="2026-10-01T04:00:00+00:00",  # where the finalized September ended
        end="2026-11-01T00:00:00+00:00",
    )
    assert _renders(oct_) == 0


def test_first_invoice_is_refused_while_an_earlier_month_has_usage(
    ledger: Ledger, tenant: str
) -> None:
    _store(ledger, Plan(tenant=tenant, effective_from=AUG, timezone="America/New_York"))
    add_renders(ledger, tenant, datetime(2026, 9, 1, 2, tzinfo=UTC))  # 31 August in New York
    add_renders(ledger, tenant, datetime(2026, 9, 15, tzinfo=UTC), 2)
    with connection(ledger.engine) as raw:
        with pytest.raises(InvoiceError, match="2026-08 has usage and is not finalized"):
            finalize(raw, tenant, SEP, now=LATER)
        aug, _ = finalize(raw, tenant, AUG, now=LATER)
        sep, created = finalize(raw, tenant, SEP, now=LATER)
    assert created
    assert (_renders(aug), _renders(sep)) == (1, 2)


def test_late_usage_before_the_first_invoice_is_billed_once_as_an_adjustment(
    ledger: Ledger, tenant: str
) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC))
    with connection(ledger.engine) as raw:
        finalize(raw, tenant, OCT, now=LATER)
    add_renders(ledger, tenant, datetime(2026, 9, 20, tzinfo=UTC), seconds="900")  # late
    with connection(ledger.engine) as raw:
        with pytest.raises(InvoiceError, match="billed as a prior-period adjustment"):
            finalize(raw, tenant, SEP, now=LATER)
        sep_cost = invoice(raw, tenant, SEP).cost_basis.billed_nanos
        nov, _ = finalize(raw, tenant, NOV, now=LATER)
        dec = invoice(raw, tenant, date(2026, 12, 1))
    lines = [ln for ln in nov.lines if ln.kind == "adjustment"]
    assert [ln.period for ln in lines] == ["2026-09"]
    assert Decimal(nov.adjustments) == round(Decimal(sep_cost).scaleb(-9), 2) > 0
    assert dec.adjustments == "0.00"  # billed once


def test_a_batch_draft_made_stale_by_a_finalization_is_recomputed(
    ledger: Ledger, tenant: str
) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC))
    with connection(ledger.engine) as raw:
        stale = draft_all(raw, OCT, [tenant])[0]  # drafted before September was final
        sep, _ = finalize(raw, tenant, SEP, now=LATER)
        oct_, _ = finalize(raw, tenant, OCT, now=LATER, prepared=Prepared(stale, None))
    assert stale.positions.adjustments_after_seq is None
    assert oct_.positions.adjustments_after_seq == sep.positions.through_seq


def test_api_and_cli_refuse_a_first_invoice_after_unbilled_usage(
    ledger: Ledger, tenant: str, http: httpx.Client, cli: CliRunner
) -> None:
    add_renders(ledger, tenant, datetime(2026, 8, 20, tzinfo=UTC))
    add_renders(ledger, tenant, datetime(2026, 9, 20, tzinfo=UTC))
    refused = http.post(f"/v1/tenants/{tenant}/invoices/2026-09/finalize")
    assert refused.status_code == 409
    message = refused.json()["detail"]["message"]
    assert "2026-08 has usage and is not finalized; finalize 2026-08 first" in message
    result = cli.invoke(app, ["invoice", "finalize", "--month", "2026-09", "--tenant", tenant])
    assert result.exit_code == 1
    assert "finalize 2026-08 first" in result.output
    assert http.get(f"/v1/tenants/{tenant}/invoices").json() == []  # nothing written
    assert http.post(f"/v1/tenants/{tenant}/invoices/2026-08/finalize").status_code == 201
    assert http.post(f"/v1/tenants/{tenant}/invoices/2026-09/finalize").status_code == 201


HOSTILE_NAME = '<img src="/etc/passwd"/> & <b>bold</b> <font size=90>'


def test_markup_in_a_plan_name_prints_as_itself_in_the_pdf(
    ledger: Ledger, tenant: str, http: httpx.Client
) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC))
    put = http.put(f"/v1/tenants/{tenant}/plans/2026-10-01", json={"name": HOSTILE_NAME})
    assert put.status_code == 201, put.text
    for path in ("invoices/2026-10", "invoices/2026-10/finalize"):
        if path.endswith("finalize"):
            assert http.post(f"/v1/tenants/{tenant}/{path}").status_code == 201
            path = "invoices/2026-10"
        pdf = http.get(f"/v1/tenants/{tenant}/{path}", params={"format": "pdf"})
        assert pdf.status_code == 200, pdf.text
        text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
        assert HOSTILE_NAME in text
        assert "root:" not in text


@pytest.mark.parametrize("name", ["nul\x00byte", "line\nbreak", "x" * 201])
def test_a_plan_name_jsonb_or_a_pdf_cannot_hold_is_a_422(
    http: httpx.Client, tenant: str, name: str
) -> None:
    put = http.put(f"/v1/tenants/{tenant}/plans/2026-10-01", json={"name": name})
    assert put.status_code == 422
    assert put.json()["detail"]["message"].startswith("plan.name")
    assert http.get(f"/v1/tenants/{tenant}/plans").status_code == 404  # not even the tenant


@pytest.mark.parametrize(
    "month", ["9999-12", "0000-01", "0001-01", "1000-06", "1999-11", "3000-01"]
)
def test_months_out_of_range_are_422_on_every_billing_endpoint(
    ledger: Ledger, http: httpx.Client, tenant: str, month: str
) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC))  # a tenant that exists
    calls = [
        http.get(f"/v1/tenants/{tenant}/invoices/{month}"),
        http.get(f"/v1/tenants/{tenant}/invoices/{month}", params={"format": "pdf"}),
        http.post(f"/v1/tenants/{tenant}/invoices/{month}/finalize"),
        http.post(
            f"/v1/tenants/{tenant}/invoices/{month}/credit-notes",
            json={"amount": "1.00", "reason": "x"},
        ),
    ]
    for response in calls:
        assert response.status_code == 422, (response.request.url, response.text)
        detail = response.json()["detail"]
        assert detail["errors"][0]["field"] == "path.month"
        assert "month:" in detail["message"]


@pytest.mark.parametrize("day", ["9999-12-01", "0001-01-01", "1999-11-01", "3000-01-01"])
def test_plan_dates_out_of_range_are_422(http: httpx.Client, tenant: str, day: str) -> None:
    put = http.put(f"/v1/tenants/{tenant}/plans/{day}", json={})
    assert put.status_code == 422, put.text
    assert "effective_from" in put.json()["detail"]["message"]


@pytest.mark.parametrize("month", ["1999-12", "2999-12"])
def test_the_first_and_last_billing_months_answer(
    http: httpx.Client, tenant: str, month: str
) -> None:
    add = http.put(f"/v1/tenants/{tenant}/plans/{month}-01", json={"timezone": "Etc/GMT-14"})
    assert add.status_code == 201, add.text
    doc = http.get(f"/v1/tenants/{tenant}/invoices/{month}")
    assert doc.status_code == 200, doc.text
    assert http.get(f"/v1/tenants/{tenant}/invoices/{month}?format=pdf").status_code == 200
    early = http.post(f"/v1/tenants/{tenant}/invoices/{month}/finalize")
    assert early.status_code == (201 if month < "2026" else 409), early.text


def test_cli_refuses_months_out_of_range(cli: CliRunner, tenant: str, tmp_path: Path) -> None:
    shown = cli.invoke(app, ["invoice", "show", "--tenant", tenant, "--month", "9999-12"])
    assert shown.exit_code == 2
    assert "outside the billing months" in shown.output
    plans = tmp_path / "plans.toml"
    plans.write_text(f'[[plan]]\ntenant = "{tenant}"\neffective_from = 9999-12-01\n')
    loaded = cli.invoke(app, ["plans", "load", str(plans)])
    assert loaded.exit_code == 1
    assert "plan[0].effective_from" in loaded.output


def test_window_end_is_a_day_at_most_from_utc() -> None:
    """A sanity bound the month lookup relies on: a window is its UTC month ± a day."""
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"):
        w = window(OCT, {OCT: zone, NOV: zone}.__getitem__, {})
        assert abs(w.start - datetime(2026, 10, 1, tzinfo=UTC)) <= timedelta(days=1)

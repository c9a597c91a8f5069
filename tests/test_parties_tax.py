"""Billing profiles, tax, the customer's copy and the billing events, on a real database."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ledger.connections import connection
from ledger.store import Ledger
from reports.billing.credit_notes import issue_credit_note
from reports.billing.document import Invoice
from reports.billing.invoices import InvoiceError
from reports.billing.lifecycle import draft_all, finalize, invoice
from reports.billing.listing import list_all
from reports.billing.parties import (
    BillingProfile,
    Issuer,
    ProfileError,
    TaxRate,
    parse_profile,
    store_profile,
)
from reports.billing.plans import CreditGrant, Plan, Pricing, Tier, store_grant, store_plan
from reports.billing.tax import tax_lines
from reports.billing.views import customer_view
from service.cli.main import app
from service.http.app import create_app
from service.settings import Settings
from tests.billing_helpers import add_renders
from tests.conftest import serving

OCT = date(2026, 10, 1)
ISSUER = Issuer(legal_name="Pixel Works SAS", address=("3 quai Y", "69002 Lyon"), country="FR")
NOW = datetime(2026, 11, 3, 9, tzinfo=UTC)


def _profile(tenant: str, on: date = date(2026, 9, 1), **terms: Any) -> BillingProfile:
    base: dict[str, Any] = {
        "tenant": tenant,
        "effective_from": on,
        "legal_name": "Customer One SA",
        "address": ["10 Main St"],
        "country": "FR",
        "tax_id": "FR00123456789",
        "payment_terms_days": 30,
        "tax_rates": [{"label": "VAT", "percent": "20"}],
    }
    return parse_profile(base | terms)


def _setup(ledger: Ledger, tenant: str, *profiles: BillingProfile, credit: str = "0.50") -> None:
    """3 images at 0.05 under a 1.00 commitment: net 1.00 whatever the metered cost."""
    plan = Plan(
        tenant=tenant,
        effective_from=date(2026, 9, 1),
        name="Per image",
        currency="EUR",
        minimum_commitment=Decimal("1.00"),
        default=Pricing(tiers=(Tier(unit_price=Decimal("0.05")),)),
    )
    grant = CreditGrant(
        tenant=tenant, id="prepay", amount=Decimal(credit), currency="EUR", granted_on=OCT
    )
    with connection(ledger.engine, transaction=True) as raw:
        store_plan(raw, plan)
        store_grant(raw, grant)
        for p in profiles:
            store_profile(raw, p)
    add_renders(ledger, tenant, datetime(2026, 10, 7, tzinfo=UTC), 3)


def test_tax_rounds_once_half_even_per_rate() -> None:
    half = [TaxRate(label="T", percent=Decimal(50))]
    assert [t.amount_minor for t in tax_lines(1, half, 2)] == [0]  # 0.5 to even: 0
    assert [t.amount_minor for t in tax_lines(3, half, 2)] == [2]  # 1.5 to even: 2
    assert [t.amount_minor for t in tax_lines(-3, half, 2)] == [-2]
    vat = [TaxRate(label="VAT", percent=Decimal(19)), TaxRate(label="City", percent=Decimal("0.5"))]
    lines = tax_lines(1234, vat, 2)
    assert [(t.label, t.amount, t.base) for t in lines] == [
        ("VAT", "2.34", "12.34"),  # 234.46 minor
        ("City", "0.06", "12.34"),  # 6.17 minor
    ]


def test_invoice_carries_parties_tax_terms_and_amount_due(ledger: Ledger, tenant: str) -> None:
    _setup(ledger, tenant, _profile(tenant))
    with connection(ledger.engine) as raw:
        doc, _ = finalize(raw, tenant, OCT, now=NOW, issuer=ISSUER)
    assert doc.issuer is not None
    assert doc.issuer.legal_name == "Pixel Works SAS"
    assert doc.customer is not None
    assert doc.customer.legal_name == "Customer One SA"
    assert (doc.subtotal, doc.commitment_topup, doc.net) == ("0.15", "0.85", "1.00")
    assert doc.taxes
    assert [(t.label, t.amount) for t in doc.taxes] == [("VAT", "0.20")]
    # Credits are a payment: applied after tax, so they never lower it.
    assert (doc.tax, doc.total, doc.credits_applied, doc.amount_due) == (
        "0.20",
        "1.20",
        "0.50",
        "0.70",
    )
    assert doc.due_on == date(2026, 12, 3)
    with connection(ledger.engine) as raw:
        [listed] = list_all(raw, OCT, None, tenant=tenant)
    assert (listed.customer, listed.amount_due_minor, listed.due_on) == (
        "Customer One SA",
        70,
        date(2026, 12, 3),
    )
    assert doc.payment_terms_days == 30
    with connection(ledger.engine) as raw:
        assert raw.execute(
            "SELECT total_minor FROM invoices WHERE tenant_id = %s", (tenant,)
        ).fetchone() == (120,)
        event = raw.execute(
            "SELECT type, number, data FROM billing_events WHERE tenant_id = %s", (tenant,)
        ).fetchall()
    assert event == [
        (
            "invoice.finalized",
            doc.number,
            {
                "tenant": tenant,
                "period": "2026-10",
                "number": doc.number,
                "currency": "EUR",
                "issued_on": "2026-11-03",
                "due_on": "2026-12-03",
                "total": "1.20",
                "amount_due": "0.70",
            },
        )
    ]


def test_an_invoice_keeps_the_profile_it_was_issued_with(ledger: Ledger, tenant: str) -> None:
    _setup(ledger, tenant, _profile(tenant))
    with connection(ledger.engine) as raw:
        first, _ = finalize(raw, tenant, OCT, now=NOW, issuer=ISSUER)
        moved = _profile(
            tenant, date(2026, 11, 10), legal_name="Customer One SAS", address=["2 Rd"]
        )
        assert store_profile(raw, moved) is True
        assert store_profile(raw, moved) is False  # the same version again: a no-op
        with pytest.raises(ProfileError, match="different billing profile"):
            store_profile(raw, _profile(tenant, date(2026, 11, 10), legal_name="Other"))
        again = invoice(raw, tenant, OCT)
        november = invoice(raw, tenant, date(2026, 11, 1))
        [batch] = draft_all(raw, date(2026, 11, 1), [tenant])  # profiles read in one query
    assert again.customer == first.customer
    assert again.content_sha256 == first.content_sha256
    assert november.customer is not None
    assert november.customer.legal_name == "Customer One SAS"
    assert batch.customer == november.customer


def test_reverse_charge_charges_no_tax_and_says_so(ledger: Ledger, tenant: str) -> None:
    _setup(ledger, tenant, _profile(tenant, tax_rates=[], reverse_charge=True), credit="5.00")
    with connection(ledger.engine) as raw:
        doc, _ = finalize(raw, tenant, OCT, now=NOW, issuer=ISSUER)
    assert (doc.tax, doc.total, doc.amount_due, doc.reverse_charge) == (
        "0.00",
        "1.00",
        "0.00",
        True,
    )
    view = customer_view(doc)
    assert view.tax_note is not None
    assert "Reverse charge" in view.tax_note
    with pytest.raises(ProfileError, match="tax_id is required"):
        _profile(tenant, tax_id=None, tax_rates=[], reverse_charge=True)


def test_profile_currency_must_match_the_plan(ledger: Ledger, tenant: str) -> None:
    _setup(ledger, tenant, _profile(tenant, currency="USD"))
    with connection(ledger.engine) as raw, pytest.raises(InvoiceError, match="invoices in USD"):
        invoice(raw, tenant, OCT)


def test_customer_view_hides_cost_margin_positions_and_hashes(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 7, tzinfo=UTC), 4)
    plan = Plan(tenant=tenant, effective_from=OCT, default=Pricing(markup=Decimal("0.4")))
    with connection(ledger.engine, transaction=True) as raw:
        store_plan(raw, plan)
        store_profile(raw, _profile(tenant, currency=None))
    with connection(ledger.engine) as raw:
        doc = invoice(raw, tenant, OCT, ISSUER)
    view = customer_view(doc).model_dump(mode="json")
    text = str(view)
    assert "metered" not in text
    assert "40" not in str(view["lines"])
    assert not {"cost_basis", "positions", "content_sha256", "window"} & set(view)
    [line] = view["lines"]
    assert (line["quantity"], line["unit"], line["unit_price"]) == ("4", "image", None)
    assert line["amount"] == doc.lines[0].amount
    assert view["customer"]["legal_name"] == "Customer One SA"
    assert Invoice.model_validate(doc.stored()).cost_basis.events == 8


def test_credit_note_names_its_invoice_and_its_tax_part(ledger: Ledger, tenant: str) -> None:
    _setup(ledger, tenant, _profile(tenant))
    with connection(ledger.engine) as raw:
        doc, _ = finalize(raw, tenant, OCT, now=NOW, issuer=ISSUER)
        note = issue_credit_note(raw, tenant, OCT, Decimal("0.60"), "goodwill")
        # The note may reach the total with tax (1.20), not more.
        with pytest.raises(InvoiceError, match=r"exceed the invoice total of 1\.20"):
            issue_credit_note(raw, tenant, OCT, Decimal("0.61"), "more")
        events = raw.execute(
            "SELECT type, data->>'invoice_number', data->>'tax' FROM billing_events "
            "WHERE tenant_id = %s ORDER BY event_id",
            (tenant,),
        ).fetchall()
    assert note.invoice_number == doc.number
    assert (note.amount, note.tax) == ("0.60", "0.10")  # 60 × 20/120
    assert events == [
        ("invoice.finalized", None, None),
        ("credit_note.issued", doc.number, "0.10"),
    ]


def test_profiles_over_http_and_cli(
    http: httpx.Client, api_base: str, cli: CliRunner, tenant: str, tmp_path: Any
) -> None:
    body = {
        "legal_name": "Http Co",
        "country": "DE",
        "tax_rates": [{"label": "MwSt", "percent": 19}],
    }
    url = f"/v1/tenants/{tenant}/billing-profiles"
    assert http.put(f"{url}/2026-09-15", json=body).status_code == 201
    assert http.put(f"{url}/2026-09-15", json=body).status_code == 200
    conflict = http.put(f"{url}/2026-09-15", json=body | {"legal_name": "Else"})
    assert conflict.status_code == 409
    assert "profiles are history" in conflict.text
    bad = http.put(f"{url}/2026-10-01", json={"legal_name": "X", "reverse_charge": True})
    assert bad.status_code == 422
    assert "tax_id" in bad.text
    listed = http.get(url).json()
    assert [p["legal_name"] for p in listed] == ["Http Co"]
    toml = tmp_path / "profiles.toml"
    toml.write_text(
        f'[[profile]]\ntenant = "{tenant}"\neffective_from = 2026-11-01\n'
        'legal_name = "Cli Co"\ncountry = "AT"\npayment_terms_days = 10\n'
    )
    loaded = cli.invoke(app, ["profiles", "load", str(toml)])
    assert loaded.exit_code == 0, loaded.output
    assert "1 profile(s) added" in loaded.output
    shown = cli.invoke(app, ["profiles", "list", tenant])
    assert "Http Co" in shown.output
    assert "Cli Co" in shown.output
    assert "10 days" in shown.output
    toml.write_text('[[profile]]\ntenant = "x"\neffective_from = 2026-11-01\nlegal_name = ""\n')
    refused = cli.invoke(app, ["profiles", "load", str(toml)])
    assert refused.exit_code != 0
    assert "profile[0].legal_name" in refused.output


def test_finalize_needs_an_issuer(
    ledger: Ledger,
    db_url: str,
    admin_key: str,
    tenant: str,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _setup(ledger, tenant, _profile(tenant))
    monkeypatch.delenv("RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME")
    settings = Settings(database_url=db_url)
    with serving(create_app(settings, ledger, schedule=False)) as base:
        answer = httpx.post(
            f"{base}/v1/tenants/{tenant}/invoices/2026-10/finalize",
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=30,
        )
    assert answer.status_code == 409
    assert "RENDERLEDGER_BILLING__ISSUER__LEGAL_NAME" in answer.text
    refused = cli.invoke(app, ["invoice", "finalize", "--month", "2026-10", "--tenant", tenant])
    assert refused.exit_code != 0
    assert "no issuer" in refused.output
    with connection(ledger.engine) as raw:
        assert raw.execute(
            "SELECT count(*) FROM invoices WHERE tenant_id = %s", (tenant,)
        ).fetchone() == (0,)


def test_the_issuer_logo_is_checked_at_start_and_printed(
    ledger: Ledger, db_url: str, admin_key: str, tenant: str, tmp_path: Any
) -> None:
    import PIL.Image
    from pydantic import ValidationError
    from pypdf import PdfReader

    with pytest.raises(ValidationError, match="cannot read it as an image"):
        Issuer(legal_name="X", logo=tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValidationError, match="cannot read it as an image"):
        Issuer(legal_name="X", logo=tmp_path / "notes.txt")
    logo = tmp_path / "logo.png"
    PIL.Image.new("RGB", (120, 40), (20, 60, 120)).save(logo)
    _setup(ledger, tenant, _profile(tenant))
    settings = Settings(database_url=db_url)
    settings.billing.issuer = ISSUER.model_copy(update={"logo": logo})
    with serving(create_app(settings, ledger, schedule=False)) as base:
        pdf = httpx.get(
            f"{base}/v1/tenants/{tenant}/invoices/2026-10",
            params={"format": "pdf"},
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=30,
        )
    assert pdf.status_code == 200
    page = PdfReader(io.BytesIO(pdf.content)).pages[0]
    assert len(page.images) == 1
    assert "Pixel Works SAS" in page.extract_text()

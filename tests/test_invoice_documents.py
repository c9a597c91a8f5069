"""The documents sent: invoice and credit note PDFs and CSVs from real invoices.

Invoices are produced as in production (events in the log, a plan, a billing profile,
``lifecycle.finalize``) on the session's PostgreSQL; the PDF is checked by its extracted
text and, for one fixed invoice, by its first page rendered and compared with
``tests/golden/invoice_customer.png`` (``RENDERLEDGER_UPDATE_GOLDEN=1`` rewrites it).
"""

from __future__ import annotations

import csv
import io
import os
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader

from ledger.connections import connection
from ledger.store import Ledger
from reports.billing.credit_notes import issue_credit_note
from reports.billing.document import Invoice
from reports.billing.exports import render, render_credit_note, to_csv
from reports.billing.lifecycle import finalize, invoice
from reports.billing.parties import Issuer, parse_profile, store_profile
from reports.billing.pdf import credit_note_pdf, to_pdf
from reports.billing.pdf_layout import read_logo
from reports.billing.plans import CreditGrant, Plan, Pricing, Tier, store_grant, store_plan
from reports.billing.views import customer_view
from tests.billing_helpers import add_renders

SEP, OCT = date(2026, 9, 1), date(2026, 10, 1)
GOLDEN = Path(__file__).parent / "golden" / "invoice_customer.png"
ISSUER = Issuer(
    legal_name="Pixel Works SAS",
    address=("3 quai Saint-Antoine", "69002 Lyon"),
    country="FR",
    tax_id="FR12345678901",
    email="billing@pixelworks.example",
    payment_instructions=(
        "Bank transfer to Pixel Works SAS",
        "IBAN FR76 3000 6000 0112 3456 7890 189 · BIC AGRIFRPP",
    ),
)
TOTAL_LABELS = (
    "Subtotal",
    "Commitment top-up",
    "Prior-period adjustments",
    "VAT 20 % of",
    "Total",
    "Prepaid credits applied",
    "Amount due",
)
AMOUNT = r"-?\d[\d,]*\.\d{2}"


def _invoice(ledger: Ledger, tenant: str, **terms: Any) -> Invoice:
    """October, finalized, of a tenant on per-image tiers under a 20.00 EUR commitment:
    September finalized first, then 10 late September images (a prior-period adjustment),
    145 October images (14.60, topped up by 5.40), VAT 20 % and 10.00 of prepaid credit."""
    plan = Plan(
        tenant=tenant,
        effective_from=SEP,
        name="Studio Pro",
        currency="EUR",
        minimum_commitment=Decimal("20.00"),
        default=Pricing(tiers=(Tier(unit_price=Decimal("0.12")),)),
        use_cases={
            "ecommerce": Pricing(
                tiers=(
                    Tier(up_to=100, unit_price=Decimal("0.10")),
                    Tier(unit_price=Decimal("0.08")),
                )
            )
        },
    )
    profile: dict[str, Any] = {
        "tenant": tenant,
        "effective_from": SEP,
        "legal_name": "Atelier Lumière SARL",
        "address": ["12 rue de la Paix", "75002 Paris"],
        "country": "FR",
        "tax_id": "FR98765432109",
        "email": "compta@atelier-lumiere.example",
        "payment_terms_days": 30,
        "tax_rates": [{"label": "VAT", "percent": "20"}],
    }
    grant = CreditGrant(
        tenant=tenant, id="prepaid", amount=Decimal("10.00"), currency="EUR", granted_on=OCT
    )
    with connection(ledger.engine, transaction=True) as raw:
        store_plan(raw, plan)
        store_grant(raw, grant)
        store_profile(raw, parse_profile(profile | terms))
    add_renders(ledger, tenant, datetime(2026, 9, 14, tzinfo=UTC), 250, use_case="ecommerce")
    with connection(ledger.engine) as raw:
        finalize(raw, tenant, SEP, now=datetime(2026, 10, 2, 9, tzinfo=UTC), issuer=ISSUER)
    add_renders(ledger, tenant, datetime(2026, 9, 29, tzinfo=UTC), 10, use_case="ecommerce")
    add_renders(ledger, tenant, datetime(2026, 10, 6, tzinfo=UTC), 120, use_case="ecommerce")
    add_renders(ledger, tenant, datetime(2026, 10, 9, tzinfo=UTC), 25, use_case="social")
    with connection(ledger.engine) as raw:
        doc, _ = finalize(raw, tenant, OCT, now=datetime(2026, 11, 3, 9, tzinfo=UTC), issuer=ISSUER)
    return doc


@pytest.fixture(scope="module")
def october(ledger: Ledger) -> Invoice:
    return _invoice(ledger, f"doc-{uuid.uuid4().hex[:10]}")


def _text(pdf: bytes, page: int | None = None) -> str:
    """The pages' text (or one page's) laid out as printed: a table row is a line, its
    cells two spaces apart (words in a cell are one space apart)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    pages = pages if page is None else [pages[page]]
    lines = [
        ln.strip() for p in pages for ln in p.extract_text(extraction_mode="layout").split("\n")
    ]
    return "\n".join(re.sub(r"\s{2,}", "  ", ln) for ln in lines if ln)


def _flat(text: str) -> str:
    """One line, one space between words: for what may wrap."""
    return re.sub(r"\s+", " ", text)


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", "").removesuffix(" EUR"))


def _cell(line: str) -> Decimal | None:
    """The amount in the last column of a row, if the row ends with one."""
    found = re.search(rf"  ({AMOUNT})( EUR)?$", line)
    return None if found is None else _number(found[1])


def _row(text: str, label: str) -> Decimal:
    """The amount at the end of the one row that starts with ``label``."""
    [line] = [ln for ln in text.splitlines() if ln.startswith(label)]
    amount = _cell(line)
    assert amount is not None, line
    return amount


def _column(text: str, start: str, end: str) -> list[Decimal]:
    """The amounts ending the rows after the one starting with ``start``, up to ``end``."""
    rows = text.split("\n" + start, 1)[1].split("\n" + end, 1)[0].splitlines()[1:]
    return [a for a in map(_cell, rows) if a is not None]


def test_the_customer_pdf_is_an_invoice_that_adds_up(october: Invoice) -> None:
    text = _text(render(october, "pdf"))
    flat = _flat(text)
    assert f"Invoice {october.number}" in flat
    for who in ("Pixel Works SAS", "3 quai Saint-Antoine", "Atelier Lumière SARL", "75002 Paris"):
        assert who in flat
    for said in (
        "Tax ID FR98765432109",
        "Tax ID FR12345678901",
        "BILL TO",
        "Issue date 2026-11-03",
        "Due date 2026-12-03",
        "Payment terms 30 days",
        "Period October 2026",
        "Charges for October 2026 under plan Studio Pro",
        "IBAN FR76",
        f"Please quote {october.number} with your payment.",
    ):
        assert said in flat, said
    for hidden in ("metered", "sha-256", "positions", "hash", "cost", "margin", "exact"):
        assert hidden not in flat.lower(), hidden
    assert october.content_sha256 not in flat
    counts = {
        label: len(re.findall(rf"(?<![\w-]){re.escape(label)}", flat)) for label in TOTAL_LABELS
    }
    assert counts == dict.fromkeys(TOTAL_LABELS, 1), counts

    # The lines printed sum to the subtotal printed; the totals add up as printed.
    lines = _column(text, "Description", "Subtotal")
    assert lines == [Decimal("10.00"), Decimal("1.60"), Decimal("3.00")]
    subtotal = _row(text, "Subtotal")
    assert sum(lines) == subtotal
    topup = _row(text, "Commitment top-up")
    adjustments = _column(text, "Prior-period adjustments", "VAT 20 % of")
    assert adjustments == [Decimal("0.80")]
    assert "ecommerce: 10 images of September 2026 at 0.08" in flat
    tax = _row(text, "VAT 20 % of 20.80")  # the rate's base is the net
    total, credits = _row(text, "Total"), _row(text, "Prepaid credits applied")
    due = _row(text, "Amount due")
    assert subtotal + topup + sum(adjustments) + tax == total
    assert credits < 0
    assert total + credits == due
    assert (subtotal, topup, tax, total, due) == tuple(
        map(Decimal, ("14.60", "5.40", "4.16", "24.96", "14.96"))
    )
    assert "14.96 EUR" in flat
    # Each amount once: no total is repeated elsewhere on the page.
    for amount in ("14.60", "5.40", "24.96", "14.96", "-10.00"):
        assert flat.count(amount) == 1, amount


def test_the_internal_pdf_adds_cost_basis_and_audit_fields(october: Invoice) -> None:
    text = _flat(_text(render(october, "pdf", "internal")))
    for said in ("Metered cost", "Ledger positions", "Content SHA-256", "delivered 145"):
        assert said in text, said
    assert october.content_sha256 in text
    assert "Lines as priced" in text
    # The customer's page comes first, as the customer has it; the audit on a page after.
    customer = _flat(_text(render(october, "pdf")))
    assert text.startswith(customer.removesuffix("Page 1"))
    assert text.endswith("Page 2")


def test_the_pdf_is_the_same_bytes_each_time(october: Invoice) -> None:
    assert render(october, "pdf") == render(october, "pdf")


def test_a_long_invoice_flows_onto_more_pages(october: Invoice) -> None:
    """Layout only (the lines are repeated, so they no longer sum): the header row repeats
    on each page, the totals block stays whole, every page has its footer."""
    usage = [ln for ln in october.lines if ln.kind == "usage"]
    long = october.model_copy(update={"lines": usage * 30 + october.lines[len(usage) :]})
    pdf = render(long, "pdf")
    pages = [_text(pdf, i) for i in range(len(PdfReader(io.BytesIO(pdf)).pages))]
    assert len(pages) >= 3
    assert pages[1].startswith("Description  Quantity  Unit price  Amount (EUR)")
    assert all(p.endswith(f"Invoice {october.number}  Page {i}") for i, p in enumerate(pages, 1))
    [totals] = [_flat(p) for p in pages if "Subtotal" in p]
    assert all(label in totals for label in ("Commitment top-up", "Total", "Amount due"))
    bodies = [p.rsplit("\n", 1)[0] for p in pages]  # without the footer
    assert not any(b.endswith(("Payment", "Credit notes")) for b in bodies)  # no orphan heading
    assert "Payment" in _flat(pages[-1])


def test_a_draft_says_so(ledger: Ledger, tenant: str) -> None:
    add_renders(ledger, tenant, datetime(2026, 10, 5, tzinfo=UTC), 2)
    with connection(ledger.engine) as raw:
        doc = invoice(raw, tenant, OCT, ISSUER)
    text = _flat(_text(render(doc, "pdf")))
    assert "DRAFT invoice (not final)" in text
    assert "not issued (draft)" in text
    assert "Amount due" in text
    assert "Invoice RL-" not in text


def test_reverse_charge_prints_the_mention_and_no_tax_row(ledger: Ledger, tenant: str) -> None:
    terms = {"country": "DE", "tax_id": "DE123456789", "reverse_charge": True, "tax_rates": []}
    doc = _invoice(ledger, tenant, **terms)
    text = _text(render(doc, "pdf"))
    assert "Reverse charge: VAT to be accounted for by the recipient" in _flat(text)
    assert "VAT 20 %" not in text
    assert _row(text, "Total") == Decimal("20.80")  # the net: no tax
    rows = list(csv.reader(io.StringIO(to_csv(doc).decode())))
    assert "VAT" not in [r[1] for r in rows if r[0] == "total"]


def test_the_csv_lists_lines_then_each_total_once(october: Invoice) -> None:
    rows = list(csv.reader(io.StringIO(render(october, "csv").decode())))
    assert rows[0] == ["invoice", october.number, "2026-10", "EUR", "2026-11-03", "2026-12-03"]
    assert rows[1][:2] == ["kind", "description"]
    lines = [r for r in rows if r[0] == "line"]
    assert [r[-1] for r in lines] == ["10.00", "1.60", "3.00"]
    assert [r[-1] for r in rows if r[0] == "adjustment"] == ["0.80"]
    totals = [(r[1], r[-1]) for r in rows if r[0] == "total"]
    assert totals == [
        ("subtotal", "14.60"),
        ("commitment_topup", "5.40"),
        ("adjustments_total", "0.80"),
        ("VAT", "4.16"),
        ("total", "24.96"),
        ("credits_applied", "10.00"),
        ("amount_due", "14.96"),
    ]
    assert rows[-1] == ["total", "amount_due", *[""] * 6, "14.96"]
    flat = "\n".join(",".join(r) for r in rows)
    assert october.content_sha256 not in flat
    assert "metered" not in flat
    internal = list(csv.reader(io.StringIO(render(october, "csv", "internal").decode())))
    assert internal[0][-1] == october.content_sha256
    assert "exact" in internal[1]
    assert "rounding" in internal[1]
    assert [(r[4], r[-1]) for r in internal if r[0] == "total"] == totals


def test_a_credit_note_names_its_invoice(ledger: Ledger, tenant: str, http: httpx.Client) -> None:
    doc = _invoice(ledger, tenant)
    with connection(ledger.engine) as raw:
        note = issue_credit_note(raw, tenant, OCT, Decimal("1.20"), "Two renders re-run")
        doc = invoice(raw, tenant, OCT)
    assert doc.number is not None
    text = _text(credit_note_pdf(doc, note.number))
    flat = _flat(text)
    assert f"Credit note {note.number}" in flat
    assert f"Credits invoice {doc.number} of 2026-11-03" in flat
    assert "Pixel Works SAS" in flat
    assert "Atelier Lumière SARL" in flat
    assert "Two renders re-run" in flat
    assert _row(text, "VAT 20 % credited") == Decimal("0.20")
    assert _row(text, "Credited amount excl. tax") == Decimal("1.00")
    assert _row(text, "Total credited") == Decimal("1.20")
    assert "1.20 EUR" in flat
    # The invoice lists its notes.
    listed = _flat(_text(render(doc, "pdf")))
    assert f"Credit note {note.number} of" in listed
    assert "credits this invoice: 1.20 EUR incl. tax 0.20 — Two renders re-run" in listed
    with pytest.raises(LookupError, match="no credit note RL-0"):
        credit_note_pdf(doc, "RL-0")

    base = f"/v1/tenants/{tenant}/invoices/2026-10/credit-notes"
    answer = http.get(f"{base}/{note.number}")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "number": note.number,
        "invoice_number": doc.number,
        "issued_on": note.created_at[:10],
        "reason": "Two renders re-run",
        "amount": "1.20",
        "tax": "0.20",
    }
    pdf = http.get(f"{base}/{note.number}", params={"format": "pdf"})
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert f"Credits invoice {doc.number}" in _flat(_text(pdf.content))
    missing = http.get(f"{base}/RL-2026-999999")
    assert missing.status_code == 404
    assert "no credit note RL-2026-999999" in missing.json()["detail"]["message"]
    assert (
        http.get(f"/v1/tenants/{tenant}/invoices/2026-09/credit-notes/{note.number}").status_code
        == 404
    )
    assert render_credit_note(doc, note.number, "json").startswith(b"{")


def _logo(path: Path) -> Path:
    """A logo drawn with shapes only (no font), so it is the same image everywhere."""
    image = Image.new("RGB", (360, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, 112, 112), fill="#2c5282")
    draw.rectangle((44, 44, 76, 76), fill="white")
    for i, width in enumerate((230, 170, 200)):
        draw.rectangle((132, 22 + i * 30, 132 + width, 40 + i * 30), fill="#2d3748")
    image.save(path)
    return path


def test_the_logo_heads_the_pdf_and_a_bad_one_is_named(october: Invoice, tmp_path: Path) -> None:
    logo = _logo(tmp_path / "logo.png")
    pdf = render(october, "pdf", logo=logo)
    assert len(PdfReader(io.BytesIO(pdf)).pages[0].images) == 1
    image = read_logo(logo)
    assert (round(image.drawWidth), round(image.drawHeight)) == (85, 28)  # 30 mm wide
    missing = tmp_path / "nowhere.png"
    with pytest.raises(ValueError, match=f"issuer logo {missing}: cannot read it"):
        to_pdf(october, logo=missing)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=f"issuer logo {junk}: not a PNG or JPEG image"):
        to_pdf(october, logo=junk)


def _golden_document(ledger: Ledger) -> Invoice:
    """A fixed invoice: fixed tenant, issuer, events and dates; the series number of the
    session is replaced by a fixed one."""
    tenant = "atelier-lumiere"
    with connection(ledger.engine) as raw:
        found = raw.execute(
            "SELECT 1 FROM invoices WHERE tenant_id = %s AND period = %s", (tenant, OCT)
        ).fetchone()
        doc = invoice(raw, tenant, OCT) if found else _invoice(ledger, tenant)
    return doc.model_copy(update={"number": "RL-2026-000123"})


def test_the_customer_pdf_looks_like_the_golden_page(ledger: Ledger, tmp_path: Path) -> None:
    doc = _golden_document(ledger)
    assert customer_view(doc).amount_due == "14.96"
    pdf = to_pdf(doc, logo=_logo(tmp_path / "logo.png"))
    page = pdfium.PdfDocument(pdf)[0].render(scale=1).to_pil().convert("L")
    if os.environ.get("RENDERLEDGER_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        page.save(GOLDEN, optimize=True)
        pytest.skip(f"wrote {GOLDEN}")
    actual = np.asarray(page, dtype=np.int16)
    expected = np.asarray(Image.open(GOLDEN).convert("L"), dtype=np.int16)
    page.save(tmp_path / "actual.png")
    assert actual.shape == expected.shape, f"page size changed; see {tmp_path / 'actual.png'}"
    off = np.abs(actual - expected) > 32
    Image.fromarray(np.where(off, 0, 255).astype(np.uint8)).save(tmp_path / "diff.png")
    share = float(off.mean())
    print(f"golden page: {share:.3%} of pixels differ; actual and diff images in {tmp_path}")
    assert share <= 0.005, (
        f"{share:.2%} of pixels differ from {GOLDEN}; see {tmp_path}/actual.png and diff.png "
        "(RENDERLEDGER_UPDATE_GOLDEN=1 rewrites the golden after a deliberate change)"
    )

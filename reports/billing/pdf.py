"""Invoices and credit notes as PDF.

The customer's copy prints ``views.customer_view(doc)``: who it is from and to, the dates,
the lines, then the totals once each in the order DESIGN gives (subtotal, commitment
top-up, prior-period adjustments, tax, total, prepaid credits, amount due). The internal
view adds a page with the cost basis and the audit fields. Every value from a document goes
through ``_text`` (reportlab parses Paragraph text as markup); the page furniture and the
deterministic build are in ``pdf_layout``.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.units import mm
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)

from ledger.money import format_nanos
from reports.billing.document import Invoice
from reports.billing.pdf_layout import (
    BODY,
    DUE,
    DUE_AMOUNT,
    HEAD,
    INK,
    LABEL,
    MUTED,
    NAME,
    NOTE,
    RULE,
    SHADE,
    STRONG,
    TINY,
    WIDTH,
    addressee,
    build,
    fmt_amount,
    fmt_price,
    fmt_quantity,
    grid,
    header,
    month_name,
)
from reports.billing.pdf_layout import para_text as _text
from reports.billing.plans import MINOR_DIGITS
from reports.billing.views import CustomerInvoice, CustomerLine, View, customer_view

AMOUNT_W = 30 * mm
LINE_WIDTHS = [WIDTH - 3 * AMOUNT_W, AMOUNT_W, AMOUNT_W, AMOUNT_W]
TOTAL_WIDTHS = [WIDTH - 2.6 * AMOUNT_W - AMOUNT_W, 2.6 * AMOUNT_W, AMOUNT_W]


def _lines(lines: list[CustomerLine], currency: str) -> Table:
    head = ["Description", "Quantity", "Unit price", f"Amount ({currency})"]
    rows: list[list[Any]] = [head]
    digits = MINOR_DIGITS.get(currency, 2)
    for line in lines:
        price = "" if line.unit_price is None else fmt_price(line.unit_price, digits)
        rows.append(
            [
                Paragraph(_text(line.description), BODY),
                fmt_quantity(line.quantity, line.unit),
                price,
                fmt_amount(line.amount),
            ]
        )
    if not lines:
        rows.append([Paragraph("No billable usage this period", BODY), "", "", ""])
    table = Table(rows, colWidths=LINE_WIDTHS, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                ("TEXTCOLOR", (0, 0), (-1, 0), MUTED),
                ("FONT", (1, 1), (-1, -1), "Helvetica", 9),
                ("TEXTCOLOR", (0, 1), (-1, -1), INK),
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
                ("LINEBELOW", (0, 1), (-1, -1), 0.3, RULE),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (0, -1), 0),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 1), (-1, -1), 3.5),
                ("BOTTOMPADDING", (0, 1), (-1, -1), 3.5),
            ]
        )
    )
    return table


def _totals(cv: CustomerInvoice) -> Table:
    """Subtotal, top-up, adjustments, tax, total, credits, amount due: each amount once."""
    rows: list[list[Any]] = []
    style: list[tuple[Any, ...]] = []

    def add(label: Any, amount: str, *extra: tuple[Any, ...]) -> None:
        rows.append(["", label, amount])
        style.extend((cmd[0], (1, len(rows) - 1), (2, len(rows) - 1), *cmd[1:]) for cmd in extra)

    add("Subtotal", fmt_amount(cv.subtotal))
    if cv.commitment is not None:
        note = f"to the {cv.commitment.description}"
        label = Paragraph(f"Commitment top-up<br/><font size=7.5>{_text(note)}</font>", BODY)
        add(label, fmt_amount(cv.commitment.amount))
    if cv.adjustments:
        add(Paragraph("Prior-period adjustments", LABEL), "", ("TOPPADDING", 6))
        for adj in cv.adjustments:
            add(Paragraph(_text(_adjusted(adj, cv.currency)), NOTE), fmt_amount(adj.amount))
    for tax in cv.taxes:
        rate = f"{tax.label} {tax.percent} % of {fmt_amount(tax.base)}"
        add(Paragraph(_text(rate), BODY), fmt_amount(tax.amount))
    if not cv.taxes and Decimal(cv.tax) != 0:
        add("Tax", fmt_amount(cv.tax))
    add("Total", fmt_amount(cv.total), ("FONTNAME", "Helvetica-Bold"), ("LINEABOVE", 0.8, INK))
    if Decimal(cv.credits_applied) != 0:
        add("Prepaid credits applied", fmt_amount(f"-{cv.credits_applied}"))
    due = f"{fmt_amount(cv.amount_due)} {cv.currency}"
    add(
        Paragraph("Amount due", DUE),
        Paragraph(_text(due), DUE_AMOUNT),
        ("BACKGROUND", SHADE),
        ("TOPPADDING", 5),
        ("BOTTOMPADDING", 5),
    )
    table = Table(rows, colWidths=TOTAL_WIDTHS)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
                ("TEXTCOLOR", (0, 0), (-1, -1), INK),
                ("ALIGN", (2, 0), (2, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 2.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2.5),
                *style,
            ]
        )
    )
    return table


def _adjusted(line: CustomerLine, currency: str) -> str:
    """A per-image adjustment said from its fields (its description names the whole tier,
    ``images 101–260``, not the images it adds); others as the customer view says them."""
    if line.unit != "image" or line.unit_price is None or line.quantity is None:
        return line.description
    when = month_name(line.period) if line.period else "an earlier month"
    price = fmt_price(line.unit_price, MINOR_DIGITS.get(currency, 2))
    images = fmt_quantity(line.quantity, line.unit)
    return f"{line.use_case}: {images} of {when} at {price}, counted after its invoice"


def _notes(cv: CustomerInvoice) -> list[Flowable]:
    out: list[Flowable] = []
    if cv.tax_note:
        out += [Spacer(1, 4 * mm), Paragraph(_text(cv.tax_note), STRONG)]
    if cv.payment_instructions:
        lines = [*cv.payment_instructions]
        if cv.number:
            lines.append(f"Please quote {cv.number} with your payment.")
        out += [
            Paragraph("Payment", HEAD),
            Paragraph("<br/>".join(_text(line) for line in lines), BODY),
        ]
    if cv.credit_notes:
        out.append(Paragraph("Credit notes", HEAD))
        for n in cv.credit_notes:
            said = (
                f"Credit note {n.number} of {n.issued_on} credits this invoice: "
                f"{fmt_amount(n.amount)} {cv.currency} incl. tax {fmt_amount(n.tax)} — {n.reason}"
            )
            out.append(Paragraph(_text(said), BODY))
    return out


def _details(cv: CustomerInvoice) -> list[tuple[str, str]]:
    days = cv.payment_terms_days
    terms = "due on receipt" if days == 0 else f"{days} days" if days is not None else ""
    if cv.due_on is not None:
        due = cv.due_on.isoformat()
    else:
        due = "on issue" if days == 0 else f"{days} days after issue" if days else "—"
    rows = [
        ("Issue date", cv.issued_on.isoformat() if cv.issued_on else "not issued (draft)"),
        ("Due date", due),
        *([("Payment terms", terms)] if terms else []),
        ("Period", month_name(cv.period)),
        ("Account", cv.tenant),
    ]
    return rows


def to_pdf(doc: Invoice, view: View = "customer", logo: Path | None = None) -> bytes:
    """The customer's copy; ``internal`` adds a page of cost basis and audit fields."""
    cv = customer_view(doc)
    title = f"Invoice {cv.number}" if cv.number else "DRAFT invoice (not final)"
    subtitle = (
        f"{month_name(cv.period)} · amounts in {cv.currency}"
        if cv.number
        else "Recomputed until finalized; not for payment"
    )
    issuer = cv.issuer.legal_name if cv.issuer else "renderledger"
    story: list[Flowable] = [
        *header(cv.issuer, title, subtitle, logo),
        *addressee(cv.customer, _details(cv)),
        Paragraph(
            f"Charges for {_text(month_name(cv.period))} under plan <b>{_text(cv.plan)}</b>",
            BODY,
        ),
        Spacer(1, 2 * mm),
        _lines(cv.lines, cv.currency),
        Spacer(1, 1 * mm),
        KeepTogether(_totals(cv)),
        *_notes(cv),
    ]
    if view == "internal":
        story += [PageBreak(), *_internal(doc)]
    return build(story, title, issuer, f"{issuer} · {title}")


def credit_note_pdf(doc: Invoice, note_number: str, logo: Path | None = None) -> bytes:
    """A credit note: its number, the invoice it credits, the parties, amount, tax, reason."""
    cv = customer_view(doc)
    note = next((n for n in cv.credit_notes if n.number == note_number), None)
    if note is None:
        raise LookupError(f"no credit note {note_number} on invoice {doc.number or doc.period}")
    title = f"Credit note {note.number}"
    credits = f"Credits invoice {note.invoice_number or cv.number} of {cv.issued_on}"
    details = [
        ("Issue date", note.issued_on.isoformat()),
        ("Invoice", f"{note.invoice_number or cv.number} of {cv.issued_on}"),
        ("Period", month_name(cv.period)),
        ("Account", cv.tenant),
    ]
    tax_label = "Tax"
    if len(cv.taxes) == 1:
        tax_label = f"{cv.taxes[0].label} {cv.taxes[0].percent} %"
    net = format(Decimal(note.amount) - Decimal(note.tax), "f")
    rows = [
        ["", "Credited amount excl. tax", fmt_amount(net)],
        ["", f"{tax_label} credited", fmt_amount(note.tax)],
        [
            "",
            Paragraph("Total credited", DUE),
            Paragraph(f"{fmt_amount(note.amount)} {_text(cv.currency)}", DUE_AMOUNT),
        ],
    ]
    totals = Table(rows, colWidths=TOTAL_WIDTHS)
    totals.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 9),
                ("ALIGN", (2, 0), (2, -1), "RIGHT"),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                ("BACKGROUND", (1, -1), (-1, -1), SHADE),
                ("LINEABOVE", (1, -1), (-1, -1), 0.8, INK),
            ]
        )
    )
    story: list[Flowable] = [
        *header(cv.issuer, title, credits, logo),
        *addressee(cv.customer, details),
        Paragraph("Reason", HEAD),
        Paragraph(_text(note.reason), BODY),
        Spacer(1, 6 * mm),
        totals,
    ]
    if cv.tax_note:
        story += [Spacer(1, 4 * mm), Paragraph(_text(cv.tax_note), STRONG)]
    story += [
        Spacer(1, 6 * mm),
        Paragraph(
            _text(f"This credit note corrects invoice {note.invoice_number or cv.number}."),
            BODY,
        ),
    ]
    issuer = cv.issuer.legal_name if cv.issuer else "renderledger"
    return build(story, title, issuer, f"{issuer} · {title}")


def _internal(doc: Invoice) -> list[Flowable]:
    """The cost basis, the positions in the log and the hashes: never on the customer's copy."""
    basis, pos = doc.cost_basis, doc.positions
    renders = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in basis.renders.items())

    def seq(value: int | None) -> str:
        return "—" if value is None else str(value)

    positions = f"{seq(pos.first_seq)}–{seq(pos.last_seq)}, through {pos.through_seq}"
    if pos.adjustments_after_seq is not None:
        positions += f"; adjustments after {pos.adjustments_after_seq}"
    if pos.allocations_through is not None:
        positions += f"; allocations through {pos.allocations_through}"
    plan = doc.plan
    facts = [
        (
            "Metered cost",
            f"{basis.metered} USD over {basis.events:,} events (billed "
            f"{format_nanos(basis.billed_nanos)}, not billed "
            f"{format_nanos(basis.not_billed_nanos)})",
        ),
        ("Renders by outcome", renders or "none"),
    ]
    if basis.other_currencies:
        other = ", ".join(f"{format_nanos(n)} {c}" for c, n in basis.other_currencies.items())
        facts.append(("Other currencies", other))
    if basis.allocated_nanos is not None:
        facts.append(("Allocated", f"{format_nanos(basis.allocated_nanos)} USD"))
    facts += [
        ("Ledger positions", positions),
        ("Window", f"{doc.window.start} to {doc.window.end} ({doc.timezone})"),
        (
            "Plan",
            f"{plan.name or 'custom'} from {plan.effective_from}, failed renders "
            f"{plan.failed_renders.value.replace('_', ' ')}; SHA-256 {plan.sha256}",
        ),
    ]
    if doc.customer is not None:
        facts.append(
            (
                "Billing profile",
                f"from {doc.customer.profile_from}; SHA-256 {doc.customer.profile_sha256}",
            )
        )
    facts.append(("Content SHA-256", doc.content_sha256 or "—"))
    out: list[Flowable] = [
        Paragraph("Internal: cost basis and audit fields (not sent to the customer)", NAME),
        Spacer(1, 3 * mm),
        grid(
            [[Paragraph(_text(k), LABEL), Paragraph(_text(v), BODY)] for k, v in facts],
            [34 * mm, WIDTH - 34 * mm],
        ),
        Paragraph("Lines as priced", HEAD),
        _priced(doc),
    ]
    if basis.by_use_case:
        out += [Paragraph("Metered cost by use case (USD)", HEAD), _chart(basis.by_use_case)]
    return out


def _priced(doc: Invoice) -> Table:
    head = ["Kind", "Description", "Quantity", "Unit", "Unit price", "Exact", "Amount"]
    rows: list[list[Any]] = [head]
    for ln in doc.lines:
        rows.append(
            [
                ln.kind,
                Paragraph(_text(ln.description), TINY),
                _short(ln.quantity),
                Paragraph(_text(ln.unit), TINY),
                _short(ln.unit_price),
                _short(ln.exact),
                ln.amount,
            ]
        )
    widths = [20 * mm, 54 * mm, 20 * mm, 24 * mm, 20 * mm, 20 * mm, 16 * mm]
    return grid(
        rows,
        widths,
        ("FONT", (0, 0), (-1, -1), "Helvetica", 7.5),
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 7.5),
        ("LINEBELOW", (0, 0), (-1, 0), 0.6, INK),
        ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
        ("ALIGN", (3, 0), (3, -1), "LEFT"),
    )


def _short(value: str) -> str:
    return value if len(value) <= 14 else f"{Decimal(value):.8g}"


def _chart(by_use_case: dict[str, int]) -> Drawing:
    names = list(by_use_case)[:8]
    values = [by_use_case[n] / 1e9 for n in names]  # drawing only: floats are fine here
    drawing = Drawing(170 * mm, (18 + 9 * len(names)) * mm)
    chart = HorizontalBarChart()
    chart.x, chart.y = 35 * mm, 8 * mm
    chart.width, chart.height = 125 * mm, 9 * mm * len(names)
    chart.data = [values]
    chart.categoryAxis.categoryNames = names
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = "$%.2f"
    chart.bars[0].fillColor = colors.HexColor("#4a6fa5")
    drawing.add(chart)
    return drawing

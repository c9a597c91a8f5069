"""An invoice document (``document.Invoice``) as JSON, CSV and PDF, and its export to a
folder or an S3 prefix."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import HorizontalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from ledger import encoding
from reports.billing.document import Invoice
from reports.billing.views import View, customer_view

FORMATS = ("pdf", "csv", "json")
MEDIA_TYPES = {"pdf": "application/pdf", "csv": "text/csv", "json": "application/json"}


def to_json(doc: Invoice, view: View = "internal") -> bytes:
    """A draft has no credit notes, and its internal JSON has never carried the key."""
    if view == "customer":
        return encoding.dumps(customer_view(doc).model_dump(mode="json"), indent=True)
    body = doc.model_dump(
        mode="json", exclude=None if doc.status == "finalized" else {"credit_notes"}
    )
    return encoding.dumps(body, sort_keys=True, indent=True)


def to_csv(doc: Invoice, view: View = "internal") -> bytes:
    """The lines, then the totals as rows of their own, so a spreadsheet sums what we sum."""
    out = io.StringIO()
    columns = [
        "kind",
        "period",
        "use_case",
        "tier",
        "description",
        "quantity",
        "unit",
        "unit_price",
        "exact",
        "rounding",
        "amount",
    ]
    writer = csv.writer(out)
    writer.writerow(
        [
            "invoice",
            doc.number or "DRAFT",
            doc.tenant,
            doc.period,
            doc.currency,
            doc.content_sha256,
        ]
    )
    writer.writerow(columns)
    for line in doc.lines:
        values = line.model_dump()
        writer.writerow([values[c] if values[c] is not None else "" for c in columns])
    for name in ("subtotal", "commitment_topup", "adjustments", "credits_applied", "total"):
        writer.writerow(["total", "", "", "", name, "", "", "", "", "", getattr(doc, name)])
    return out.getvalue().encode()


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


def _text(value: object) -> str:
    """Any value as Paragraph text: reportlab parses Paragraphs as markup, and a plan name
    like ``<img src="/etc/passwd"/>`` must print as itself, not embed a server file."""
    return escape(str(value))


def to_pdf(doc: Invoice, view: View = "customer") -> bytes:
    """Every value from the document goes through ``_text``; only our own tags are markup."""
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    title = f"Invoice {doc.number}" if doc.number else "DRAFT invoice (not final)"
    pdf = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author="renderledger",
        leftMargin=18 * mm,
        rightMargin=18 * mm,
    )
    cur = doc.currency
    plan = doc.plan
    story: list[Any] = [
        Paragraph(_text(title), styles["Title"]),
        Paragraph(
            f"<b>Tenant</b> {_text(doc.tenant)} &nbsp; <b>Period</b> {_text(doc.period)} "
            f"({_text(doc.timezone)}) &nbsp; <b>Issued</b> {_text(doc.issued_on or '—')}",
            styles["Normal"],
        ),
        Paragraph(
            f"<b>Plan</b> {_text(plan.name or 'custom')} (from "
            f"{_text(plan.effective_from)}); failed renders "
            f"{_text(plan.failed_renders.value.replace('_', ' '))}",
            styles["Normal"],
        ),
        Spacer(1, 6 * mm),
    ]
    rows: list[list[str]] = [["Description", "Quantity", "Unit price", f"Amount ({cur})"]]
    for line in doc.lines:
        rows.append(
            [
                Paragraph(_text(line.description), styles["BodyText"]),
                _short(line.quantity),
                _short(line.unit_price),
                line.amount,
            ]
        )
    if len(rows) == 1:
        rows.append(["No billable usage this period", "", "", "0"])
    for label, value in (
        ("Subtotal", doc.subtotal),
        ("Commitment top-up", doc.commitment_topup),
        ("Prior-period adjustments", doc.adjustments),
        ("Prepaid credits", doc.credits_applied),
    ):
        if label == "Subtotal" or Decimal(value) != 0:
            sign = "−" if label == "Prepaid credits" else ""
            rows.append(["", "", label, f"{sign}{value}"])
    rows.append(["", "", "Total", f"{doc.total} {cur}"])
    table = Table(rows, colWidths=[92 * mm, 25 * mm, 28 * mm, 29 * mm], repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.6, colors.black),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("FONTNAME", (2, -1), (-1, -1), "Helvetica-Bold"),
                ("LINEABOVE", (2, -1), (-1, -1), 0.6, colors.black),
            ]
        )
    )
    story += [table, Spacer(1, 8 * mm)]
    basis = doc.cost_basis
    if basis.by_use_case:
        story += [
            Paragraph("Metered cost by use case (USD)", styles["Heading4"]),
            _chart(basis.by_use_case),
        ]
    pos = doc.positions
    story += [
        Spacer(1, 4 * mm),
        Paragraph(
            _text(
                f"Metered cost {basis.metered} USD over {basis.events:,} events, ledger "
                f"positions {pos.first_seq or '—'}–{pos.last_seq or '—'} (through "
                f"{pos.through_seq}). Content SHA-256 {doc.content_sha256}."
            ),
            styles["Italic"],
        ),
    ]
    pdf.build(story)
    return buffer.getvalue()


def _short(value: str) -> str:
    return value if len(value) <= 14 else f"{Decimal(value):.8g}"


RENDERERS: dict[str, Callable[[Invoice, View], bytes]] = {
    "pdf": to_pdf,
    "csv": to_csv,
    "json": to_json,
}


def render(doc: Invoice, fmt: str, view: View = "customer") -> bytes:
    """The document in ``fmt`` as ``view`` sees it: the customer's copy unless asked."""
    return RENDERERS[fmt](doc, view)


def file_stem(doc: Invoice) -> str:
    return f"{doc.tenant}/{doc.number or 'draft-' + doc.period}"


@dataclass(frozen=True, slots=True)
class Exported:
    tenant: str
    location: str
    link: str | None  # a presigned URL for S3 objects


def export(
    docs: Iterable[Invoice],
    target: str,
    s3: Any = None,
    formats: Iterable[str] = FORMATS,
    view: View = "customer",
    link_seconds: int = 7 * 24 * 3600,
    progress: Callable[[], None] | None = None,
) -> list[Exported]:
    """Write each document in each format under ``target``: a folder or ``s3://bucket/prefix``."""
    parsed = urlparse(target)
    out = []
    for doc in docs:
        for fmt in formats:
            body = render(doc, fmt, view)
            name = f"{file_stem(doc)}.{fmt}"
            if parsed.scheme == "s3":
                if s3 is None:
                    raise ValueError("an s3:// target needs an S3 client")
                key = f"{parsed.path.strip('/')}/{name}".lstrip("/")
                s3.put_object(
                    Bucket=parsed.netloc, Key=key, Body=body, ContentType=MEDIA_TYPES[fmt]
                )
                link = s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": parsed.netloc, "Key": key},
                    ExpiresIn=link_seconds,
                )
                out.append(Exported(doc.tenant, f"s3://{parsed.netloc}/{key}", link))
            else:
                path = Path(target) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
                out.append(Exported(doc.tenant, str(path), None))
        if progress:
            progress()
    return out

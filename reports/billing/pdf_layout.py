"""The page furniture of billing documents: styles, number formats, the issuer's logo,
the parties, the header and the page footer, and a deterministic PDF build.

Every value from a document goes through ``para_text``: reportlab parses Paragraph text as
markup. ``build`` passes ``invariant``, so the bytes are a function of the story alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from reports.billing.parties import Party

MARGIN = 18 * mm
PAD = 6  # a frame's own padding, inside the page margin
WIDTH = A4[0] - 2 * MARGIN
INK = colors.HexColor("#1f2933")
MUTED = colors.HexColor("#52606d")
RULE = colors.HexColor("#9aa5b1")
SHADE = colors.HexColor("#e4e7eb")
MONTHS = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)


def style(name: str, size: float = 9, *, bold: bool = False, **kw: Any) -> ParagraphStyle:
    font = "Helvetica-Bold" if bold else "Helvetica"
    return ParagraphStyle(
        name, fontName=font, fontSize=size, leading=size * 1.3, textColor=kw.pop("color", INK), **kw
    )


BODY = style("body")
SMALL = style("small", 7.5, color=MUTED)
NOTE = style("note", 8)
TINY = style("tiny", 7.5)
LABEL = style("label", 7.5, bold=True, color=MUTED)
NAME = style("name", 11, bold=True, spaceAfter=1 * mm)
HEAD = style("head", 9.5, bold=True, spaceBefore=5 * mm, spaceAfter=1.5 * mm, keepWithNext=1)
TITLE = style("title", 17, bold=True, alignment=TA_RIGHT)
SUBTITLE = style("subtitle", 9, alignment=TA_RIGHT, color=MUTED)
STRONG = style("strong", 9, bold=True)
DUE = style("due", 11, bold=True)
DUE_AMOUNT = style("due-amount", 11, bold=True, alignment=TA_RIGHT)


def para_text(value: object) -> str:
    """Any value as Paragraph text: reportlab parses Paragraphs as markup, and a plan name
    like ``<img src="/etc/passwd"/>`` must print as itself, not embed a server file."""
    return escape(str(value))


def fmt_amount(value: str) -> str:
    """``1234.50`` as ``1,234.50``; negative with a plain hyphen, as spreadsheets read it."""
    return format(Decimal(value), ",f")


def fmt_price(value: str, digits: int) -> str:
    """A unit price with at least the currency's digits: ``0.1`` as ``0.10``, ``0.045`` kept."""
    price = Decimal(value)
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < digits:
        price = price.quantize(Decimal(1).scaleb(-digits))
    return format(price, ",f")


def fmt_quantity(value: str | None, unit: str | None) -> str:
    if value is None:
        return ""
    shown = format(Decimal(value), ",f")
    if unit in (None, ""):
        return shown
    plural = "s" if unit in ("image", "month") and Decimal(value) != 1 else ""
    return f"{shown} {unit}{plural}"


def month_name(period: str) -> str:
    """``2026-10`` as ``October 2026``, whatever the process locale."""
    year, number = period.split("-")
    return f"{MONTHS[int(number) - 1]} {year}"


def read_logo(path: Path, width: float = 30 * mm, max_height: float = 18 * mm) -> Image:
    """The issuer's logo scaled to ``width`` (less if it would be taller than
    ``max_height``); a file that cannot be read as an image is a ValueError naming it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"issuer logo {path}: cannot read it ({exc.strerror})") from None
    try:
        w, h = ImageReader(io.BytesIO(data)).getSize()
    except Exception:  # reportlab wraps PIL's refusals in several types
        raise ValueError(f"issuer logo {path}: not a PNG or JPEG image") from None
    if not w or not h:
        raise ValueError(f"issuer logo {path}: the image is empty")
    scale = min(width / w, max_height / h)
    return Image(io.BytesIO(data), width=w * scale, height=h * scale, hAlign="LEFT")


def grid(rows: Sequence[Sequence[Any]], widths: Sequence[float], *extra: tuple[Any, ...]) -> Table:
    """A table without padding at its outer edges, top-aligned."""
    table = Table(list(map(list, rows)), colWidths=list(widths))
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (0, -1), 0),
                ("RIGHTPADDING", (-1, 0), (-1, -1), 0),
                *extra,
            ]
        )
    )
    return table


def party_block(party: Party, name_style: ParagraphStyle = NAME) -> list[Flowable]:
    lines = [*party.address, *([party.country] if party.country else [])]
    if party.tax_id:
        lines.append(f"Tax ID {party.tax_id}")
    if party.email:
        lines.append(party.email)
    out: list[Flowable] = [Paragraph(para_text(party.legal_name), name_style)]
    if lines:
        out.append(Paragraph("<br/>".join(para_text(line) for line in lines), BODY))
    return out


def header(issuer: Party | None, title: str, subtitle: str, logo: Path | None) -> list[Flowable]:
    left: list[Flowable] = [read_logo(logo), Spacer(1, 3 * mm)] if logo else []
    if issuer is not None:
        left += party_block(issuer)
    right = [
        Paragraph(para_text(title), TITLE),
        Spacer(1, 2 * mm),
        Paragraph(para_text(subtitle), SUBTITLE),
    ]
    return [grid([[left, right]], [WIDTH * 0.45, WIDTH * 0.55]), Spacer(1, 9 * mm)]


def addressee(customer: Party, details: list[tuple[str, str]]) -> list[Flowable]:
    """The "Bill to" block beside the document's dates and references."""
    bill_to = [Paragraph("BILL TO", LABEL), Spacer(1, 1.5 * mm), *party_block(customer, STRONG)]
    facts = grid(
        [[Paragraph(para_text(k), LABEL), Paragraph(para_text(v), BODY)] for k, v in details],
        [27 * mm, WIDTH * 0.45 - 27 * mm],
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
    )
    return [grid([[bill_to, facts]], [WIDTH * 0.55, WIDTH * 0.45]), Spacer(1, 9 * mm)]


def _page_footer(left: str) -> Callable[[Canvas, Any], None]:
    def draw(canvas: Canvas, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN, 10 * mm, left)
        canvas.drawRightString(A4[0] - MARGIN, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    return draw


def build(story: list[Flowable], title: str, author: str, footer: str) -> bytes:
    buffer = io.BytesIO()
    pdf = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author=author,
        creator="renderledger",
        leftMargin=MARGIN - PAD,
        rightMargin=MARGIN - PAD,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        invariant=True,  # no creation date or random id: the same document, the same bytes
    )
    draw = _page_footer(footer)
    pdf.build(story, onFirstPage=draw, onLaterPages=draw)
    return buffer.getvalue()

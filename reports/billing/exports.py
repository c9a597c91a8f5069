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

from ledger import encoding
from reports.billing.document import Invoice, money
from reports.billing.pdf import credit_note_pdf, to_pdf
from reports.billing.plans import MINOR_DIGITS
from reports.billing.views import CustomerInvoice, View, customer_view

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


def to_csv(doc: Invoice, view: View = "customer") -> bytes:
    """The lines, then the totals as rows of their own, each once and in the document's
    order (the last row is the amount due), so a spreadsheet sums what we sum.

    The customer's copy has the customer's lines (no cost, no rounding, no hash); the
    internal one every priced line with its exact amount and rounding, and the content hash.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    cv = customer_view(doc)
    if view == "customer":
        issued = cv.issued_on.isoformat() if cv.issued_on else ""
        due = cv.due_on.isoformat() if cv.due_on else ""
        writer.writerow(["invoice", cv.number or "DRAFT", cv.period, cv.currency, issued, due])
        columns = ["kind", *CUSTOMER_COLUMNS]
        shown = [("line", ln) for ln in cv.lines] + [("adjustment", ln) for ln in cv.adjustments]
        rows = [{"kind": kind} | ln.model_dump() for kind, ln in shown]
    else:
        header = [doc.number or "DRAFT", doc.tenant, doc.period, doc.currency, doc.content_sha256]
        writer.writerow(["invoice", *header])
        columns = list(INTERNAL_COLUMNS)
        rows = [ln.model_dump() for ln in doc.lines]
    writer.writerow(columns)
    for values in rows:
        writer.writerow(["" if values[c] is None else values[c] for c in columns])
    for name, amount in totals(cv):  # the name in the description column, the amount last
        cells = {"kind": "total", "description": name}
        writer.writerow([cells.get(c, "") for c in columns[:-1]] + [amount])
    return out.getvalue().encode()


CUSTOMER_COLUMNS = (  # after "kind": line, adjustment or total
    "description",
    "use_case",
    "period",
    "tier",
    "quantity",
    "unit",
    "unit_price",
    "amount",
)
INTERNAL_COLUMNS = (
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
)


def totals(cv: CustomerInvoice) -> list[tuple[str, str]]:
    """The totals rows in order: subtotal, top-up, adjustments, each tax by label, total,
    credits, amount due (credits as the positive amount applied, as in the JSON)."""
    rows = [
        ("subtotal", cv.subtotal),
        ("commitment_topup", cv.commitment.amount if cv.commitment else _zero(cv.currency)),
        ("adjustments_total", cv.adjustments_total),
    ]
    rows += [(tax.label, tax.amount) for tax in cv.taxes]
    if not cv.taxes and Decimal(cv.tax) != 0:
        rows.append(("tax", cv.tax))
    rows += [
        ("total", cv.total),
        ("credits_applied", cv.credits_applied),
        ("amount_due", cv.amount_due),
    ]
    return rows


def _zero(currency: str) -> str:
    return money(0, MINOR_DIGITS.get(currency, 2))


RENDERERS: dict[str, Callable[[Invoice, View], bytes]] = {
    "pdf": to_pdf,
    "csv": to_csv,
    "json": to_json,
}


def render(doc: Invoice, fmt: str, view: View = "customer", logo: Path | None = None) -> bytes:
    """The document in ``fmt`` as ``view`` sees it: the customer's copy unless asked.
    ``logo`` (the issuer's, from the settings) heads the PDF."""
    if fmt == "pdf":
        return to_pdf(doc, view, logo)
    return RENDERERS[fmt](doc, view)


def render_credit_note(doc: Invoice, number: str, fmt: str, logo: Path | None = None) -> bytes:
    """Credit note ``number`` of ``doc`` as JSON (the customer's copy of it) or PDF; a
    LookupError if the invoice has no such note."""
    if fmt == "pdf":
        return credit_note_pdf(doc, number, logo)
    note = next((n for n in customer_view(doc).credit_notes if n.number == number), None)
    if note is None:
        raise LookupError(f"no credit note {number} on invoice {doc.number or doc.period}")
    return encoding.dumps(note.model_dump(mode="json"), indent=True)


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
    logo: Path | None = None,
) -> list[Exported]:
    """Write each document in each format under ``target``: a folder or ``s3://bucket/prefix``;
    ``logo`` (the issuer's) heads each PDF."""
    parsed = urlparse(target)
    out = []
    for doc in docs:
        for fmt in formats:
            body = render(doc, fmt, view, logo)
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

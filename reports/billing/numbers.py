"""The issuer's one gapless number series for final invoices and credit notes.

A number is the highest committed one plus one, taken under one transaction lock in the
transaction that stores the document: a finalize that rolls back leaves no gap, and two at
once (of any tenants) get consecutive numbers in the order they commit.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import psycopg

from ledger import locks

PREFIX = "RL"


def take_number(
    raw: psycopg.Connection[Any],
    kind: Literal["invoice", "credit_note"],
    tenant: str,
    period: date,
    year: int,
) -> str:
    """The next number, e.g. ``RL-2026-000123`` (the year it is issued in); call inside the
    transaction that stores the document."""
    raw.execute("SELECT pg_advisory_xact_lock(%s)", (locks.NUMBERS,))
    row = raw.execute("SELECT coalesce(max(series_no), 0) + 1 FROM document_numbers").fetchone()
    assert row is not None
    series_no = int(row[0])
    number = f"{PREFIX}-{year}-{series_no:06d}"
    raw.execute(
        "INSERT INTO document_numbers (series_no, number, kind, tenant_id, period) "
        "VALUES (%s, %s, %s, %s, %s)",
        (series_no, number, kind, tenant, period),
    )
    return number

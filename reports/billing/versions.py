"""Versioned billing terms (plans, billing profiles): a row per tenant and date it takes
effect, with its content digest; never changed, only superseded by a later date."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import psycopg

Table = Literal["billing_plans", "billing_profiles"]
_COLUMN = {"billing_plans": "plan", "billing_profiles": "profile"}


def store_version(
    raw: psycopg.Connection[Any],
    table: Table,
    tenant: str,
    effective_from: date,
    body: str,
    digest: str,
) -> bool | None:
    """True if stored, False if the same content was there; None: other content is."""
    row = raw.execute(
        f"INSERT INTO {table} (tenant_id, effective_from, {_COLUMN[table]}, source_sha256) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
        (tenant, effective_from, body, digest),
    ).fetchone()
    if row is not None:
        raw.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        return True
    old = raw.execute(
        f"SELECT source_sha256 FROM {table} WHERE tenant_id = %s AND effective_from = %s",
        (tenant, effective_from),
    ).fetchone()
    return None if old is not None and old[0] != digest else False


def version_in_force(
    raw: psycopg.Connection[Any], table: Table, tenant: str, on: date
) -> dict[str, Any] | None:
    row = raw.execute(
        f"SELECT {_COLUMN[table]} FROM {table} WHERE tenant_id = %s AND effective_from <= %s "
        "ORDER BY effective_from DESC LIMIT 1",
        (tenant, on),
    ).fetchone()
    return dict(row[0]) if row else None


def versions_in_force(
    raw: psycopg.Connection[Any], table: Table, tenants: list[str], on: date
) -> dict[str, dict[str, Any]]:
    """Each tenant's version in force on ``on``, in one read; tenants without one absent."""
    rows = raw.execute(
        f"SELECT DISTINCT ON (tenant_id) tenant_id, {_COLUMN[table]} FROM {table} "
        "WHERE effective_from <= %s AND tenant_id = ANY(%s) "
        "ORDER BY tenant_id, effective_from DESC",
        (on, tenants),
    ).fetchall()
    return {t: dict(body) for t, body in rows}


def versions_of(raw: psycopg.Connection[Any], table: Table, tenant: str) -> list[dict[str, Any]]:
    rows = raw.execute(
        f"SELECT {_COLUMN[table]} FROM {table} WHERE tenant_id = %s ORDER BY effective_from",
        (tenant,),
    ).fetchall()
    return [dict(r[0]) for r in rows]

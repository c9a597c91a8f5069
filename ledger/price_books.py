"""Reading price book versions back from PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg

from ledger.prices import Price, PriceBook, PriceVersion


def read_version(raw: psycopg.Connection[Any], name: str) -> PriceVersion | None:
    if "\x00" in name:  # no name stored can hold one, and PostgreSQL refuses to compare it
        return None
    head = raw.execute(
        "SELECT version, name, effective_from, currency, source_sha256 FROM price_versions "
        "WHERE name = %s",
        (name,),
    ).fetchone()
    if head is None:
        return None
    rows = raw.execute(
        "SELECT sku, unit, unit_price_nanos, description FROM prices WHERE version = %s",
        (head[0],),
    ).fetchall()
    prices = {r[0]: Price(*r) for r in rows}
    return PriceVersion(head[0], head[1], head[2], head[3], prices, head[4])


def read_price_book(raw: psycopg.Connection[Any]) -> PriceBook:
    versions = raw.execute(
        "SELECT version, name, effective_from, currency, source_sha256 FROM price_versions "
        "WHERE kind = 'cost'"
    ).fetchall()
    prices: dict[int, dict[str, Price]] = {v[0]: {} for v in versions}
    for version, sku, unit, unit_price, description in raw.execute(
        "SELECT p.version, sku, unit, unit_price_nanos, description FROM prices p "
        "JOIN price_versions v USING (version) WHERE v.kind = 'cost'"
    ):
        prices[version][sku] = Price(sku, unit, unit_price, description)
    return PriceBook(
        tuple(PriceVersion(v[0], v[1], v[2], v[3], prices[v[0]], v[4]) for v in versions)
    )

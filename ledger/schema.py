"""Every table of the database on one ``MetaData``: what Alembic and the schema test compare
with the migrations. Importing the table modules is what puts their tables on it."""

from __future__ import annotations

from ledger import tables_alerts, tables_billing, tables_capacity
from ledger.tables import metadata

MODULES = (tables_alerts, tables_billing, tables_capacity)

__all__ = ["MODULES", "metadata"]

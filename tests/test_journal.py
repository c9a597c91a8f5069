"""The journal is the log's one definition: its columns match the table, the append's COPY
rows match its fields by name, and every other module reads the log through it."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine

from ledger import journal
from ledger.connections import connection
from ledger.rating import rate
from ledger.store import Ledger, _copy_row
from ledger.tables import cost_events
from tests.conftest import EventFactory

ROOT = Path(__file__).resolve().parents[1]


def test_the_columns_are_the_tables_and_the_copy_writes_all_but_the_clock(
    owner: psycopg.Connection[Any],
) -> None:
    assert set(journal.COLUMNS) == {c.name for c in cost_events.columns}
    assert set(journal.COLUMNS) - set(journal.WRITTEN) == {"recorded_at"}
    in_db = dict(
        owner.execute(
            "SELECT column_name, udt_name FROM information_schema.columns "
            "WHERE table_name = 'cost_events'"
        ).fetchall()
    )
    assert set(in_db) == set(journal.COLUMNS)
    for column, wire in zip(journal.WRITTEN, journal.COPY_TYPES, strict=True):
        # Binary COPY sends exactly these; text is also how varchar(3) travels.
        assert wire == in_db[column] or (wire, in_db[column]) == ("text", "varchar"), column


def test_the_narrow_rows_are_columns_of_the_log() -> None:
    for row in (journal.RenderOwner, journal._Reversal):
        assert set(row._fields) <= set(journal.COLUMNS), row
    # The canonical form a hash was made in is its block's, not a column of the event.
    assert set(journal.StoredHash._fields) - set(journal.COLUMNS) == {"content_version"}


def test_a_copy_row_holds_each_field_where_the_column_list_says(
    ledger: Ledger, make_event: EventFactory
) -> None:
    event = make_event(cache="hit", baseline_quantity=Decimal("4"))
    ledger.append([event])
    (stored,) = journal.read_render(ledger.engine, event.render_id)
    row = _copy_row(stored.seq, rate(0, event, ledger.price_book()), stored.block_id)
    assert dict(zip(journal.WRITTEN, row, strict=True)) == {
        c: getattr(stored, c) for c in journal.WRITTEN
    }


def test_stream_reads_every_event_in_order_and_closes_inside_the_transaction(
    ledger: Ledger, make_event: EventFactory
) -> None:
    ledger.append([make_event() for _ in range(3)])
    with connection(ledger.engine) as raw:
        raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        events = journal.stream(raw)
        first = next(events)
        assert isinstance(first, journal.StoredEvent)
        seqs = [first.seq, *(e.seq for e in events)]
        assert seqs == list(range(1, journal.head(raw) + 1))
        partial = journal.stream(raw)
        next(partial)
        partial.close()
        cursors = raw.execute("SELECT count(*) FROM pg_cursors").fetchone()
        assert cursors == (0,)


def test_keyed_reads_stay_within_the_tenant(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    original = make_event()
    reversal = make_event(reverses=original.event_id)
    ledger.append([original, reversal])
    mine = (tenant, original.event_id)
    theirs = ("someone-else", original.event_id)
    unknown = (tenant, uuid.uuid4())
    with connection(ledger.engine) as raw:
        found = journal.events_by_key(raw, [mine, theirs, unknown])
        assert list(found) == [mine]
        assert found[mine].event_id == original.event_id
        assert journal.reversed_events(raw, [mine, theirs, unknown]) == {mine}
        assert journal.reversed_events(raw, [(tenant, reversal.event_id)]) == set()
        hashes = journal.stored_hashes(raw, [mine, theirs])
        assert list(hashes) == [mine]
        assert hashes[mine].content_hash == original.content_hash()
        assert hashes[mine].content_version == 1


def test_a_render_belongs_to_its_first_events_tenant_and_use_case(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    event = make_event(use_case="avatars")
    ledger.append([event, make_event(use_case="other")])
    with connection(ledger.engine) as raw:
        owners = journal.render_owners(raw, [event.render_id, uuid.uuid4()])
    assert owners == {event.render_id: journal.RenderOwner(event.render_id, tenant, "avatars")}


def test_recorded_at_of_a_position(
    ledger: Ledger, engine: Engine, make_event: EventFactory
) -> None:
    receipt = ledger.append([make_event()])
    assert receipt.first_seq is not None
    with connection(engine) as raw:
        assert journal.recorded_at(raw, receipt.first_seq) is not None
        assert journal.recorded_at(raw, journal.head(raw) + 1) is None


def test_no_other_product_module_names_the_log() -> None:
    # The schema (tables.py) and the migrations define the table; the journal reads it.
    allowed = {"ledger/journal.py", "ledger/tables.py"}
    for package in ("ledger", "ingest", "render", "reports", "service"):
        for path in (ROOT / package).rglob("*.py"):
            name = str(path.relative_to(ROOT))
            if name not in allowed:
                assert not re.search(r"\bcost_events\b", path.read_text()), name

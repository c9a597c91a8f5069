"""History cannot change: the database refuses, and verify notices when a superuser forces it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import errors

from ledger import database
from ledger.chain import verify
from ledger.connections import connection
from ledger.store import Ledger
from tests.conftest import EventFactory, ledger_with_prices

STATEMENTS = [
    "UPDATE cost_events SET cost_nanos = 0 WHERE tenant_id = %s",
    "DELETE FROM cost_events WHERE tenant_id = %s",
    "UPDATE blocks SET hash = '\\x00' WHERE block_id IN "
    "(SELECT block_id FROM cost_events WHERE tenant_id = %s)",
]


@pytest.mark.parametrize("sql", STATEMENTS)
def test_the_trigger_refuses_changes_even_to_a_superuser(
    ledger: Ledger, owner: psycopg.Connection[Any], make_event: EventFactory, tenant: str, sql: str
) -> None:
    ledger.append([make_event()])
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        owner.execute(sql, (tenant,))
    (count,) = owner.execute(
        "SELECT count(*) FROM cost_events WHERE tenant_id = %s", (tenant,)
    ).fetchone() or (0,)
    assert count == 1


@pytest.mark.parametrize("table", ["cost_events", "blocks"])
def test_truncate_is_refused(owner: psycopg.Connection[Any], table: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
        owner.execute(f"TRUNCATE {table} CASCADE")


def test_the_application_role_has_no_update_grant(
    ledger: Ledger, make_event: EventFactory, tenant: str
) -> None:
    ledger.append([make_event()])
    with connection(ledger.engine) as raw:
        assert raw.execute("SELECT current_user").fetchone() == ("renderledger_app",)
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
            raw.execute("UPDATE cost_events SET cost_nanos = 0 WHERE tenant_id = %s", (tenant,))


def tamper(url: str, assignment: str, seq: int | None) -> None:
    """What a superuser can do behind the ledger's back: lift the trigger, change a row."""
    with psycopg.connect(database.libpq_url(url), autocommit=True) as su, su.transaction():
        su.execute("ALTER TABLE cost_events DISABLE TRIGGER cost_events_append_only")
        su.execute(f"UPDATE cost_events SET {assignment} WHERE seq = %s", (seq,))
        su.execute("ALTER TABLE cost_events ENABLE TRIGGER cost_events_append_only")


def test_verify_names_the_block_altered_behind_the_ledgers_back(
    fresh_database: str, make_event: EventFactory
) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    receipts = [ledger.append([make_event() for _ in range(5)]) for _ in range(4)]
    assert verify(engine).ok
    target = receipts[2]
    tamper(fresh_database, "cost_nanos = 1", target.last_seq)
    result = verify(engine)
    assert not result.ok
    assert result.broken_block == target.block_id
    assert result.reason is not None
    assert "hash" in result.reason
    engine.dispose()


def test_verify_notices_altered_producer_content(
    fresh_database: str, make_event: EventFactory
) -> None:
    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    receipt = ledger.append([make_event() for _ in range(3)])
    tamper(fresh_database, "quantity = 0", receipt.first_seq)
    result = verify(engine)
    assert (result.ok, result.broken_block) == (False, receipt.block_id)
    assert result.reason is not None
    assert "content hash" in result.reason
    engine.dispose()


def test_migrations_go_down_and_up_again(fresh_database: str) -> None:
    database.downgrade(fresh_database, "base")
    with psycopg.connect(database.libpq_url(fresh_database)) as conn:
        assert conn.execute("SELECT to_regclass('cost_events')").fetchone() == (None,)
    database.migrate(fresh_database)
    with psycopg.connect(database.libpq_url(fresh_database)) as conn:
        assert conn.execute("SELECT to_regclass('cost_events')").fetchone() == ("cost_events",)


def test_the_migrated_schema_matches_the_table_definitions(db_url: str) -> None:
    """ledger/tables.py and the hand-written revisions must not drift apart."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from ledger.schema import metadata

    engine = create_engine(database.sqlalchemy_url(db_url))
    with engine.connect() as conn:
        # The log's partitions are its storage, not tables of the schema (migration 0018).
        partitions = set(
            conn.exec_driver_sql(
                "SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'"
            ).scalars()
        )
        context = MigrationContext.configure(
            conn,
            opts={
                "include_name": lambda name, kind, _parent: (
                    not (kind == "table" and name in partitions)
                )
            },
        )
        diff = compare_metadata(context, metadata)
    engine.dispose()
    assert diff == []


def test_blocks_record_their_canonical_form_and_verify_uses_it(
    fresh_database: str, make_event: EventFactory
) -> None:
    """A block names the canonical form of its hashes; verify recomputes in that form, so a
    form it does not know (or a block relabelled behind its back) is reported, not skipped."""
    from ledger.events import CONTENT_VERSION

    engine = database.make_engine(fresh_database, app_role="renderledger_app")
    ledger = ledger_with_prices(engine)
    receipt = ledger.append([make_event() for _ in range(3)])
    with psycopg.connect(database.libpq_url(fresh_database), autocommit=True) as su:
        row = su.execute(
            "SELECT content_version FROM blocks WHERE block_id = %s", (receipt.block_id,)
        ).fetchone()
        assert row == (CONTENT_VERSION,)
        su.execute("ALTER TABLE blocks DISABLE TRIGGER blocks_append_only")
        su.execute(
            "UPDATE blocks SET content_version = 99 WHERE block_id = %s", (receipt.block_id,)
        )
        su.execute("ALTER TABLE blocks ENABLE TRIGGER blocks_append_only")
    result = verify(engine)
    assert result.broken_block == receipt.block_id
    assert result.reason is not None
    assert "no canonical form 99" in result.reason
    engine.dispose()

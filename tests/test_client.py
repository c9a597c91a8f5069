"""The producer spool: durable before delivery, in order, rejected batches set aside."""

from __future__ import annotations

from pathlib import Path

from ingest.client import Emitter, LedgerTransport, Spool
from ledger.journal import read_render
from ledger.store import Ledger
from tests.conftest import EventFactory


def test_spooled_batches_survive_a_new_process_and_deliver_in_order(
    ledger: Ledger, make_event: EventFactory, tmp_path: Path
) -> None:
    batches = [[make_event() for _ in range(3)] for _ in range(3)]
    first = Spool(tmp_path / "spool")
    for batch in batches:
        first.write(batch)
    reopened = Spool(tmp_path / "spool")  # as a restarted renderer would
    assert len(reopened.pending()) == 3
    assert reopened.read(reopened.pending()[0]) == batches[0]
    assert reopened.flush(LedgerTransport(ledger)) == (3, 0)
    stored = read_render(ledger.engine, batches[0][0].render_id)
    assert [e.event_id for e in stored] == [e.event_id for b in batches for e in b]


def test_a_rejected_batch_is_set_aside_and_the_rest_go_on(
    ledger: Ledger, make_event: EventFactory, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    good = make_event()
    ledger.append([good])
    spool.write([good.model_copy(update={"attributes": {"changed": True}})])  # a conflict
    spool.write([make_event()])
    assert spool.flush(LedgerTransport(ledger)) == (1, 0)
    assert len(list((tmp_path / "spool" / "rejected").glob("*.ndjson"))) == 1


def test_emit_delivers_at_once_when_the_ledger_is_up(
    ledger: Ledger, make_event: EventFactory, tmp_path: Path
) -> None:
    emitter = Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool"))
    event = make_event()
    emitter.emit([event])
    assert emitter.spool.pending() == []
    assert [e.event_id for e in read_render(ledger.engine, event.render_id)] == [event.event_id]
    assert emitter.close() == 0

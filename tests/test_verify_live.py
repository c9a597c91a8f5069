"""``verify`` on a live ledger: appends that commit while it reads are not a broken chain."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from ledger import chain
from ledger.store import Ledger
from tests.conftest import EventFactory


def test_an_append_between_the_two_reads_is_not_in_no_block(
    ledger: Ledger, engine: Engine, make_event: EventFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger.append([make_event()])
    read_rows = chain._Rows.__init__

    def append_first(self: chain._Rows, raw: Any) -> None:
        # Commits after verify read the blocks and before it reads the rows: it used to
        # report "event seq N is in no block" (reliability run, issue 11).
        ledger.append([make_event() for _ in range(3)])
        read_rows(self, raw)

    monkeypatch.setattr(chain._Rows, "__init__", append_first)
    result = chain.verify(engine)
    assert result.ok, result.reason

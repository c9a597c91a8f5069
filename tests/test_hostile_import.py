"""Hypothesis on the importer: any mix of good rows and garbage ends in whole batches only."""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.importer import ImportFailed, import_events, open_source
from ledger.connections import connection
from ledger.store import Ledger
from tests.conftest import EventFactory

garbage = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.sampled_from([b"{", b"[]", b"null", b'{"event_id": 1}', b"\xff\xfe", b'"\\u0000"']),
).filter(lambda b: b.strip())
lines = st.lists(st.one_of(st.just(None), garbage), min_size=1, max_size=14)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(layout=lines, batch=st.integers(1, 5))
def test_any_file_leaves_whole_batches_only(
    ledger: Ledger, make_event: EventFactory, tmp_path: Path, layout: list[bytes | None], batch: int
) -> None:
    tenant, render = f"f-{uuid.uuid4().hex[:10]}", uuid.uuid4()  # a render has one tenant
    rows = [
        orjson.dumps(make_event(tenant_id=tenant, render_id=render).model_dump(mode="json"))
        if item is None
        else item
        for item in layout
    ]
    path = tmp_path / f"{uuid.uuid4().hex}.ndjson"
    path.write_bytes(b"\n".join(rows) + b"\n")
    first_bad = next((i for i, item in enumerate(layout) if item is not None), len(layout))
    expected = (first_bad // batch) * batch if first_bad < len(layout) else first_bad

    def run() -> int:
        with ExitStack() as stack:
            source = open_source(str(path), None, stack)
            return import_events(ledger, source, batch_size=batch).accepted

    if first_bad == len(layout):
        assert run() == expected
    else:
        with pytest.raises(ImportFailed) as info:
            run()
        assert (info.value.line, info.value.written) == (first_bad + 1, expected)
    with connection(ledger.engine) as raw:
        row = raw.execute("SELECT count(*) FROM cost_events WHERE tenant_id = %s", (tenant,))
        assert (row.fetchone() or (0,))[0] == expected

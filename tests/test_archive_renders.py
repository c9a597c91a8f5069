"""A render trace after ``archive prune`` (issue 16): the same bytes as before the prune,
its pruned events read from only the archive files that hold them, a render still wholly in
PostgreSQL read without the archive, and another tenant's render refused before it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import pytest
from pyiceberg.io.pyarrow import ArrowScan

from ledger import database
from ledger.journal import StoredEvent, read_after
from reports import archive_events
from reports.archive_export import export_sealed
from reports.archive_prune import prune
from reports.jobs import run_rollup
from service.http.app import create_app
from service.keys import create_key
from tests.conftest import serving
from tests.test_archive_prune import LATER, Small, history, small  # noqa: F401  (fixture)


def _renders(log: list[StoredEvent]) -> dict[UUID, list[int]]:
    """Each render's seqs, in seq order."""
    seqs: dict[UUID, list[int]] = {}
    for e in log:
        seqs.setdefault(e.render_id, []).append(e.seq)
    return seqs


@contextmanager
def files_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The archive's data files read while inside, by path."""
    read: list[str] = []
    original = ArrowScan.to_record_batches

    def spy(self: ArrowScan, tasks: Any) -> Any:
        tasks = list(tasks)
        read.extend(t.file.file_path for t in tasks)
        return original(self, tasks)

    with monkeypatch.context() as m:
        m.setattr(ArrowScan, "to_record_batches", spy)
        yield read


def no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any) -> Any:
        raise AssertionError("the archive was opened")

    monkeypatch.setattr(archive_events.history, "opened", refuse)


def test_a_render_trace_is_the_same_after_prune(
    small: Small,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    history(small)  # seq 1..70; block 5 (seq 41..50) reverses an event of block 1
    export_sealed(small.engine, small.settings, max_commits=4)  # one file per block, 1..40
    run_rollup(small.engine)
    log = read_after(small.engine, 0, 1000)
    renders = _renders(log)
    tenant = log[0].tenant_id
    admin = create_key(small.engine, None, ["admin"], "tests")
    own = create_key(small.engine, tenant, ["read"], "tests")
    other = create_key(small.engine, "t-other", ["read"], "tests")
    app_ = create_app(small.settings, small.ledger, schedule=False)
    with serving(app_) as base, httpx.Client(base_url=base, timeout=30) as http:

        def get(path: str, key: str = admin) -> httpx.Response:
            return http.get(path, headers={"authorization": f"Bearer {key}"})

        paths = [f"/v1/renders/{r}" for r in renders]
        paths += [f"/v1/events?render_id={r}" for r in renders]
        paths += [f"/v1/events?render_id={r}&after_seq=5&limit=3" for r in renders]
        before = {p: get(p) for p in paths}
        assert all(got.status_code == 200 for got in before.values())
        first = f"/v1/renders/{log[0].render_id}"
        assert get(first, own).content == before[first].content

        result = prune(small.owner, small.settings, "1d", now=LATER)
        assert [p.name for p in result.pruned] == ["cost_events_p1", "cost_events_p21"]

        for path in paths:
            got = get(path)
            assert got.status_code == 200, got.text
            assert got.content == before[path].content, path
        assert get(first, own).content == before[first].content
        # Only the files holding a render's pruned events are read (a file a block here).
        for render, seqs in renders.items():
            with files_read(monkeypatch) as read:
                get(f"/v1/renders/{render}")
            assert len(set(read)) == len({(seq - 1) // 10 for seq in seqs if seq <= 40})
        assert any(seqs[0] <= 10 for seqs in renders.values())

        # Another tenant's render is refused, before the archive is opened; a render wholly
        # in PostgreSQL is read without it.
        with monkeypatch.context() as m:
            no_archive(m)
            assert get(first, other).status_code == 404
            hot = next(r for r, seqs in renders.items() if seqs[0] > 40)
            assert get(f"/v1/renders/{hot}").content == before[f"/v1/renders/{hot}"].content


def test_a_render_spanning_the_line_and_reversed_across_it(
    small: Small,  # noqa: F811
) -> None:
    events = history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    run_rollup(small.engine)
    log = read_after(small.engine, 0, 1000)
    target = next(e for e in events[:10] if e.stage == "unet")  # reversed at seq 50
    across = [e for e in log if e.render_id == target.render_id]
    assert across[0].seq <= 10
    assert across[-1].seq == 50
    assert prune(small.owner, small.settings, "1d", now=LATER).pruned
    got = archive_events.read_render(small.engine, small.settings, target.render_id)
    assert got == across


def test_renders_pruned_before_their_seqs_were_recorded(
    small: Small,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ranges pruned before migration 0020 are read whole until the next prune records
    their renders from the archive."""
    history(small)
    export_sealed(small.engine, small.settings, max_commits=4)
    run_rollup(small.engine)
    log = read_after(small.engine, 0, 1000)
    renders = _renders(log)
    assert prune(small.owner, small.settings, "1d", now=LATER).pruned
    expected = {r: [e for e in log if e.render_id == r] for r in renders}

    database.downgrade(small.url, "0018")  # the records go; every pruned range is unrecorded
    database.migrate(small.url)
    for render, events in expected.items():
        assert archive_events.read_render(small.engine, small.settings, render) == events

    result = prune(small.owner, small.settings, "1d", now=LATER)
    assert result.recorded == [(1, 20), (21, 40)]
    assert not result.pruned  # seq 41..60 is not archived
    with monkeypatch.context() as m:
        no_archive(m)
        hot = next(r for r, seqs in renders.items() if seqs[0] > 40)
        assert archive_events.read_render(small.engine, small.settings, hot) == expected[hot]
    for render, events in expected.items():
        assert archive_events.read_render(small.engine, small.settings, render) == events

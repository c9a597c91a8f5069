"""``renderledger archive …``: the columnar history (issue 16), and verify's archive part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine

from ledger.connections import connection
from ledger.journal import head
from reports.archive import ArchiveError, archived, export_sealed, load_table, opened_catalog
from reports.archive_verify import spans, verify_archive
from service.cli.common import err, fail, open_ledger, out, plain, progress_bar
from service.settings import Settings, get_settings

archive_app = typer.Typer(
    help="The columnar history: sealed blocks in an Apache Iceberg table.", no_args_is_help=True
)


@archive_app.command("export")
def export(
    max_commits: Annotated[
        int | None, typer.Option(help="Stop after this many Iceberg commits")
    ] = None,
) -> None:
    """Append sealed blocks older than RENDERLEDGER_ARCHIVE__LAG_S to the Iceberg table.

    Safe to repeat and to kill: each commit records what it holds, and the next run starts
    after the last committed one."""
    settings = get_settings()
    engine = open_ledger(settings).engine
    try:
        result = export_sealed(engine, settings, max_commits=max_commits)
    except ArchiveError as exc:
        raise fail(str(exc), code=2) from exc
    if not result.ran:
        raise fail("another process is exporting; try again when it is done", code=3)
    out.print(
        f"exported {result.events:,} events in {result.commits} commit(s) "
        f"({result.seconds:.1f} s); the archive holds seq 1..{result.last_seq}"
    )


@archive_app.command("status")
def status() -> None:
    """Where the table is, what it holds, and its last commits."""
    settings = get_settings()
    engine = open_ledger(settings).engine
    with opened_catalog(engine, settings) as catalog:
        table = load_table(catalog, settings)
        state = archived(table)
        with connection(engine) as raw:
            last = head(raw)
        if table is None:
            out.print(f"nothing archived yet; the log holds seq 1..{last}")
            return
        out.print(f"table {'.'.join(table.name())} at {plain(table.location())}", highlight=False)
        out.print(f"archived: seq 1..{state.last_seq} of {last} (blocks 1..{state.last_block})")
        shown = Table("snapshot", "committed", "seq", "blocks", "events", "last block hash")
        for c in state.commits[-10:]:
            at = datetime.fromtimestamp(c.committed_ms / 1000, UTC)
            shown.add_row(
                str(c.snapshot_id),
                f"{at:%Y-%m-%d %H:%M:%S}",
                f"{c.first_seq}..{c.last_seq}",
                f"{c.first_block}..{c.last_block}",
                f"{c.events:,}",
                c.last_hash.hex()[:16] + "…",
            )
        out.print(shown)


def verify_history(engine: Engine, settings: Settings, blocks: int, events: int) -> None:
    """``verify``'s second half, after the chain verified ``blocks`` blocks and ``events``
    events in PostgreSQL: the archive's rows against the chain, and which range was read
    from where. Raises exit 2 when the archive disagrees with the chain."""
    with progress_bar() as progress:
        task = progress.add_task("verifying the archive", total=None)
        result = verify_archive(engine, settings, lambda n: progress.advance(task, n))
    archive = result.archive if result is not None else archived(None)
    for span in spans(archive, events, blocks):
        seqs = f"seq {span.first_seq}..{span.last_seq}"
        out.print(f"  {seqs} (blocks {span.first_block}..{span.last_block}): {span.source}")
    if result is None or result.ok:
        return
    for broken in result.rows.broken:
        where = f"archive block {broken.block_id}" if broken.block_id else "the archive"
        err.print(f"broken: {where}: {plain(broken.reason)}", highlight=False)
    for problem in result.problems:
        err.print(f"broken: {plain(problem)}", highlight=False)
    raise fail(
        f"the archive disagrees with the chain ({len(result.rows.broken)} block(s), "
        f"{len(result.problems)} other problem(s)); {result.events_checked} archived events read",
        code=2,
    )

"""``renderledger archive …``: the columnar history (issue 16), and verify's archive part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import psycopg
import typer
from rich.table import Table
from sqlalchemy import Engine

from ledger import database
from ledger.chain import VerifyResult
from ledger.connections import connection
from ledger.journal import head
from reports.archive import (
    ArchiveError,
    archived,
    load_table,
    opened_catalog,
    recorded_commits,
)
from reports.archive_export import export_sealed
from reports.archive_verify import spans, verify_archive
from service.cli.common import database_url, err, fail, open_ledger, out, plain, progress_bar
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


@archive_app.command("prune")
def prune_command(
    keep: Annotated[
        str, typer.Option(help="Keep in PostgreSQL what was stored within this: 90d, 3mo, 1y")
    ] = "3mo",
    dry_run: Annotated[bool, typer.Option(help="Say what would be pruned; change nothing")] = False,
) -> None:
    """Drop partitions of the log that the archive holds, verified, and that are older than
    --keep; create the next partitions ahead of the head; expire older Iceberg snapshots
    (their summaries are kept in PostgreSQL). Runs as the owner role (DDL)."""
    from reports.archive_prune import keep_window, prune

    settings = get_settings()
    try:
        keep_window(keep)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    open_ledger(settings).engine.dispose()  # the schema's revision is checked there
    engine = database.make_engine(database_url(settings))  # the owner: no SET ROLE
    try:
        result = prune(engine, settings, keep, dry_run=dry_run)
    except (ArchiveError, RuntimeError) as exc:
        raise fail(str(exc), code=2) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise fail(f"{exc} (prune runs as the owner role, as `migrate` does)", code=2) from exc
    finally:
        engine.dispose()
    for v in result.verdicts:
        verdict = ("would prune" if dry_run else "pruned") if v.prune else f"kept: {v.reason}"
        seqs = f"seq {v.partition.first_seq}..{v.partition.last_seq}"
        out.print(f"{v.partition.name} ({seqs}): {plain(verdict)}", highlight=False)
    if result.verified is not None:
        (first, last), read = result.verified
        out.print(f"the archive verified for seq {first}..{last}: {read:,} events read")
    for problem in result.problems:
        err.print(f"broken: {plain(problem)}", highlight=False)
    if result.problems:
        raise fail("the archive failed verification; nothing was pruned", code=2)
    for first, last in result.recorded:
        out.print(f"seq {first}..{last}: renders recorded from the archive (pruned before 0020)")
    if not dry_run:
        out.print(
            f"pruned {len(result.pruned)} partition(s); created {len(result.created)} ahead of "
            f"the head; expired {result.expired_snapshots} Iceberg snapshot(s)"
        )


@archive_app.command("status")
def status() -> None:
    """Where the table is, what it holds, and its last commits."""
    settings = get_settings()
    engine = open_ledger(settings).engine
    with opened_catalog(engine, settings) as catalog:
        table = load_table(catalog, settings)
        with connection(engine) as raw:
            last = head(raw)
            state = archived(table, recorded=recorded_commits(raw))
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


def verify_history(engine: Engine, settings: Settings, chain: VerifyResult) -> None:
    """``verify``'s second half, after the chain was verified in PostgreSQL (``chain``): the
    archive's rows against the chain, and which range was read from where; a range pruned
    from PostgreSQL is judged from the archive alone. Raises exit 2 when the archive
    disagrees with the chain or a pruned range has no archive."""
    with progress_bar() as progress:
        task = progress.add_task("verifying the archive", total=None)
        result = verify_archive(engine, settings, lambda n: progress.advance(task, n))
    archive = result.archive if result is not None else archived(None)
    head = chain.first_seq - 1 + chain.events_checked
    head_block = chain.first_block - 1 + chain.blocks_checked
    if archive.last_seq < chain.first_seq - 1:
        raise fail(
            f"seq 1..{chain.first_seq - 1} was pruned from PostgreSQL, and the archive holds "
            f"only seq 1..{archive.last_seq}: that range cannot be verified",
            code=2,
        )
    for span in spans(archive, head, head_block, chain.first_seq, chain.first_block):
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

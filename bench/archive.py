"""The columnar history (issue 16), side by side in one run over N generated events:

- export of the sealed log to the Iceberg table, against writing the same rows (the same
  ADBC read) as one plain Parquet file with pyarrow, and against the read alone;
- the full rollup rebuild from archive + hot tail, from PostgreSQL alone (the same code,
  no archive), and the same daily and per-render aggregation as SQL GROUP BY inside
  PostgreSQL;
- the peak memory (max RSS) of each, every one measured in a fresh process of its own.

Events are generated in PostgreSQL as bench/rollup_rebuild.py does (1,000 tenants, nine
events per render), in blocks of ``--block`` events; the last ``--tail`` events are a
block of their own that is not archived, so the rebuild reads archive and tail.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.report import write_section
from bench.rollup_rebuild import TENANTS, generate, sql_side_by_side
from ledger import database
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports.archive import COLUMNS, arrow_schema, log_ranges
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.jobs import run_rollup
from service.cli.main import DEFAULT_PRICES
from service.settings import Settings

ROLE = "renderledger_app"


def _settings(url: str, data_dir: str, commit_events: int) -> Settings:
    archive = ArchiveSettings(lag_s=0, commit_events=commit_events)
    return Settings(database_url=url, data_dir=Path(data_dir), archive=archive)


def _export(url: str, data_dir: str, commit_events: int, max_commits: int | None) -> dict[str, Any]:
    engine = database.make_engine(url, app_role=ROLE)
    result = export_sealed(engine, _settings(url, data_dir, commit_events), max_commits=max_commits)
    return {"events": result.events, "commits": result.commits}


def _parquet(url: str, data_dir: str, lo: int, hi: int, write: bool) -> dict[str, Any]:
    rows = 0
    schema = arrow_schema(COLUMNS)
    writer = (
        pq.ParquetWriter(Path(data_dir) / "plain.parquet", schema, compression="zstd")
        if write
        else None
    )
    for batch in log_ranges(database.libpq_url(url), ROLE, COLUMNS, lo, hi):
        rows += batch.num_rows
        if writer is not None:
            writer.write_batch(batch)
    if writer is not None:
        writer.close()
    return {"events": rows}


def _rebuild(url: str, data_dir: str, archived: bool) -> dict[str, Any]:
    engine = database.make_engine(url, app_role=ROLE)
    archive = _settings(url, data_dir, 1) if archived else None
    result = run_rollup(engine, rebuild=True, archive=archive)
    return {"events": result.events, "phases": result.phases}


def _sql(url: str) -> dict[str, Any]:
    daily_s, renders_s = sql_side_by_side(url)
    return {"daily_s": daily_s, "renders_s": renders_s}


def _child(job: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: Any) -> None:
    started = time.perf_counter()
    found = job(*args)
    found["seconds"] = time.perf_counter() - started
    found["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.put(found)


def measured(job: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``job(*args)`` in a fresh process: its result, wall seconds and peak memory."""
    ctx = multiprocessing.get_context("spawn")
    box = ctx.Queue()
    proc = ctx.Process(target=_child, args=(job, args, box))
    proc.start()
    found: dict[str, Any] = box.get()
    proc.join()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--block", type=int, default=1_000_000)
    parser.add_argument("--tail", type=int, default=100_008)
    parser.add_argument("--commit-events", type=int, default=1_000_000)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    n = args.events - args.events % 9
    tail = args.tail - args.tail % 9
    archived_n = n - tail
    with (
        database.throwaway_server("renderledger-archive-") as url,
        tempfile.TemporaryDirectory(prefix="renderledger-warehouse-") as data_dir,
    ):
        database.migrate(url)
        engine = database.make_engine(url, app_role=ROLE)
        Ledger(engine).load_prices(load_price_book_file(DEFAULT_PRICES))
        engine.dispose()
        print(f"generating {n:,} events in blocks of {args.block:,}…", file=sys.stderr)
        t0 = time.perf_counter()
        bounds = [
            (lo, min(lo + args.block - 1, archived_n))
            for lo in range(1, archived_n + 1, args.block)
        ]
        for block, (lo, hi) in enumerate(bounds, start=1):
            generate(url, lo, hi, block)
        gen_s = time.perf_counter() - t0

        print("reading the log alone…", file=sys.stderr)
        read = measured(_parquet, url, data_dir, 1, archived_n, False)
        print("plain Parquet…", file=sys.stderr)
        plain = measured(_parquet, url, data_dir, 1, archived_n, True)
        plain_mib = (Path(data_dir) / "plain.parquet").stat().st_size / 2**20
        print("export to Iceberg…", file=sys.stderr)
        export = measured(_export, url, data_dir, args.commit_events, None)
        assert export["events"] == archived_n, export
        # The events that came after the export: the hot tail.
        t0 = time.perf_counter()
        generate(url, archived_n + 1, n, len(bounds) + 1)
        gen_s += time.perf_counter() - t0
        warehouse = Path(data_dir) / "warehouse"
        iceberg_mib = sum(p.stat().st_size for p in warehouse.rglob("*") if p.is_file()) / 2**20
        print("rebuild from archive + tail…", file=sys.stderr)
        from_archive = measured(_rebuild, url, data_dir, True)
        print("rebuild from PostgreSQL…", file=sys.stderr)
        from_postgres = measured(_rebuild, url, data_dir, False)
        print("SQL GROUP BY…", file=sys.stderr)
        sql = measured(_sql, url)

    load = os.getloadavg()[1]  # the 5-minute average at the end: other work on the machine

    def phases(found: dict[str, Any]) -> str:
        return ", ".join(f"{name} {s:.1f} s" for name, s in found["phases"].items())

    def rate(found: dict[str, Any]) -> str:
        return f"{found['seconds']:.1f} s ({found['events'] / found['seconds']:,.0f} events/s)"

    sql_s = sql["daily_s"] + sql["renders_s"]
    table = "\n".join(
        [
            "| measure | time | peak memory (max RSS) |",
            "|---|---:|---:|",
            f"| events generated | {n:,} over {TENANTS:,} tenants, {len(bounds) + 1} blocks "
            f"({gen_s:.0f} s in SQL) | |",
            f"| read {archived_n:,} events out of PostgreSQL as the export does (ADBC, two "
            "ranges in flight), no write "
            f"| {rate(read)} | {read['peak_mib']:,.0f} MiB |",
            f"| the same read written as one plain Parquet file (pyarrow, zstd; {plain_mib:,.0f} "
            f"MiB) | {rate(plain)} | {plain['peak_mib']:,.0f} MiB |",
            f"| **export to Iceberg** ({export['commits']} commits; {iceberg_mib:,.0f} MiB with "
            f"metadata) | {rate(export)} | {export['peak_mib']:,.0f} MiB |",
            f"| export / plain Parquet | {export['seconds'] / plain['seconds']:.2f}× the time | |",
            f"| **full rebuild from archive + tail** ({archived_n:,} archived, {tail:,} in the "
            f"tail) | {rate(from_archive)} | {from_archive['peak_mib']:,.0f} MiB |",
            f"| its phases (read and aggregate overlap the COPY) | {phases(from_archive)} | |",
            f"| full rebuild from PostgreSQL alone (no archive: the rollup's SQL reading, as "
            f"before) | {rate(from_postgres)} "
            f"| {from_postgres['peak_mib']:,.0f} MiB |",
            f"| its phases | {phases(from_postgres)} | |",
            f"| the same daily + per-render aggregation as SQL GROUP BY in PostgreSQL (no "
            f"write-back) | {sql_s:.1f} s ({sql['daily_s']:.1f} + {sql['renders_s']:.1f}) | |",
            f"| rebuild from archive + tail vs SQL GROUP BY | "
            f"{sql_s / from_archive['seconds']:.2f}× as fast | |",
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Columnar history (issue 16)\n\n"
            f"{n:,} generated events (bench/rollup_rebuild.py's generator, {args.block:,}-event "
            f"blocks), {archived_n:,} exported to the Iceberg table in commits of at most "
            f"{args.commit_events:,} events on the local disk; the last block stays in "
            "PostgreSQL as the hot tail. Each row is a fresh process (peak memory is its own). "
            "The rebuilds include writing the rollup tables back; the SQL rows do not. "
            f"Load average (1 min) at the start {load_before:.1f}; (5 min) at the end of the "
            f"run: {load:.1f}, on {os.cpu_count()} cores (other work shares the machine; the "
            "rows side by side ran under the same load).\n\n" + table
        )
        command = "python -m bench.archive " + " ".join(sys.argv[1:])
        write_section(args.write, "archive", body, command)


if __name__ == "__main__":
    main()

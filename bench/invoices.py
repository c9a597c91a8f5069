"""Invoices at scale: draft and export every tenant's invoice for a month of N events.

The events are generated in PostgreSQL as in rollup_rebuild.py (1,000 tenants, a render
a second from 1 October, nine events a render). Plans cover the three shapes a real book
has: cost-plus, per-image tiers, and per-image for one use case with cost-plus for the
rest and a commitment; a tenth of the tenants bill in New York or Berlin months. The PDF
step is timed apart.

Issue 16: all but the last ``--tail`` events are generated in blocks of ``--block`` events
and exported to the Iceberg archive; the tail is a block of its own that stays in
PostgreSQL. The batch draft is then timed side by side, alternately, from PostgreSQL alone
and from archive + tail (``reports.history``), and must draft the same invoices.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine

from bench.report import write_section
from bench.rollup_rebuild import TENANTS, generate
from ledger import database
from ledger.connections import connection
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from reports import history
from reports.archive_export import export_sealed
from reports.archive_settings import ArchiveSettings
from reports.billing.document import Invoice
from reports.billing.exports import export
from reports.billing.lifecycle import draft_all, finalize_all, invoice
from reports.billing.plans import CreditGrant, parse_plan, store_grant, store_plan
from service.cli.main import DEFAULT_PRICES
from service.settings import Settings

OCT = date(2026, 10, 1)
SEPT = date(2026, 9, 1)
TIERS = [
    {"up_to": 1000, "unit_price": "0.0060"},
    {"up_to": 5000, "unit_price": "0.0051"},
    {"unit_price": "0.0042"},
]


def plan_for(i: int) -> dict[str, object]:
    zone = ("America/New_York", "Europe/Berlin")[i % 2] if i % 10 == 0 else "UTC"
    base: dict[str, object] = {
        "tenant": f"t{i:04d}",
        "effective_from": "2026-09-01",
        "timezone": zone,
    }
    if i % 3 == 0:
        return base | {"name": "cost-plus", "default": {"markup": "0.35"}}
    if i % 3 == 1:
        return base | {"name": "per image", "default": {"tiers": TIERS}}
    return base | {
        "name": "mixed",
        "minimum_commitment": "250.00",
        "default": {"markup": "0.20"},
        "use_cases": {"ecommerce": {"tiers": TIERS}},
    }


@contextmanager
def archived_ledger(
    n: int, tail: int, block: int
) -> Iterator[tuple[str, Engine, Settings, dict[str, float]]]:
    """A throwaway migrated server with ``n`` generated events, all but the last ``tail``
    exported to the Iceberg archive in a temporary warehouse."""
    with (
        database.throwaway_server("renderledger-invoices-") as url,
        tempfile.TemporaryDirectory(prefix="renderledger-warehouse-") as data_dir,
    ):
        database.migrate(url)
        engine = database.make_engine(url, app_role="renderledger_app")
        Ledger(engine).load_prices(load_price_book_file(DEFAULT_PRICES))
        settings = Settings(
            database_url=url,
            data_dir=Path(data_dir),
            archive=ArchiveSettings(lag_s=0, commit_events=block),
        )
        archived_n = n - tail
        print(f"generating {n:,} events over {TENANTS:,} tenants in PostgreSQL…", file=sys.stderr)
        t0 = time.perf_counter()
        bounds = [(lo, min(lo + block - 1, archived_n)) for lo in range(1, archived_n + 1, block)]
        for i, (lo, hi) in enumerate(bounds, start=1):
            generate(url, lo, hi, i)
        gen_s = time.perf_counter() - t0
        print(f"exporting {archived_n:,} events to Iceberg…", file=sys.stderr)
        t0 = time.perf_counter()
        exported = export_sealed(engine, settings)
        export_s = time.perf_counter() - t0
        assert exported.events == archived_n, exported
        t0 = time.perf_counter()
        if tail:
            generate(url, archived_n + 1, n, len(bounds) + 1)
        gen_s += time.perf_counter() - t0
        try:
            yield url, engine, settings, {"generate_s": gen_s, "export_s": export_s}
        finally:
            engine.dispose()


def _timed(draft: Callable[[], list[Invoice]]) -> tuple[float, list[Invoice]]:
    t0 = time.perf_counter()
    docs = draft()
    return time.perf_counter() - t0, docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--tail", type=int, default=100_008, help="events not archived")
    parser.add_argument("--block", type=int, default=1_000_000, help="events per block")
    parser.add_argument("--rounds", type=int, default=2, help="drafts from each source")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    n = args.events - args.events % 9
    tail = args.tail - args.tail % 9
    with archived_ledger(n, tail, args.block) as (_url, engine, settings, setup):
        with connection(engine, transaction=True) as raw:
            for i in range(TENANTS):
                store_plan(raw, parse_plan(plan_for(i)))
                if i % 4 == 0:
                    store_grant(
                        raw,
                        CreditGrant(
                            tenant=f"t{i:04d}", id="prepaid", amount=Decimal(100), granted_on=OCT
                        ),
                    )
        print("drafting…", file=sys.stderr)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        from_postgres: list[float] = []
        from_archive: list[float] = []
        loads: list[float] = []
        docs: list[Invoice] = []

        def through_history() -> list[Invoice]:
            with history.opened(engine, settings) as past, connection(engine) as raw:
                return draft_all(raw, OCT, past=past)

        def postgres_alone() -> list[Invoice]:
            with connection(engine) as raw:
                return draft_all(raw, OCT)

        # Alternately, PostgreSQL first: each source's later rounds find the same caches.
        for _ in range(args.rounds):
            loads.append(os.getloadavg()[0])
            seconds, docs = _timed(postgres_alone)
            from_postgres.append(seconds)
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            seconds, archived_docs = _timed(through_history)
            from_archive.append(seconds)
            assert [d.model_dump() for d in archived_docs] == [d.model_dump() for d in docs]
        loads.append(os.getloadavg()[0])
        rss_archive = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        draft_s = statistics.median(from_postgres)
        archive_s = statistics.median(from_archive)
        metered = sum(d.cost_basis.metered_nanos for d in docs)
        with connection(engine) as raw:
            # Each tenant's own month (a New York month starts at 04:00 UTC), summed in SQL.
            row = raw.execute(
                "SELECT sum(e.cost_nanos) FROM cost_events e JOIN unnest(%s::text[], "
                "%s::timestamptz[], %s::timestamptz[]) AS w(t, s, u) ON e.tenant_id = w.t "
                "AND e.occurred_at >= w.s AND e.occurred_at < w.u",
                (
                    [d.tenant for d in docs],
                    [d.window.start for d in docs],
                    [d.window.end for d in docs],
                ),
            ).fetchone()
            assert row is not None
            singles: list[float] = []
            for _ in range(3):
                t0 = time.perf_counter()
                invoice(raw, "t0001", OCT)
                singles.append(time.perf_counter() - t0)
        single_s = statistics.median(singles)
        singles_archive: list[float] = []
        for _ in range(3):
            t0 = time.perf_counter()
            with history.opened(engine, settings) as past, connection(engine) as raw:
                draft_all(raw, OCT, ["t0001"], past=past)
            singles_archive.append(time.perf_counter() - t0)
        single_archive_s = statistics.median(singles_archive)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            export(docs, tmp, formats=("json", "csv"))
            data_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            export(docs, tmp, formats=("pdf",))
            pdf_s = time.perf_counter() - t0
            pdf_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.pdf"))
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # A New York October starts at 04:00Z: those tenants' first hours are their
        # September, which must be finalized first (a first invoice never skips a month).
        new_york = [f"t{i:04d}" for i in range(TENANTS) if plan_for(i).get("timezone") != "UTC"]
        earlier = finalize_all(engine, SEPT, new_york, archive=settings)
        assert all(o.created for o in earlier), [o.error for o in earlier if o.error]
        t0 = time.perf_counter()
        finalized = finalize_all(engine, OCT, archive=settings)
        finalize_s = time.perf_counter() - t0
        assert all(o.created for o in finalized), [o.error for o in finalized if o.error]
    total = sum(Decimal(d.total) for d in docs)

    def runs(found: list[float]) -> str:
        return " / ".join(f"{s:.1f}" for s in found)

    table = "\n".join(
        [
            "| measure | value |",
            "|---|---:|",
            f"| events in the month / tenants / invoices | {n:,} / {TENANTS:,} / {len(docs):,} |",
            f"| events archived to Iceberg / in the hot tail | {n - tail:,} / {tail:,} "
            f"(export {setup['export_s']:.0f} s) |",
            f"| draft every invoice from PostgreSQL alone (reads the month once per time zone; "
            f"median of {runs(from_postgres)} s) | {draft_s:.1f} s |",
            f"| **draft every invoice from archive + tail** (the month's files, then the "
            f"tail in SQL; median of {runs(from_archive)} s, same invoices) "
            f"| **{archive_s:.1f} s** ({draft_s / archive_s:.1f}× as fast) |",
            f"| export JSON + CSV of every invoice | {data_s:.2f} s |",
            f"| export PDF of every invoice | {pdf_s:.1f} s ({pdf_s / len(docs) * 1000:.1f} ms "
            f"and {pdf_bytes / len(docs) / 1024:.0f} KiB each) |",
            f"| draft from archive + tail + export, all formats | "
            f"{archive_s + data_s + pdf_s:.1f} s |",
            f"| peak memory (max RSS): before drafting / after drafting from PostgreSQL / "
            f"after drafting from the archive / after export "
            f"| {rss0:,.0f} / {rss1:,.0f} / {rss_archive:,.0f} / {rss2:,.0f} MiB |",
            f"| one tenant's draft on its own from PostgreSQL (what the API does; median of 3) "
            f"| {single_s:.2f} s |",
            f"| one tenant's draft on its own from archive + tail (median of 3) "
            f"| {single_archive_s:.2f} s |",
            f"| finalize every invoice (one batch of drafts from archive + tail, a transaction "
            f"each) | {finalize_s:.1f} s |",
            f"| cost basis of every invoice, summed = its tenant's month of events in SQL | "
            f"{'yes' if metered == int(row[0]) else 'NO'} ({metered:,} nanos) |",
            f"| sum of invoice totals | {total:,} USD |",
            f"| load average (1 min) before each round and at the end | "
            f"{' / '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores |",
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Invoices (issues 5 and 16)\n\n"
            f"{n:,} generated events over {TENANTS:,} tenants in October 2026; a third of the "
            "tenants on cost-plus, a third per image on three graduated tiers, a third mixed "
            "with a minimum commitment; one in ten in a New York or Berlin month; one in four "
            "with prepaid credit. Invoices are drafted from the log by position, not from the "
            f"rollups. All but the last {tail:,} events were exported to the Iceberg archive "
            f"(local disk, blocks of {args.block:,} events); the batch draft was timed from "
            "PostgreSQL alone and from archive + tail alternately in one process, and both "
            "drafted the same invoices.\n\n" + table
        )
        command = "python -m bench.invoices " + " ".join(sys.argv[1:])
        write_section(args.write, "invoices", body, command)


if __name__ == "__main__":
    main()

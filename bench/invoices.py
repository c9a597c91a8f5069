"""Invoices at scale: draft and export every tenant's invoice for a month of N events.

The events are generated in PostgreSQL as in rollup_rebuild.py (1,000 tenants, a render
a second from 1 October, nine events a render). Plans cover the three shapes a real book
has: cost-plus, per-image tiers, and per-image for one use case with cost-plus for the
rest and a commitment; a tenth of the tenants bill in New York or Berlin months. The PDF
step is timed apart.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

from bench.report import write_section
from bench.rollup_rebuild import TENANTS, generated_ledger
from ledger.connections import connection
from reports.billing.exports import export
from reports.billing.lifecycle import draft_all, finalize_all, invoice
from reports.billing.plans import CreditGrant, parse_plan, store_grant, store_plan

OCT = date(2026, 10, 1)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    n = args.events - args.events % 9
    with generated_ledger(n, prefix="renderledger-invoices-") as (_url, engine, _gen_s):
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
        t0 = time.perf_counter()
        with connection(engine) as raw:
            docs = draft_all(raw, OCT)
        draft_s = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
            t0 = time.perf_counter()
            invoice(raw, "t0001", OCT)
            single_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            export(docs, tmp, formats=("json", "csv"))
            data_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            export(docs, tmp, formats=("pdf",))
            pdf_s = time.perf_counter() - t0
            pdf_bytes = sum(p.stat().st_size for p in Path(tmp).rglob("*.pdf"))
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        finalized = finalize_all(engine, OCT)
        finalize_s = time.perf_counter() - t0
        assert all(o.created for o in finalized), [o.error for o in finalized if o.error]
    total = sum(Decimal(d.total) for d in docs)
    table = "\n".join(
        [
            "| measure | value |",
            "|---|---:|",
            f"| events in the month / tenants / invoices | {n:,} / {TENANTS:,} / {len(docs):,} |",
            f"| draft every invoice (reads the month once per time zone) | {draft_s:.1f} s |",
            f"| export JSON + CSV of every invoice | {data_s:.2f} s |",
            f"| export PDF of every invoice | {pdf_s:.1f} s ({pdf_s / len(docs) * 1000:.1f} ms "
            f"and {pdf_bytes / len(docs) / 1024:.0f} KiB each) |",
            f"| draft + export, all formats | {draft_s + data_s + pdf_s:.1f} s |",
            f"| peak memory (max RSS): before / after drafting / after export "
            f"| {rss0:,.0f} / {rss1:,.0f} / {rss2:,.0f} MiB |",
            f"| one tenant's draft on its own (what the API does) | {single_s:.2f} s |",
            f"| finalize every invoice (one batch of drafts, a transaction each) "
            f"| {finalize_s:.1f} s |",
            f"| cost basis of every invoice, summed = its tenant's month of events in SQL | "
            f"{'yes' if metered == int(row[0]) else 'NO'} ({metered:,} nanos) |",
            f"| sum of invoice totals | {total:,} USD |",
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Invoices (issue 5)\n\n"
            f"{n:,} generated events over {TENANTS:,} tenants in October 2026; a third of the "
            "tenants on cost-plus, a third per image on three graduated tiers, a third mixed "
            "with a minimum commitment; one in ten in a New York or Berlin month; one in four "
            "with prepaid credit. Invoices are drafted from the log by position, not from the "
            "rollups.\n\n" + table
        )
        write_section(args.write, "invoices", body, "make bench")


if __name__ == "__main__":
    main()

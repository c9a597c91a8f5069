"""What finding resends costs an append once the log is partitioned (issue 16), measured
batch by batch in one run, alternating (so a noisy machine skews every figure alike):

- before and after: the same batches appended to a database at revision 0017 (the log
  unpartitioned, its unique index finding resends) and to one at the head (partitioned,
  ``event_keys``), each batch to one then the other;

- A (what the append does): ``event_keys`` written in the append's transaction, its primary
  key the unique index that finds resends; the cost is the time of that ``INSERT … SELECT``.
- C: a unique index per partition, plus, under the append lock, a probe of the batch's keys
  in every older partition (and a table of pruned keys); the cost is the time of that probe
  for a batch of new keys, the usual case (a new key must be shown absent everywhere), on a
  third database at the head given that per-partition index, the batches appended there too.

Over the second half of the run (when there are older partitions to probe).
``--partition-events`` sets how many partitions the log has.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from ingest.sample import sample_events
from ledger import database, partitions
from ledger.connections import connection
from ledger.journal import KEYS_SQL
from ledger.prices import load_price_book_file
from ledger.store import Ledger
from service.cli.main import DEFAULT_PRICES

_PROBE = (
    "SELECT count(*) FROM cost_events WHERE seq < %s AND (tenant_id, event_id) IN "
    "(SELECT * FROM unnest(%s::text[], %s::uuid[]))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--partition-events", type=int, default=50_000)
    args = parser.parse_args()
    n, size, batch = args.events, args.partition_events, 10_000

    keys_s: list[float] = []
    execute = psycopg.Connection.execute

    def timed(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        before = self.info.dbname == "bench_before"
        if before and isinstance(query, str) and query.startswith("INSERT INTO render_owners"):
            return None  # 0017 found a render's owner in the log itself (the view below)
        if query is not KEYS_SQL:
            return execute(self, query, params, **kw)
        if before:
            return None  # revision 0017 had no event_keys: its unique index did this work
        if self.info.dbname != "bench_keys":
            return execute(self, query, params, **kw)
        started = time.perf_counter()
        try:
            return execute(self, query, params, **kw)
        finally:
            keys_s.append(time.perf_counter() - started)

    psycopg.Connection.execute = timed  # type: ignore[method-assign]

    with database.throwaway_server("renderledger-bench-") as server:
        with psycopg.connect(database.libpq_url(server), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench_keys")
            conn.execute("CREATE DATABASE bench_before")
            conn.execute("CREATE DATABASE bench_probe")
        url = make_url(server).set(database="bench_keys").render_as_string(hide_password=False)
        before_url = (
            make_url(url).set(database="bench_before").render_as_string(hide_password=False)
        )
        probe_url = make_url(url).set(database="bench_probe").render_as_string(hide_password=False)
        database.migrate(url)
        database.migrate(probe_url)
        database.migrate(before_url, "0017")
        with psycopg.connect(database.libpq_url(before_url), autocommit=True) as su:
            # The owner check as 0017 ran it: the first event of each render, in the log.
            su.execute(
                "CREATE VIEW render_owners AS SELECT DISTINCT ON (render_id) render_id, "
                "tenant_id, use_case FROM cost_events ORDER BY render_id, seq; "
                "GRANT SELECT ON render_owners TO renderledger_app"
            )
        before_engine = database.make_engine(before_url, app_role="renderledger_app")
        before = Ledger(before_engine)
        before.load_prices(load_price_book_file(DEFAULT_PRICES))
        before.price_book()
        ledgers = []
        for where in (url, probe_url):
            with psycopg.connect(database.libpq_url(where), autocommit=True) as su:
                su.execute("DROP TABLE cost_events_p1")  # empty: partitions of --partition-events
                if where == probe_url:  # C's own index, in every partition
                    su.execute("CREATE INDEX ON cost_events (tenant_id, event_id)")
            owner = database.make_engine(where)
            with connection(owner, transaction=True) as raw:
                partitions.ensure_ahead(raw, size, ahead=n + size)
            owner.dispose()
            made = Ledger(database.make_engine(where, app_role="renderledger_app"))
            made.load_prices(load_price_book_file(DEFAULT_PRICES))
            made.price_book()
            ledgers.append(made)
        ledger, probed = ledgers
        engine = ledger.engine
        events = list(sample_events(n // 9 + 2, seed=7))[:n]
        append_s: list[float] = []
        before_s: list[float] = []
        probe_s: list[float] = []
        for i in range(0, n, batch):
            started = time.perf_counter()
            before.append(events[i : i + batch])
            before_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            ledger.append(events[i : i + batch])
            append_s.append(time.perf_counter() - started)
            receipt = probed.append(events[i : i + batch])
            new = [e.model_copy(update={"event_id": uuid.uuid4()}) for e in events[i : i + batch]]
            assert receipt.last_seq is not None
            current = (receipt.last_seq - 1) // size * size + 1  # the partition being written
            with connection(probed.engine) as raw:
                started = time.perf_counter()
                tenants, ids = [e.tenant_id for e in new], [e.event_id for e in new]
                raw.execute(_PROBE, (current, tenants, ids)).fetchone()
                probe_s.append(time.perf_counter() - started)
        engine.dispose()
        probed.engine.dispose()
        before_engine.dispose()

    half = len(append_s) // 2

    def ms(xs: list[float]) -> float:
        return statistics.median(xs[half:]) * 1000

    append, keys, probe, was = ms(append_s), ms(keys_s), ms(probe_s), ms(before_s)
    total, total_before = sum(append_s), sum(before_s)
    print(
        f"{n:,} events in {batch:,}-event appends: before (0017) {n / total_before:,.0f} "
        f"events/s, after (partitioned, event_keys) {n / total:,.0f} events/s "
        f"({total / total_before - 1:+.1%} time)"
    )
    print(
        f"partitions of {size:,} ({-(-n // size)} at the end), median of the second half's "
        f"appends: before {was:.1f} ms, after {append:.1f} ms; "
        f"A event_keys insert {keys:.1f} ms ({keys / append:.1%} of the append); "
        f"C probe of the older partitions {probe:.1f} ms ({probe / append:.1%})"
    )


if __name__ == "__main__":
    main()

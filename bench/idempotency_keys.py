"""What finding resends costs an append once the log is partitioned (issue 16), two ways,
measured batch by batch in one run on one database (so a noisy machine skews both alike):

- A (what the append does): ``event_keys`` written in the append's transaction, its primary
  key the unique index that finds resends; the cost is the time of that ``INSERT … SELECT``.
- C: a unique index per partition, plus, under the append lock, a probe of the batch's keys
  in every older partition (and a table of pruned keys); the cost is the time of that probe
  for a batch of new keys, the usual case (a new key must be shown absent everywhere).

Both against the whole append's time, over the second half of the run (when there are older
partitions to probe). ``--partition-events`` sets how many partitions the log has.
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
        if query is not KEYS_SQL:
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
        url = make_url(server).set(database="bench_keys").render_as_string(hide_password=False)
        database.migrate(url)
        with psycopg.connect(database.libpq_url(url), autocommit=True) as su:
            su.execute("DROP TABLE cost_events_p1")  # empty: partitions of --partition-events
        owner = database.make_engine(url)
        with connection(owner, transaction=True) as raw:
            partitions.ensure_ahead(raw, size, ahead=n + size)
        engine = database.make_engine(url, app_role="renderledger_app")
        ledger = Ledger(engine)
        ledger.load_prices(load_price_book_file(DEFAULT_PRICES))
        ledger.price_book()
        events = list(sample_events(n // 9 + 2, seed=7))[:n]
        append_s: list[float] = []
        probe_s: list[float] = []
        for i in range(0, n, batch):
            started = time.perf_counter()
            receipt = ledger.append(events[i : i + batch])
            append_s.append(time.perf_counter() - started)
            new = [e.model_copy(update={"event_id": uuid.uuid4()}) for e in events[i : i + batch]]
            assert receipt.last_seq is not None
            current = (receipt.last_seq - 1) // size * size + 1  # the partition being written
            with connection(engine) as raw:
                started = time.perf_counter()
                tenants, ids = [e.tenant_id for e in new], [e.event_id for e in new]
                raw.execute(_PROBE, (current, tenants, ids)).fetchone()
                probe_s.append(time.perf_counter() - started)
        engine.dispose()
        owner.dispose()

    half = len(append_s) // 2

    def ms(xs: list[float]) -> float:
        return statistics.median(xs[half:]) * 1000

    append, keys, probe = ms(append_s), ms(keys_s), ms(probe_s)
    print(
        f"{n:,} events, partitions of {size:,} ({-(-n // size)} at the end), median of the "
        f"second half's {batch:,}-event appends: append {append:.1f} ms; "
        f"A event_keys insert {keys:.1f} ms ({keys / append:.1%} of the append); "
        f"C probe of the older partitions {probe:.1f} ms ({probe / append:.1%})"
    )


if __name__ == "__main__":
    main()

"""Appending what allocations *should* be: only the difference from what is stored.

Comparing every stored row of every recomputed hour costs a GROUP BY over millions of rows.
So each (hour, source, currency) group also keeps a digest of the rows it nets to
(``allocation_digests``, derived): a group whose recomputed digest matches is unchanged and
is not read back; only the groups whose shares moved (a late event, late capacity) are.
The digest only decides what to read: a wrong one (another Polars version hashes
differently) costs a read, never a wrong row, and ``allocate --full`` drops them all.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import psycopg

from reports.allocation import ALLOCATION_KEYS, I128
from reports.source import copy_in, copy_out

GROUP = ["hour", "source", "currency"]
_STORED_SCHEMA: dict[str, Any] = {
    "hour": pl.Datetime("us", "UTC"),
    "source": pl.String,
    "kind": pl.String,
    "tenant_id": pl.String,
    "use_case": pl.String,
    "currency": pl.String,
    "stored": I128,
}
_DIGEST_SCHEMA: dict[str, Any] = {
    "hour": pl.Datetime("us", "UTC"),
    "source": pl.String,
    "currency": pl.String,
    "digest": I128,
}


def digests(rows: pl.DataFrame) -> pl.DataFrame:
    """Per group, an order-free digest of its (tenant, use case, amount) rows."""
    row_hash = pl.struct(
        "tenant_id", "use_case", "kind", pl.col("amount_nanos").cast(pl.String)
    ).hash(seed=13)
    return rows.group_by(GROUP).agg((row_hash % (2**61)).cast(I128).sum().alias("digest"))


def append_difference(
    raw: psycopg.Connection[Any],
    hours_sql: str,
    desired: pl.DataFrame,
    through_seq: int,
    through_actual: int,
) -> int:
    """Append ``desired`` (``ALLOCATION_KEYS`` + ``amount_nanos``) minus the stored net of
    the groups whose digest moved; the number of rows written."""
    want = digests(desired)
    have = copy_out(
        raw,
        f"SELECT hour, source, currency, digest FROM allocation_digests WHERE {hours_sql}",
        _DIGEST_SCHEMA,
    )
    changed = (
        want.join(have, on=GROUP, how="full", coalesce=True, suffix="_stored")
        .filter(pl.col("digest").ne_missing(pl.col("digest_stored")))
        .select(GROUP)
    )
    if changed.is_empty():
        return 0
    _keys_table(raw, "changed_groups", changed)
    stored = _stored_net(raw, hours_sql)
    run = raw.execute("SELECT coalesce(max(run_id), 0) + 1 FROM allocations").fetchone()
    delta = (
        desired.join(changed, on=GROUP, how="semi")
        .join(stored, on=ALLOCATION_KEYS, how="full", coalesce=True)
        .with_columns(
            (pl.col("amount_nanos").fill_null(0) - pl.col("stored").fill_null(0)).alias(
                "amount_nanos"
            )
        )
        .filter(pl.col("amount_nanos") != 0)
        .select(
            pl.lit(run[0] if run else 1).alias("run_id"),
            *ALLOCATION_KEYS,
            "amount_nanos",
            pl.lit(through_seq).alias("through_seq"),
            pl.lit(through_actual).alias("through_actual_seq"),
        )
        .sort(ALLOCATION_KEYS)
    )
    copy_in(raw, "allocations", delta)
    raw.execute(
        "DELETE FROM allocation_digests d USING changed_groups c "
        "WHERE (d.hour, d.source, d.currency) = (c.hour, c.source, c.currency)"
    )
    copy_in(raw, "allocation_digests", want.join(changed, on=GROUP, how="semi"))
    return delta.height


def _stored_net(raw: psycopg.Connection[Any], hours_sql: str) -> pl.DataFrame:
    """The net of the stored rows of the groups in ``changed_groups`` (none on a first run)."""
    none = raw.execute(f"SELECT NOT EXISTS (SELECT 1 FROM allocations WHERE {hours_sql})")
    if none.fetchone() == (True,):
        return pl.DataFrame(schema=_STORED_SCHEMA)
    return copy_out(
        raw,
        "SELECT a.hour, a.source, a.kind, a.tenant_id, a.use_case, a.currency, "
        "sum(a.amount_nanos) AS stored FROM allocations a JOIN changed_groups c "
        "ON (a.hour, a.source, a.currency) = (c.hour, c.source, c.currency) "
        "GROUP BY 1, 2, 3, 4, 5, 6",
        _STORED_SCHEMA,
    )


def _keys_table(raw: psycopg.Connection[Any], name: str, keys: pl.DataFrame) -> None:
    raw.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {name} (hour timestamptz, source text, currency text) "
        "ON COMMIT DROP"
    )
    raw.execute(f"TRUNCATE {name}")
    copy_in(raw, name, keys)
    raw.execute(f"ANALYZE {name}")

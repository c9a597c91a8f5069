"""What the allocation of some hours starts from, besides hourly usage: the capacity paid in
each pool-hour, the idle policy in force in it, and the weights of fixed-share overheads."""

from __future__ import annotations

import math
from datetime import UTC, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import polars as pl
import psycopg

from ledger.pools import Pools, calendar_months
from reports.allocation import I128

_US = timedelta(microseconds=1)


def hourly_pools(parts: pl.LazyFrame, pooled: pl.LazyFrame) -> pl.LazyFrame:
    keys = ["hour", "pool", "currency"]
    paid = (
        parts.filter(pl.col("kind") == "capacity")
        .group_by(keys)
        .agg(pl.col("held_seconds").sum(), pl.col("cost_nanos").sum().alias("paid_nanos"))
    )
    used = pooled.group_by(keys).agg(pl.col("busy_seconds").sum(), pl.col("standard_nanos").sum())
    return (
        paid.join(used, on=keys, how="full", coalesce=True)
        .with_columns(
            pl.col("held_seconds", "busy_seconds").fill_null(0.0),
            pl.col("paid_nanos", "standard_nanos").fill_null(0).cast(I128),
        )
        .select(*keys, "held_seconds", "paid_nanos", "busy_seconds", "standard_nanos")
    )


def fixed_shares(raw: psycopg.Connection[Any], spans: pl.DataFrame) -> pl.LazyFrame:
    seqs = spans.filter(pl.col("allocate_by") == "fixed")["seq"].to_list()
    rows = []
    if seqs:
        for seq, shares in raw.execute(
            "SELECT seq, shares FROM actual_costs WHERE seq = ANY(%s)", (seqs,)
        ):
            for tenant, weight in shares.items():
                rows.append((seq, tenant, int(Decimal(weight).scaleb(18))))
    return pl.LazyFrame(
        rows, schema={"seq": pl.Int64, "tenant_id": pl.String, "weight": pl.Int128}, orient="row"
    )


def month_pieces(spans: pl.DataFrame, pools: Pools) -> pl.DataFrame:
    """Spans with a ``piece`` column. A capacity span that crosses a calendar month is cut
    at each month's edge: its *stored* cost shared by cumulative floors in proportion to what
    each month's rate makes of its part (a monthly price makes a February second dearer), so
    the pieces sum to what was recorded whatever pool versions were loaded since."""
    month = pl.col("starts_at").dt.truncate("1mo")
    last = (pl.col("ends_at") - pl.duration(microseconds=1)).dt.truncate("1mo")
    crossing = (pl.col("kind") == "capacity") & (month != last)
    pieces, kept = [], []
    for row in spans.filter(crossing).iter_rows(named=True):
        definition = pools.in_force(row["pool"], row["starts_at"])
        months = list(calendar_months(row["starts_at"], row["ends_at"]))
        # Exact fractions: a weight computed in decimals could tip a floor by a nano.
        weights = (
            [Fraction((hi - lo) // _US) * definition.per_gpu_second(lo) for lo, hi in months]
            if definition
            else []
        )
        total = sum(weights, Fraction(0))
        if total <= 0:
            kept.append(row["seq"])  # nothing to weigh months by: cut by time alone
            continue
        cost, running, before = int(row["cost_nanos"]), Fraction(0), 0
        for i, ((lo, hi), weight) in enumerate(zip(months, weights, strict=True)):
            running += weight
            upto = math.floor(cost * running / total)
            pieces.append(
                row | {"starts_at": lo, "ends_at": hi, "cost_nanos": upto - before, "piece": i}
            )
            before = upto
    whole = spans.filter(~crossing | pl.col("seq").is_in(kept)).with_columns(
        pl.lit(0).alias("piece")
    )
    if not pieces:
        return whole
    return pl.concat([whole, pl.DataFrame(pieces, schema=whole.schema)])


def idle_policies(pool_hours: pl.DataFrame, pools: Pools) -> pl.LazyFrame:
    """The idle policy of each pool-hour: that of the pool's version in force at the hour
    (before its first version, the first's), so a new version never rewrites past hours."""
    versions = pl.DataFrame(
        [(v.name, v.effective_from.astimezone(UTC), v.idle) for v in pools.versions],
        schema={"pool": pl.String, "effective_from": pl.Datetime("us", "UTC"), "policy": pl.String},
        orient="row",
    ).sort("effective_from")
    first = versions.group_by("pool").agg(pl.col("policy").first().alias("first"))
    return (
        pool_hours.select("hour", "pool")
        .unique()
        .sort("hour")
        .join_asof(
            versions,
            left_on="hour",
            right_on="effective_from",
            by="pool",
            check_sortedness=False,  # both sides are sorted on the time above
        )
        .join(first, on="pool", how="left")
        .select("hour", "pool", pl.coalesce("policy", "first").alias("policy"))
        .lazy()
    )

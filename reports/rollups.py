"""The rollups as Polars LazyFrames: per-render rows and daily aggregates, both additive.

A rollup is built from *partials*, so that running over the log in one go and running
chunk by chunk (incrementally, over late events, over reversals) end in the same rows:
``combine(partials(a) ∪ partials(b)) == partials(a ∪ b)``. Sums add; a render's outcome,
latency and pipeline attributes come from its one ``render`` event; its day and time
(``rendered_at``, which the alerts read) are that event's; until the render event arrives,
the earliest day of its events (and that day's midnight).

Every key holds the currency: a render whose events were priced in two currencies has a
row in each, and no sum adds two currencies.

Cache lookups are counted per render and stage, not per event (the caption LLM meters one
lookup in two events): each stage keeps the signed counts of its hit and miss events, which
merge by addition, and the flags are derived from the merged counts (``cache_flags``) —
so they are exact whatever chunk each event fell in and whatever was reversed.
"""

from __future__ import annotations

import polars as pl

from ledger.events import Stage
from ledger.tables import STAGE_CACHE_COLUMNS, STAGE_COLUMNS

CACHE_COUNTS = [c for pair in STAGE_CACHE_COLUMNS.values() for c in pair]
SUMS = ["total_nanos", "baseline_nanos", *STAGE_COLUMNS.values(), *CACHE_COUNTS]
FIRSTS = ["outcome", "latency_ms", "model", "pipeline_version", "gpu_type", "precision"]
RENDER_KEYS = ["render_id", "currency"]
RENDER_COLUMNS = [
    *RENDER_KEYS,
    "tenant_id",
    "use_case",
    "day",
    "rendered_at",
    *FIRSTS,
    *SUMS,
    "cache_hits",
    "cache_lookups",
    "last_seq",
]
DAILY_KEYS = ["tenant_id", "day", "use_case", "stage", "sku", "outcome", "currency"]
DAILY_SUMS = ["events", "quantity", "cost_nanos", "baseline_nanos", "wall_s"]


def looked_up(hits: str, misses: str) -> str:
    """SQL: the stage had a cache lookup (any live cache event)."""
    return f"({hits} > 0 OR {misses} > 0)"


def found(hits: str, misses: str) -> str:
    """SQL: the lookup was a hit (live hit events, no live miss: a miss anywhere paid)."""
    return f"({hits} > 0 AND {misses} <= 0)"


def cache_flags() -> list[pl.Expr]:
    """``cache_hits`` and ``cache_lookups`` of a render: stages looked up, and found."""
    lookups = [
        ((pl.col(h) > 0) | (pl.col(m) > 0)).cast(pl.Int32) for h, m in STAGE_CACHE_COLUMNS.values()
    ]
    hits = [
        ((pl.col(h) > 0) & (pl.col(m) <= 0)).cast(pl.Int32) for h, m in STAGE_CACHE_COLUMNS.values()
    ]
    return [
        pl.sum_horizontal(hits).alias("cache_hits"),
        pl.sum_horizontal(lookups).alias("cache_lookups"),
    ]


def render_partials(events: pl.LazyFrame) -> pl.LazyFrame:
    """One partial row per render and currency from a slice of the log. The first-wins
    values are a render event's (the first of them with a value), as ``combine`` and the
    SQL merge take them, so the partials of any split of the log merge to the same row.

    Every per-stage figure is a column masked before the group-by, so the aggregation is
    plain sums, mins and firsts (a filter inside the aggregation runs group by group)."""
    is_render = (pl.col("stage") == Stage.RENDER.value) & (pl.col("sign") == 1)
    masked = [
        pl.when(is_render).then(pl.col("day")).alias("render_day"),
        pl.when(is_render).then(pl.col("at")).alias("render_at"),
        *(pl.when(is_render).then(pl.col(c)).alias(f"_{c}") for c in FIRSTS),
        *(
            pl.when(pl.col("stage") == stage).then(pl.col("cost_nanos")).otherwise(0).alias(column)
            for stage, column in STAGE_COLUMNS.items()
        ),
        *(
            pl.when(pl.col("stage") == stage)
            .then(pl.col(source))
            .otherwise(0)
            .cast(pl.Int64)
            .alias(column)
            for stage, pair in STAGE_CACHE_COLUMNS.items()
            for source, column in zip(("cache_hit", "cache_miss"), pair, strict=True)
        ),
    ]
    return (
        events.with_columns(masked)
        .group_by(RENDER_KEYS)
        .agg(
            pl.col("tenant_id").first(),
            pl.col("use_case").first(),
            pl.col("render_day").first(ignore_nulls=True),
            pl.col("day").min().alias("min_day"),
            pl.col("render_at").first(ignore_nulls=True),
            *(pl.col(f"_{c}").first(ignore_nulls=True).alias(c) for c in FIRSTS),
            pl.col("cost_nanos").sum().alias("total_nanos"),
            pl.col("baseline_nanos").sum(),
            *(pl.col(c).sum() for c in STAGE_COLUMNS.values()),
            *(pl.col(c).sum() for c in CACHE_COUNTS),
            pl.col("seq").max().alias("last_seq"),
        )
    )


def combine(partials: pl.LazyFrame) -> pl.LazyFrame:
    """Merge partials of the same render, in the order given (the log's); the result has the
    stored render_rollup columns. Most renders have one partial (their events are near each
    other in the log): only those with more go through the merging group-by."""
    counted = partials.with_columns(pl.len().over(RENDER_KEYS).alias("_parts"))
    merged = (
        counted.filter(pl.col("_parts") > 1)
        .group_by(RENDER_KEYS)
        .agg(
            pl.col("tenant_id").first(),
            pl.col("use_case").first(),
            pl.col("render_day").drop_nulls().first(),
            pl.col("min_day").min(),
            pl.col("render_at").drop_nulls().first(),
            *(pl.col(c).drop_nulls().first() for c in FIRSTS),
            *(pl.col(c).sum() for c in SUMS),
            pl.col("last_seq").max(),
        )
    )
    single = counted.filter(pl.col("_parts") == 1).drop("_parts")
    return (
        pl.concat([single, merged], how="vertical_relaxed")
        .with_columns(
            pl.coalesce("render_day", "min_day").alias("day"),
            pl.coalesce("render_at", pl.col("min_day").cast(pl.Datetime("us")))
            .dt.replace_time_zone("UTC")
            .alias("rendered_at"),
            *cache_flags(),
        )
        .select(RENDER_COLUMNS)
    )


def daily(events: pl.LazyFrame) -> pl.LazyFrame:
    """Daily aggregates by tenant × use case × stage × SKU × outcome × currency, signed."""
    return events.group_by(DAILY_KEYS).agg(
        pl.col("sign").sum().alias("events"),
        pl.col("quantity").sum(),
        pl.col("cost_nanos").sum(),
        pl.col("baseline_nanos").sum(),
        pl.col("wall_s").sum(),
    )

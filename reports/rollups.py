"""The rollups as Polars LazyFrames: per-render rows and daily aggregates, both additive.

A rollup is built from *partials*, so that running over the log in one go and running
chunk by chunk (incrementally, over late events, over reversals) end in the same rows:
``combine(partials(a) ∪ partials(b)) == partials(a ∪ b)``. Sums add; a render's outcome,
latency and pipeline attributes come from its one ``render`` event; its day and time
(``rendered_at``, which the alerts read) are that event's; until the render event arrives,
the earliest day of its events (and that day's midnight).
"""

from __future__ import annotations

import polars as pl

from ledger.events import Stage
from ledger.tables import STAGE_COLUMNS

SUMS = ["total_nanos", "baseline_nanos", *STAGE_COLUMNS.values(), "cache_hits", "cache_lookups"]
FIRSTS = ["outcome", "latency_ms", "model", "pipeline_version", "gpu_type", "precision"]
RENDER_COLUMNS = [
    "render_id",
    "tenant_id",
    "use_case",
    "day",
    "rendered_at",
    *FIRSTS,
    *SUMS,
    "last_seq",
]
DAILY_KEYS = ["tenant_id", "day", "use_case", "stage", "sku", "outcome"]
DAILY_SUMS = ["events", "quantity", "cost_nanos", "baseline_nanos", "cache_hits", "cache_lookups"]


def render_partials(events: pl.LazyFrame) -> pl.LazyFrame:
    """One partial row per render from a slice of the log."""
    is_render = (pl.col("stage") == Stage.RENDER.value) & (pl.col("sign") == 1)
    stage_sums = [
        pl.col("cost_nanos").filter(pl.col("stage") == stage).sum().alias(column)
        for stage, column in STAGE_COLUMNS.items()
    ]
    return events.group_by("render_id").agg(
        pl.col("tenant_id").first(),
        pl.col("use_case").first(),
        pl.col("day").filter(is_render).first().alias("render_day"),
        pl.col("day").min().alias("min_day"),
        pl.col("at").filter(is_render).first().alias("render_at"),
        pl.col("outcome").filter(is_render).first(),
        pl.col("latency_ms").filter(is_render).first(),
        *(pl.col(c).filter(is_render).first() for c in FIRSTS[2:]),
        pl.col("cost_nanos").sum().alias("total_nanos"),
        pl.col("baseline_nanos").sum(),
        *stage_sums,
        pl.col("cache_hit").sum().alias("cache_hits"),
        pl.col("cache_lookup").sum().alias("cache_lookups"),
        pl.col("seq").max().alias("last_seq"),
    )


def combine(partials: pl.LazyFrame) -> pl.LazyFrame:
    """Merge partials of the same render; the result has the stored render_rollup columns."""
    return (
        partials.group_by("render_id")
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
        .with_columns(
            pl.coalesce("render_day", "min_day").alias("day"),
            pl.coalesce("render_at", pl.col("min_day").cast(pl.Datetime("us")))
            .dt.replace_time_zone("UTC")
            .alias("rendered_at"),
        )
        .select(RENDER_COLUMNS)
    )


def daily(events: pl.LazyFrame) -> pl.LazyFrame:
    """Daily aggregates by tenant × use case × stage × SKU × outcome, signed sums."""
    return events.group_by(DAILY_KEYS).agg(
        pl.col("sign").sum().alias("events"),
        pl.col("quantity").sum(),
        pl.col("cost_nanos").sum(),
        pl.col("baseline_nanos").sum(),
        pl.col("cache_hit").sum().alias("cache_hits"),
        pl.col("cache_lookup").sum().alias("cache_lookups"),
    )

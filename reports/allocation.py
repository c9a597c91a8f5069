"""Allocation as LazyFrames: actual cost cut into hours, then shared out to tenants exactly.

Two rules keep every nano in exactly one place:

- An amount is cut by *cumulative* floors: part ``i`` of ``V`` by weights ``w`` is
  ``V·C_i // W − V·C_{i−1} // W`` with ``C`` the running sum of ``w``. The parts telescope to
  ``V·W // W = V``, whatever the weights, so a split never loses or invents a nano.
- What has no one to go to (an hour with no busy GPU, a ``keep`` policy, no renders to
  share an overhead by) stays on the platform: a row with tenant ``""``.

Weights are integers (busy micro-seconds summed exactly, renders, shares in millionths);
they decide proportions only, so their rounding moves no money, and all money is Int128
nanos. A group's weights are scaled down to at most ``MAX_WEIGHT`` in total, so that an
amount times a running sum stays far inside 128 bits however large a tenant makes its usage.
"""

from __future__ import annotations

import polars as pl

HOUR_US = 3_600_000_000
MAX_WEIGHT = 10**16
PLATFORM = ""
ALLOCATION_KEYS = ["hour", "source", "kind", "tenant_id", "use_case", "currency"]
I128 = pl.Int128


def hourly_parts(spans: pl.LazyFrame) -> pl.LazyFrame:
    """Each span (``seq``, ``piece``, ``starts_at``, ``ends_at``, ``cost_nanos``, ``gpus``) cut
    into its UTC hours in proportion to time: ``hour``, ``cost_nanos`` (parts summing exactly
    to the span's), ``held_seconds``. A price that differs by month is cut at the month's edge
    first (``allocation_job.month_pieces``), so time is the right weight within a piece."""
    start_us = pl.col("starts_at").dt.epoch("us")
    end_us = pl.col("ends_at").dt.epoch("us")
    hour_us = pl.col("hour").dt.epoch("us")
    overlap = pl.min_horizontal(end_us, hour_us + HOUR_US) - pl.max_horizontal(start_us, hour_us)
    key = ["seq", "piece"]
    cut = (
        spans.with_columns(
            pl.datetime_ranges(
                pl.col("starts_at").dt.truncate("1h"),
                (pl.col("ends_at") - pl.duration(microseconds=1)).dt.truncate("1h"),
                "1h",
            ).alias("hour"),
            (end_us - start_us).cast(I128).alias("_total"),
        )
        .explode("hour")
        .with_columns(overlap.cast(I128).alias("_overlap"))
        .with_columns(pl.col("_overlap").cum_sum().over(key, order_by="hour").alias("_cum"))
    )
    cost = pl.col("cost_nanos").cast(I128)
    total = pl.col("_total")
    part = cost * pl.col("_cum") // total - cost * (pl.col("_cum") - pl.col("_overlap")) // total
    held = pl.col("_overlap").cast(pl.Float64) / 1e6 * pl.col("gpus").cast(pl.Float64)
    return cut.with_columns(part.alias("cost_nanos"), held.alias("held_seconds")).drop(
        "_total", "_overlap", "_cum", "piece"
    )


def split(amounts: pl.LazyFrame, weights: pl.LazyFrame, on: list[str]) -> pl.LazyFrame:
    """Share each row of ``amounts`` (``on`` keys, ``amount``) over the ``weights`` rows with
    the same keys (``tenant_id``, ``use_case``, ``weight`` ≥ 0), by cumulative floors; an
    amount with no positive weight goes to the platform whole."""
    w = weights.filter(pl.col("weight") > 0).with_columns(pl.col("weight").cast(I128))
    group = list(dict.fromkeys([*on, "hour", "source", "currency"]))
    whole = pl.col("weight").sum().over(group)
    joined = (
        amounts.join(w, on=on, how="left")
        .with_columns(
            pl.col("weight").fill_null(0),
            pl.col("tenant_id").fill_null(PLATFORM),
            pl.col("use_case").fill_null(PLATFORM),
        )
        .with_columns(
            (
                pl.col("weight")
                // pl.when(whole > MAX_WEIGHT).then(whole // MAX_WEIGHT + 1).otherwise(1)
            ).alias("weight")
        )
    )
    order = ["tenant_id", "use_case"]
    total = pl.col("weight").sum().over(group)
    cum = pl.col("weight").cum_sum().over(group, order_by=order)
    amount = pl.col("amount").cast(I128)
    share = amount * cum // total - amount * (cum - pl.col("weight")) // total
    return joined.with_columns(
        pl.when(total > 0).then(share).otherwise(amount).alias("amount_nanos")
    ).drop("weight", "amount")


def pool_variance(
    pool_hours: pl.LazyFrame, usage: pl.LazyFrame, idle: pl.LazyFrame
) -> pl.LazyFrame:
    """Per pool, hour and currency: paid − standard, shared by tenants' busy GPU-seconds under
    the pool's ``share`` policy, kept on the platform under ``keep``.

    ``pool_hours``: hour, pool, currency, paid_nanos, standard_nanos. ``usage``: hour, pool,
    tenant_id, use_case, busy_us (any currency: busy micro-seconds are the weight). ``idle``:
    hour, pool, policy (the version in force at the hour)."""
    amounts = (
        pool_hours.with_columns(
            (pl.col("paid_nanos").cast(I128) - pl.col("standard_nanos").cast(I128)).alias("amount"),
            pl.concat_str(pl.lit("pool:"), pl.col("pool")).alias("source"),
        )
        .filter(pl.col("amount") != 0)
        .join(idle, on=["hour", "pool"], how="left")
    )
    weights = usage.group_by("hour", "pool", "tenant_id", "use_case").agg(
        pl.col("busy_us").sum().alias("weight")
    )
    shared = split(
        amounts.filter(pl.col("policy") == "share").select(
            "hour", "pool", "source", "currency", "amount"
        ),
        weights,
        ["hour", "pool"],
    )
    kept = amounts.filter(pl.col("policy") != "share").select(
        "hour",
        "pool",
        "source",
        "currency",
        pl.lit(PLATFORM).alias("tenant_id"),
        pl.lit(PLATFORM).alias("use_case"),
        pl.col("amount").alias("amount_nanos"),
    )
    return pl.concat([shared, kept], how="diagonal").select(
        "hour",
        "source",
        pl.lit("idle").alias("kind"),
        "tenant_id",
        "use_case",
        "currency",
        "amount_nanos",
    )


def overhead_shares(parts: pl.LazyFrame, usage: pl.LazyFrame, fixed: pl.LazyFrame) -> pl.LazyFrame:
    """Overheads cut into hours (``parts``: seq, hour, account, allocate_by, currency,
    cost_nanos) shared by their basis over that hour's usage.

    ``usage``: hour, tenant_id, use_case, model, busy_us, renders. ``fixed``: seq,
    tenant_id, weight (shares in millionths)."""
    base = parts.with_columns(
        pl.concat_str(pl.lit("overhead:"), pl.col("seq").cast(pl.String)).alias("source"),
        pl.col("cost_nanos").alias("amount"),
        pl.when(pl.col("account").str.starts_with("model:"))
        .then(pl.col("account").str.slice(6))
        .alias("model"),
        pl.when(pl.col("account").str.starts_with("tenant:"))
        .then(pl.col("account").str.slice(7))
        .alias("owner"),
    )
    hourly = usage.group_by("hour", "tenant_id", "use_case", "model").agg(
        pl.col("busy_us").sum().alias("gpu_seconds"),
        pl.col("renders").sum().cast(I128).alias("renders"),
    )
    any_model = hourly.group_by("hour", "tenant_id", "use_case").agg(
        pl.col("gpu_seconds").sum(), pl.col("renders").sum()
    )
    out = []
    for basis in ("renders", "gpu_seconds"):
        chosen = base.filter(pl.col("allocate_by") == basis)
        by_all = chosen.filter(pl.col("model").is_null()).select(
            "seq", "hour", "source", "currency", "amount"
        )
        w_all = any_model.select("hour", "tenant_id", "use_case", pl.col(basis).alias("weight"))
        out.append(split(by_all, w_all, ["hour"]))
        by_model = chosen.filter(pl.col("model").is_not_null()).select(
            "seq", "hour", "model", "source", "currency", "amount"
        )
        w_model = hourly.select(
            "hour", "model", "tenant_id", "use_case", pl.col(basis).alias("weight")
        )
        out.append(split(by_model, w_model, ["hour", "model"]))
    # A tenant's own overhead is spread over its use cases by renders; with none, the tenant.
    direct = base.filter(pl.col("allocate_by") == "direct").select(
        "seq", "hour", "owner", "source", "currency", "amount"
    )
    w_direct = any_model.select(
        "hour",
        pl.col("tenant_id").alias("owner"),
        "tenant_id",
        "use_case",
        pl.col("renders").alias("weight"),
    )
    shared = split(direct, w_direct, ["hour", "owner"]).with_columns(
        pl.when(pl.col("tenant_id") == PLATFORM)
        .then(pl.col("owner"))
        .otherwise(pl.col("tenant_id"))
        .alias("tenant_id")
    )
    out.append(shared)
    fixed_rows = base.filter(pl.col("allocate_by") == "fixed").select(
        "seq", "hour", "source", "currency", "amount"
    )
    out.append(split(fixed_rows, fixed.with_columns(pl.lit(PLATFORM).alias("use_case")), ["seq"]))
    kept = base.filter(pl.col("allocate_by") == "keep").select(
        "hour",
        "source",
        "currency",
        pl.lit(PLATFORM).alias("tenant_id"),
        pl.lit(PLATFORM).alias("use_case"),
        pl.col("amount").cast(I128).alias("amount_nanos"),
    )
    out.append(kept)
    return pl.concat(
        [
            f.select("hour", "source", "tenant_id", "use_case", "currency", "amount_nanos")
            for f in out
        ],
        how="vertical_relaxed",
    ).select(
        "hour",
        "source",
        pl.lit("overhead").alias("kind"),
        "tenant_id",
        "use_case",
        "currency",
        "amount_nanos",
    )

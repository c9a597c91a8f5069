"""A tenant's cost report over a date range, grouped by use case, stage and/or day.

Built from the rollups only (never from the raw log), as LazyFrames; money stays integer
nanos until the one rounding of a division, which is half-even to the nano.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import polars as pl
import psycopg

from ledger.money import format_nanos
from reports.rollups import STAGE_COLUMNS
from reports.source import RENDER_SCHEMA, copy_out

GROUPS = ("use_case", "stage", "day")
DAILY_SCHEMA: dict[str, Any] = {
    "day": pl.Date,
    "use_case": pl.String,
    "stage": pl.String,
    "sku": pl.String,
    "outcome": pl.String,
    "quantity": pl.Decimal(38, 18),
    "cost_nanos": pl.Int64,
    "baseline_nanos": pl.Int64,
    "cache_hits": pl.Int64,
    "cache_lookups": pl.Int64,
}


@dataclass(frozen=True)
class ReportQuery:
    tenant: str
    start: date
    end: date  # exclusive
    group_by: tuple[str, ...] = ("use_case",)


def read_inputs(raw: psycopg.Connection[Any], q: ReportQuery) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The tenant's render rows and daily rows in range. ``q.tenant`` is pattern-checked
    and the dates are ``date`` objects, so inlining them (COPY takes no parameters) is safe."""
    where = (
        f"tenant_id = '{q.tenant}' AND day >= '{q.start.isoformat()}' "
        f"AND day < '{q.end.isoformat()}'"
    )
    renders = copy_out(
        raw, f"SELECT {', '.join(RENDER_SCHEMA)} FROM render_rollup WHERE {where}", RENDER_SCHEMA
    )
    daily = copy_out(
        raw, f"SELECT {', '.join(DAILY_SCHEMA)} FROM daily_rollup WHERE {where}", DAILY_SCHEMA
    )
    return renders, daily


def _render_facts(renders: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """Counts, latency percentiles and waste per group, from one row per render.

    Grouped by stage, each render is one row per stage (its cost in that stage), so the
    counts and latencies repeat per stage and the waste is the stage's share of it.
    """
    not_delivered = pl.col("outcome").is_in(["failed", "cancelled"])
    cost = "total_nanos"
    if "stage" in keys:
        stage_cols = list(STAGE_COLUMNS.values())
        index = [c for c in renders.collect_schema().names() if c not in stage_cols]
        renders = renders.unpivot(
            index=index, on=stage_cols, variable_name="stage", value_name="stage_nanos"
        ).with_columns(pl.col("stage").str.strip_suffix("_nanos"))
        cost = "stage_nanos"
    counts = [
        pl.col("render_id").filter(pl.col("outcome") == o).n_unique().alias(f"renders_{o}")
        for o in ("delivered", "failed", "cancelled")
    ]
    return renders.group_by(keys).agg(
        pl.col(cost).filter(not_delivered).sum().alias("waste_nanos"),
        *counts,
        pl.col("latency_ms").drop_nulls().median().alias("latency_p50_ms"),
        pl.col("latency_ms").drop_nulls().quantile(0.95, "linear").alias("latency_p95_ms"),
    )


def build(
    renders: pl.DataFrame,
    daily: pl.DataFrame,
    group_by: tuple[str, ...],
    what_if: dict[str, Decimal] | None = None,
) -> list[dict[str, Any]]:
    """One dict per group, sorted by the group keys; no keys means one row for everything."""
    keys = [*group_by, "_all"]  # a constant key makes "no grouping" the same code path
    daily = daily.with_columns(pl.lit(1).alias("_all"))
    renders = renders.with_columns(pl.lit(1).alias("_all"))
    costs = (
        daily.lazy()
        .group_by(keys)
        .agg(
            pl.col("cost_nanos").sum(),
            (pl.col("baseline_nanos").sum() - pl.col("cost_nanos").sum()).alias("savings_nanos"),
            pl.col("cache_hits").sum(),
            pl.col("cache_lookups").sum(),
        )
    )
    facts = _render_facts(renders.lazy(), keys)
    rows = costs.join(facts, on=keys, how="full", coalesce=True).sort(keys).collect().to_dicts()
    shares = _stage_shares(daily, keys)
    whatif = _what_if(daily, keys, what_if) if what_if is not None else None
    return [_row(r, keys, shares, whatif) for r in rows]


def _stage_shares(daily: pl.DataFrame, keys: list[str]) -> dict[tuple[Any, ...], dict[str, int]]:
    group = [k for k in keys if k != "stage"]
    frame = daily.group_by([*group, "stage"]).agg(pl.col("cost_nanos").sum())
    out: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in frame.to_dicts():
        out.setdefault(tuple(r[k] for k in group), {})[r["stage"]] = r["cost_nanos"]
    return out


def _what_if(
    daily: pl.DataFrame, keys: list[str], prices: dict[str, Decimal]
) -> dict[tuple[Any, ...], int]:
    """Cost of the same work under another book; an API's per-image price is paid only for
    delivered images, so ``render.image`` counts delivered renders alone."""
    out: dict[tuple[Any, ...], Decimal] = {}
    for r in daily.to_dicts():
        price = prices.get(r["sku"])
        if price is None or (r["sku"] == "render.image" and r["outcome"] != "delivered"):
            continue
        key = tuple(r[k] for k in keys)
        out[key] = out.get(key, Decimal(0)) + r["quantity"] * price
    return {k: int(v.to_integral_value(ROUND_HALF_EVEN)) for k, v in out.items()}


def _money(nanos: int | None) -> dict[str, Any]:
    n = int(nanos or 0)
    return {"nanos": n, "amount": format_nanos(n)}


def _per(nanos: int, count: int) -> dict[str, Any] | None:
    if not count:
        return None
    return _money(int((Decimal(nanos) / count).to_integral_value(ROUND_HALF_EVEN)))


def _row(
    r: dict[str, Any],
    keys: list[str],
    shares: dict[tuple[Any, ...], dict[str, int]],
    whatif: dict[tuple[Any, ...], int] | None,
) -> dict[str, Any]:
    cost = int(r.get("cost_nanos") or 0)
    delivered = int(r.get("renders_delivered") or 0)
    lookups = int(r.get("cache_lookups") or 0)
    group = {k: (r[k].isoformat() if isinstance(r[k], date) else r[k]) for k in keys if k != "_all"}
    by_stage = shares.get(tuple(r[k] for k in keys if k != "stage"), {})
    whole = sum(by_stage.values())
    out: dict[str, Any] = {
        **group,
        "renders_delivered": delivered,
        "renders_failed": int(r.get("renders_failed") or 0),
        "renders_cancelled": int(r.get("renders_cancelled") or 0),
        "cost": _money(cost),
        "cost_per_delivered_render": _per(cost, delivered),
        "latency_p50_ms": r.get("latency_p50_ms"),
        "latency_p95_ms": r.get("latency_p95_ms"),
        "cache_hit_rate": round(int(r.get("cache_hits") or 0) / lookups, 6) if lookups else None,
        "cache_savings": _money(r.get("savings_nanos")),
        "waste": _money(r.get("waste_nanos")),
    }
    if "stage" in keys:
        out["share_of_cost"] = round(cost / whole, 6) if whole else None
    else:
        out["stage_share"] = (
            {s: round(c / whole, 6) for s, c in sorted(by_stage.items())} if whole else {}
        )
    if whatif is not None:
        alt = whatif.get(tuple(r[k] for k in keys), 0)
        out["what_if"] = {
            "cost": _money(alt),
            "cost_per_delivered_render": _per(alt, delivered),
            "difference_per_delivered_render": _per(alt - cost, delivered),
        }
    return out

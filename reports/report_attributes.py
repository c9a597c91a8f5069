"""Grouping a report by a pipeline attribute: model, precision, GPU type, pipeline version.

The daily rollup keeps no attributes; the per-render rollup keeps those of each render's
own event (``reports.rollups.FIRSTS``). So a report grouped by one reads its costs from the
per-render rows: the same sums, by stage, but no wall time (stage events carry it, and are
not kept per render) and no savings by stage, which is why an attribute does not combine
with ``stage`` or a what-if book (that needs quantities by SKU).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg

from ledger.tables import STAGE_COLUMNS
from reports.report_rows import Converter

ATTRIBUTES = ("model", "precision", "gpu_type", "pipeline_version")
_RANGE = "tenant_id = %(tenant)s AND day >= %(start)s AND day < %(end)s"


class AttributeGroupingError(ValueError):
    """A grouping the per-render rows cannot answer, with the reason."""


def check(group_by: tuple[str, ...], what_if: bool) -> None:
    if not set(group_by) & set(ATTRIBUTES):
        return
    if "stage" in group_by:
        raise AttributeGroupingError(
            "group_by: a pipeline attribute does not combine with stage (renders keep their "
            "attributes, stages do not)"
        )
    if what_if:
        raise AttributeGroupingError(
            "what_if: not with a pipeline attribute in group_by (it prices SKU quantities, "
            "which the per-render rollup does not keep)"
        )


def costs_by_render(
    raw: psycopg.Connection[Any], params: dict[str, Any], outer: list[str], m: Converter
) -> defaultdict[tuple[Any, ...], defaultdict[str, Decimal]]:
    """Cost by stage and savings per outer group and row currency, from render_rollup."""
    stages = ", ".join(f"sum({c})" for c in STAGE_COLUMNS.values())
    head = "".join(f"{k}, " for k in outer)
    rows = raw.execute(
        f"SELECT {head} currency, {m.day_column()} AS fx_day, "
        f"sum(baseline_nanos) - sum(total_nanos), {stages} FROM render_rollup "
        f"WHERE {_RANGE} GROUP BY {head} currency, fx_day",
        params,
    ).fetchall()
    sums: defaultdict[tuple[Any, ...], defaultdict[str, Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    n = len(outer)
    for r in rows:
        currency, day, savings = r[n : n + 3]
        row_currency = m.row_currency(currency)
        for stage, nanos in zip(STAGE_COLUMNS, r[n + 3 :], strict=True):
            sums[(*r[:n], row_currency, stage)]["cost"] += m.amount(nanos, currency, day)
        # Savings are per render, not per stage: kept on the render's own "stage".
        sums[(*r[:n], row_currency, "render")]["savings"] += m.amount(savings, currency, day)
    return sums

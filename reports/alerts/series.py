"""One tenant × use case × currency as arrays: its recent renders and its hourly history.

Both the service (reading ``render_rollup`` and ``alert_hourly``) and the evaluation
harness (generating renders) build these, so the detector sees the same shape from both.
Every key carries the currency (``render_rollup`` has a row per render and currency): a
series never adds the costs of two currencies, and a tenant whose book changed currency
has one series in each, judged against its own past.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from ledger.events import Stage
from ledger.tables import STAGE_COLUMNS

STAGES = tuple(STAGE_COLUMNS)  # the order of the columns of the ``stages`` arrays
CAPTION = STAGES.index(Stage.CAPTION_LLM)
ATTRIBUTES = ("model", "pipeline_version", "gpu_type", "precision")
HOUR = 3600

F = npt.NDArray[np.float64]
I = npt.NDArray[np.int64]  # noqa: E741  # a type alias, not a variable
B = npt.NDArray[np.bool_]


@dataclass
class Renders:
    """Renders in time order: epoch seconds, outcome flags, cost by stage, cache counts."""

    at: I
    delivered: B
    failed: B
    total: F
    stages: F  # (n, len(STAGES))
    hits: F
    lookups: F
    attributes: dict[str, npt.NDArray[np.object_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.at)

    def take(self, index: I | slice) -> Renders:
        return Renders(
            self.at[index],
            self.delivered[index],
            self.failed[index],
            self.total[index],
            self.stages[index],
            self.hits[index],
            self.lookups[index],
            {k: v[index] for k, v in self.attributes.items()},
        )


@dataclass
class Hourly:
    """Hourly sums, sorted by hour (epoch seconds of the hour's start)."""

    hour: I
    delivered: F
    failed: F
    delivered_nanos: F
    stages: F  # (h, len(STAGES)), of delivered renders
    hits: F
    lookups: F


@dataclass
class Series:
    tenant: str
    use_case: str
    currency: str  # of every amount in ``renders`` and ``hourly``
    renders: Renders
    hourly: Hourly
    # Day-long blocks for the low-volume baseline (the service sums them in SQL); None: the
    # blocks are summed from ``hourly``, as the harness does.
    daily: Hourly | None = None

    @property
    def blocks(self) -> Hourly:
        return self.hourly if self.daily is None else self.daily


KEYS = ["tenant_id", "use_case", "currency"]  # of a series, and of ``alert_hourly`` by hour
RENDER_FRAME_COLUMNS = [
    *KEYS,
    "rendered_at",
    "outcome",
    "total_nanos",
    *STAGE_COLUMNS.values(),
    "cache_hits",
    "cache_lookups",
    *ATTRIBUTES,
]


def hourly_frame(renders: pl.LazyFrame) -> pl.LazyFrame:
    """Render rows (``render_rollup``'s columns) to hourly sums: ``alert_hourly``'s rows,
    one per hour, tenant, use case and currency."""
    delivered = pl.col("outcome") == "delivered"
    failed = pl.col("outcome").is_in(["failed", "cancelled"])
    return (
        renders.with_columns(pl.col("rendered_at").dt.truncate("1h").alias("hour"))
        .group_by("hour", *KEYS)
        .agg(
            delivered.sum().alias("delivered"),
            failed.sum().alias("failed"),
            pl.col("total_nanos").filter(delivered).sum().alias("delivered_nanos"),
            *(pl.col(c).filter(delivered).sum() for c in STAGE_COLUMNS.values()),
            pl.col("total_nanos").filter(failed).sum().alias("waste_nanos"),
            pl.col("cache_hits").sum(),
            pl.col("cache_lookups").sum(),
        )
    )


def _epoch(column: pl.Series) -> I:
    return column.dt.epoch("s").to_numpy().astype(np.int64)


def to_renders(frame: pl.DataFrame, *, ordered: bool = False) -> Renders:
    """``ordered``: the rows are in time order already (a stack's, series by series)."""
    frame = frame if ordered else frame.sort("rendered_at")
    return Renders(
        at=_epoch(frame["rendered_at"]),
        delivered=(frame["outcome"] == "delivered").fill_null(False).to_numpy(),
        failed=frame["outcome"].is_in(["failed", "cancelled"]).fill_null(False).to_numpy(),
        total=frame["total_nanos"].cast(pl.Float64).to_numpy(),
        stages=frame.select(STAGE_COLUMNS.values()).cast(pl.Float64).to_numpy(),
        hits=frame["cache_hits"].cast(pl.Float64).to_numpy(),
        lookups=frame["cache_lookups"].cast(pl.Float64).to_numpy(),
        attributes={
            a: frame[a].to_numpy().astype(object) for a in ATTRIBUTES if a in frame.columns
        },
    )


def to_hourly(frame: pl.DataFrame, *, ordered: bool = False) -> Hourly:
    frame = frame if ordered else frame.sort("hour")

    def f(column: str) -> F:
        return frame[column].cast(pl.Float64).to_numpy()

    return Hourly(
        hour=_epoch(frame["hour"]),
        delivered=f("delivered"),
        failed=f("failed"),
        delivered_nanos=f("delivered_nanos"),
        stages=frame.select(STAGE_COLUMNS.values()).cast(pl.Float64).to_numpy(),
        hits=f("cache_hits"),
        lookups=f("cache_lookups"),
    )


def build(
    renders: pl.DataFrame, hourly: pl.DataFrame, daily: pl.DataFrame | None = None
) -> list[Series]:
    """Series for every tenant × use case × currency in either frame; ``daily`` (in
    ``hourly``'s shape, an ``hour`` per block start) gives each its day-long blocks."""
    r_parts = {k: g for k, g in renders.group_by(KEYS)} if renders.height else {}
    h_parts = {k: g for k, g in hourly.group_by(KEYS)} if hourly.height else {}
    d_parts = {k: g for k, g in daily.group_by(KEYS)} if daily is not None and daily.height else {}
    out = []
    for key in sorted(set(r_parts) | set(h_parts), key=str):
        tenant, use_case, currency = (str(k) for k in key)
        r = r_parts.get(key, renders.clear())
        h = h_parts.get(key, hourly.clear())
        d = None if daily is None else to_hourly(d_parts.get(key, daily.clear()))
        out.append(Series(tenant, use_case, currency, to_renders(r), to_hourly(h), d))
    return out

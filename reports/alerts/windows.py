"""Sums over windows of renders and over day-long blocks of hours, for every evaluation time.

Everything here works on cumulative sums, so a window or a block at any number of times is
two lookups. A *block* is 24 hours ending on an hour boundary counted back from the hour of
the evaluation time; block sums come from any history sorted by hour whose entries never
straddle a block boundary: ``alert_hourly``'s hours (the harness), or the service's
pre-summed blocks (the same boundaries, summed in SQL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reports.alerts.series import CAPTION, HOUR, F, Hourly, I, Renders

B = npt.NDArray[np.bool_]
DAY = 24 * HOUR
MAD_TO_SIGMA = 1.4826


def cum(values: npt.NDArray[Any]) -> F:
    """Cumulative sums with a leading zero: the sum over [a, b) is ``c[b] - c[a]``."""
    out = np.zeros((len(values) + 1, *values.shape[1:]))
    np.cumsum(values, axis=0, out=out[1:])
    return out


def nanmedian(x: F, axis: int = -1) -> F:
    """The median along ``axis`` ignoring NaN (NaN where all are): ``np.nanmedian`` goes
    through masked arrays for small rows, a hundred times slower at one row a series."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    ordered = np.sort(x, axis=-1)  # NaN sorts last
    n = np.sum(~np.isnan(x), axis=-1)
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0)[..., None], axis=-1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def last_delivered(d_cum: F, hi: I, count: float | F) -> I:
    """Start index of the window holding the last ``count`` delivered renders before ``hi``
    (index 0 when there are fewer)."""
    target = np.maximum(d_cum[hi] - count, 0)
    return np.maximum(np.searchsorted(d_cum, target, side="right") - 1, 0)


@dataclass
class Blocks:
    """Sums over day-long blocks, (times, blocks[, stages]); block ``k`` (0-based) is
    [top − (k+1)·DAY, top − k·DAY) for the evaluation time's hour ``top``."""

    delivered: F
    nanos: F
    failed: F
    stages: F
    hits: F
    lookups: F


def blocks(h: Hourly, tops: I, count: int) -> Blocks:
    bounds = tops[:, None] - DAY * np.arange(count + 1)[None, :]
    idx = np.searchsorted(h.hour, bounds, side="left")

    def sums(values: F) -> F:
        c = cum(values)[idx]
        return np.asarray(c[:, :-1] - c[:, 1:], dtype=np.float64)

    return Blocks(
        sums(h.delivered),
        sums(h.delivered_nanos),
        sums(h.failed),
        sums(h.stages),
        sums(h.hits),
        sums(h.lookups),
    )


def first_block(tops: I, starts: I) -> I:
    """Index of the first whole block before windows starting at ``starts`` (epoch seconds,
    (times, windows)): a baseline never holds its window's own hours, however far back the
    window reaches."""
    hour = starts // HOUR * HOUR
    return np.asarray(-((hour - tops[:, None]) // DAY), dtype=np.int64)


def pick(values: F, first: I, count: int) -> tuple[F, npt.NDArray[np.bool_]]:
    """``count`` consecutive blocks from ``first`` (times, …): values shaped
    (times, …, count[, stages]), and whether each block exists."""
    cols = first[..., None] + np.arange(count)
    exists = (cols >= 0) & (cols < values.shape[1])
    flat = np.clip(cols, 0, values.shape[1] - 1).reshape(len(cols), -1)
    if values.ndim == 3:
        out = np.take_along_axis(values, flat[..., None], axis=1)
        return out.reshape(*cols.shape, values.shape[2]), exists
    return np.take_along_axis(values, flat, axis=1).reshape(cols.shape), exists


def spread(var: F, n: F, block_means: F, block_n: F) -> tuple[F, F, F]:
    """(baseline, spread, blocks used) of a window's mean against day-long blocks, which
    are consecutive days along the last axis.

    Baseline: the median of the blocks' means. Spread² = the window's own sampling variance
    (var/n, large when n is small) + the baseline median's (π/2 · σ²/blocks) + the blocks'
    real day-to-day variation (σ² less what their own sampling explains). σ is taken from
    the differences between consecutive days (robust, ÷√2), not from the spread around the
    median: a past change lasting days shifts a third of the blocks and would double a
    MAD, but moves only the two differences at its edges. The window's per-render variance
    stands in for the blocks', whose squares are not kept."""
    base = nanmedian(block_means)
    steps = np.abs(np.diff(block_means, axis=-1))
    sigma = nanmedian(steps) * MAD_TO_SIGMA / math.sqrt(2)
    sigma = np.where(np.isfinite(sigma), sigma, 0.0)
    used = np.sum(np.isfinite(block_means), axis=-1).astype(np.float64)
    typical_n = nanmedian(np.where(np.isfinite(block_means), block_n, np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau2 = np.maximum(sigma**2 - var / typical_n, 0.0)
        total = var / np.maximum(n, 1) + math.pi / 2 * sigma**2 / np.maximum(used, 1) + tau2
    return base, np.sqrt(total), used


class Sums:
    """Cumulative sums of a series' renders: any window is two lookups."""

    def __init__(self, r: Renders) -> None:
        d = r.delivered.astype(np.float64)
        self.d = cum(d)
        self.x = cum(r.total * d)
        self.x2 = cum(r.total**2 * d)
        self.stages = cum(r.stages * d[:, None])
        self.c2 = cum(r.stages[:, CAPTION] ** 2 * d)
        self.f = cum(r.failed.astype(np.float64))
        self.fx = cum(r.total * r.failed)
        self.hits = cum(r.hits)
        self.lookups = cum(r.lookups)

    @staticmethod
    def over(c: F, lo: I, hi: I) -> F:
        return np.asarray(c[hi] - c[lo], dtype=np.float64)

    def mean_var(self, c: F, c2: F, lo: I, hi: I) -> tuple[F, F, F]:
        n = np.maximum(self.over(self.d, lo, hi), 1)
        mean = self.over(c, lo, hi) / n
        return mean, np.maximum(self.over(c2, lo, hi) / n - mean**2, 0), n


def pooled_rate(failed: F, delivered: F) -> F:
    """Failures are rare: the baseline is the pooled rate, smoothed so none is never zero."""
    rate = (np.nansum(failed, axis=-1) + 0.5) / (np.nansum(failed + delivered, axis=-1) + 1)
    return np.asarray(rate, dtype=np.float64)

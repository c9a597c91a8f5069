"""The low-volume path: series with fewer than ``min_renders`` delivered renders in the last
``window_hours``, at every evaluation time where they are.

Each window of ``low_windows`` delivered renders that fits in the horizon is measured
against the day-long blocks before it (never its own hours). The window furthest past its
threshold is the one judged — a short window sees a large change soon, a long one a
smaller change later, like a windowed change-point test. Besides it, the path keeps the
most recent (shortest) window's value and its change in units of its own threshold: an
alert opens only while the most recent renders are past half their threshold too, and
resolves once they are back, as on the busy path — so a long window still holding a
change that has ended can neither open it late nor reopen it, nor hold it open over the
days it takes to forget (and through the next, separate change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from reports.alerts.series import CAPTION, HOUR, STAGES, F, Hourly, I, Series
from reports.alerts.windows import (
    Blocks,
    Sums,
    blocks,
    first_block,
    last_delivered,
    nanmedian,
    pick,
    pooled_rate,
    spread,
)

if TYPE_CHECKING:
    from reports.alerts.detect import Rule


def _padded(h: Hourly) -> Hourly:
    if len(h.hour):
        return h
    z = np.zeros(1)
    return Hourly(np.array([-1], dtype=np.int64), z, z, z, np.zeros((1, len(STAGES))), z, z)


class LowVolume:
    """Measures of the low-volume path, one entry per evaluation time (the names are the
    ``Measures`` fields they fill)."""

    def __init__(self, series: Series, s: Sums, times: I, hi: I, rule: Rule) -> None:
        r = series.renders
        at = np.append(r.at, np.iinfo(np.int64).max)  # a start past the end: an empty window
        sizes = np.array(rule.low_windows, dtype=np.float64)
        self.far = np.searchsorted(r.at, times - rule.horizon_hours * HOUR, side="right")
        his = hi[:, None]
        # The last m delivered renders, or all of the horizon's when it holds fewer.
        starts = np.maximum(last_delivered(s.d, his, sizes[None, :]), self.far[:, None])
        inside = s.over(s.d, starts, his) >= rule.low_min_renders
        mean, var, n = s.mean_var(s.x, s.x2, starts, his)
        caption, caption_var, _ = s.mean_var(s.stages[:, CAPTION], s.c2, starts, his)
        # A window's own variance is too low exactly when its mean is (a window with few
        # cache misses is cheaper and less varied): older renders give a floor — those
        # before the longest window, which a recent change has not reached (all of the
        # horizon's when too few are before it).
        longest = np.maximum(np.where(inside, np.arange(len(sizes)), -1).max(axis=1), 0)
        rows = np.arange(len(times))
        older = starts[rows, longest]
        older = np.where(s.over(s.d, self.far, older) >= rule.low_min_renders, older, hi)
        var = np.maximum(var, s.mean_var(s.x, s.x2, self.far, older)[1][:, None])
        caption_var = np.maximum(
            caption_var, s.mean_var(s.stages[:, CAPTION], s.c2, self.far, older)[1][:, None]
        )
        lookups = s.over(s.lookups, starts, his)
        hit = np.where(lookups > 0, s.over(s.hits, starts, his) / np.maximum(lookups, 1), np.nan)

        tops = times // HOUR * HOUR
        b = blocks(_padded(series.blocks), tops, rule.baseline_days + rule.horizon_hours // 24 + 2)
        first = first_block(tops, at[starts])
        bd, exists = pick(b.delivered, first, rule.baseline_days)
        usable = exists & (bd >= rule.block_min_renders)
        means = np.where(
            usable, pick(b.nanos, first, rule.baseline_days)[0] / np.maximum(bd, 1), np.nan
        )
        base, spr, used = spread(var, n, means, bd)
        spr = np.maximum(spr, np.maximum(0.005 * base, 1.0))
        ok = inside & (used >= rule.min_baseline_blocks) & np.isfinite(base)
        bar = np.maximum(np.maximum(rule.relative * base, rule.low_z * spr), rule.absolute_nanos)
        score = np.where(ok, np.abs(mean - base) / np.maximum(bar, 1e-9), -np.inf)
        j = np.argmax(score, axis=1)
        recent = np.argmax(inside, axis=1)  # the shortest window inside the horizon

        self.ok = ok.any(axis=1)
        self.lo, self.n = starts[rows, j], n[rows, j]
        self.unit, self.base, self.scale = mean[rows, j], base[rows, j], spr[rows, j]
        signed = (mean - base) / np.maximum(bar, 1e-9)
        self.recent_lo = starts[rows, recent]
        self.unit_recent_score = np.where(inside.any(axis=1), signed[rows, recent], np.nan)
        self.unit_recent = mean[rows, recent]
        self.caption = caption[rows, j]
        self.caption_recent = caption[rows, recent]
        self.hit_recent = hit[rows, recent]
        # Every window inside the horizon is a candidate for failures (those outside stand
        # in for the most recent, to keep the shape of the busy path's candidates).
        los = np.where(inside, starts, self.recent_lo[:, None])
        self.failed_los = los if los.shape[1] >= 2 else np.repeat(los, 2, axis=1)
        self._baselines(b, first[rows, j], first[rows, longest], caption_var[rows, j], rule)
        # The most recent window against half its own threshold (in units of it, signed).
        cap_bar = np.maximum(
            rule.caption_relative * self.caption_base,
            rule.low_z * np.sqrt(caption_var[rows, recent] / n[rows, recent]),
        )
        self.caption_recent_score = (self.caption_recent - self.caption_base) / np.maximum(
            cap_bar, 1
        )
        # The hit rate has a scan of its own, over windows with enough lookups to judge.
        p = self.hit_base[:, None]
        hit_bar = np.maximum(
            rule.cache_drop, rule.low_z * np.sqrt(p * (1 - p) / np.maximum(lookups, 1))
        )
        hit_score = (p - hit) / hit_bar
        judged = inside & (lookups >= rule.min_renders) & np.isfinite(hit_score)
        h = np.argmax(np.where(judged, hit_score, -np.inf), axis=1)
        self.hit, self.lookups = np.nan_to_num(hit[rows, h]), lookups[rows, h]
        self.hit_recent_score = hit_score[rows, recent]

    def _baselines(self, b: Blocks, first: I, first_longest: I, caption_var: F, rule: Rule) -> None:
        count = rule.baseline_days
        bd, exists = pick(b.delivered, first, count)
        usable = (exists & (bd >= rule.block_min_renders))[..., None]
        stages = np.where(
            usable, pick(b.stages, first, count)[0] / np.maximum(bd, 1)[..., None], np.nan
        )
        self.stage_base = nanmedian(stages, axis=1)
        self.caption_base, caption_spread, _ = spread(caption_var, self.n, stages[..., CAPTION], bd)
        self.caption_scale = np.maximum(caption_spread, np.maximum(0.02 * self.caption_base, 1.0))
        lookups = pick(b.lookups, first, count)[0]
        hits = pick(b.hits, first, count)[0]
        self.hit_base = nanmedian(
            np.where(exists & (lookups >= 5), hits / np.maximum(lookups, 1), np.nan)
        )
        # Failures are pooled over the blocks before the longest window: neither failed
        # window is then part of its own baseline.
        fd, f_exists = pick(b.delivered, first_longest, count)
        ff = pick(b.failed, first_longest, count)[0]
        self.failed_base = pooled_rate(np.where(f_exists, ff, 0.0), np.where(f_exists, fd, 0.0))

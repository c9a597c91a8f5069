"""The detector: each series' recent unit cost against a robust baseline of its own past.

A series is one tenant × use case × currency, so no figure here adds two currencies. Two
paths, by volume:

- **Busy** (``min_renders`` delivered renders in the last ``window_hours``): *recent* is the
  last ``min_renders`` delivered renders; *baseline* is the median, over ``baseline_days``,
  of the hourly unit cost at the same hour of day and the hours either side (daily
  seasonality is then in the baseline); spread = √(MAD² + SE²).
- **Low volume** (fewer): windows of the last ``low_windows`` delivered renders, each reaching
  back as far as it needs up to ``horizon_hours``; the baseline is the median of day-long
  blocks *before* the window (never its own hours), and the spread adds the window's own
  sampling error (large for a small window) to the baseline's and the blocks' day-to-day
  variation. The window furthest past its threshold is the one judged, at ``low_z``
  spreads (several windows are looked at, so a little more than ``z``): a short window sees
  a large change soon, a long one a smaller change later — a windowed change-point test.

An alert needs a relative change, an absolute one, and enough spreads — so a noisy series
needs a larger change and a quiet one a smaller. Volume never enters: only cost per
delivered render. Failures are judged by their binomial tail at the baseline rate, and
must matter: a rise of ``failed_rise`` in share, or ``failed_waste_nanos`` of money lost to
failures beyond the baseline rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from reports.alerts.low_volume import LowVolume
from reports.alerts.series import CAPTION, HOUR, STAGES, F, Hourly, I, Series
from reports.alerts.windows import (
    DAY,
    MAD_TO_SIGMA,
    B,
    Sums,
    last_delivered,
    nanmedian,
    pooled_rate,
)

SIGNALS = ("unit_cost", "unit_cost_decrease", "cache_hit_rate", "failed_waste", "caption_cost")


@dataclass(frozen=True)
class Rule:
    """Thresholds; per tenant and use case through ``AlertSettings.rules``.

    ``absolute_nanos`` and ``failed_waste_nanos`` are in nano-units of the judged series'
    currency (a tenant whose book is in EUR has EUR series): one figure for every
    currency, never converted."""

    relative: float = 0.10
    absolute_nanos: float = 1_000.0  # 0.000001 (of the series' currency) a render
    z: float = 4.5
    min_renders: int = 100
    window_hours: int = 6
    baseline_days: int = 21
    min_baseline_points: int = 14
    failed_p_value: float = 1e-6  # binomial tail of the failures seen, at the baseline rate
    failed_clear_p: float = 0.01  # resolved once the failures are no longer this unlikely
    cache_drop: float = 0.15  # absolute fall in hit rate
    failed_rise: float = 0.05  # a rise in the failed share that matters by itself, or
    failed_waste_nanos: float = 1e9  # money lost to failures beyond the baseline rate
    caption_relative: float = 0.25
    horizon_hours: int = 7 * 24  # how far back a low-volume window may reach
    low_windows: tuple[int, ...] = (16, 32, 64, 100)  # delivered renders per window
    low_min_renders: int = 16  # fewer delivered renders in the horizon: not judged
    low_z: float = 5.0
    min_baseline_blocks: int = 7  # day-long blocks with block_min_renders delivered
    block_min_renders: int = 5


@dataclass
class Measures:
    """What the detector saw at each evaluation time, one array entry per time."""

    times: I
    ok: B
    low: B  # judged on the low-volume path
    lo: I  # the judged window is renders [lo, hi)
    hi: I
    far: I  # how far back the path looks: its reference renders and change points
    n: F
    unit: F
    # The most recent window's value, against which an alert resolves: the judged
    # window's own on the busy path, which has one.
    unit_recent: F
    base: F
    scale: F
    stage: F
    stage_base: F
    hit: F
    hit_recent: F
    hit_base: F
    lookups: F
    failed: F  # failures in the failed window
    renders: F  # renders in the failed window
    failed_clear: F  # (times, 2, 2): failures and renders of the windows that resolve it
    failed_base: F
    waste: F  # money lost to failures beyond the baseline rate, in the failed window
    caption: F
    caption_recent: F
    caption_base: F
    caption_scale: F
    # Low-volume path only (NaN on the busy path): the most recent window's change in
    # units of its own threshold, signed (a rise positive; for the hit rate a fall). An
    # alert opens only while it is past half.
    unit_recent_score: F
    caption_recent_score: F
    hit_recent_score: F


def _padded(h: Hourly) -> Hourly:
    """An empty history as one empty hour that no lookup will find."""
    if len(h.hour):
        return h
    z = np.zeros(1)
    return Hourly(np.array([-1], dtype=np.int64), z, z, z, np.zeros((1, len(STAGES))), z, z)


def _failed_window(s: Sums, los: I, hi: I, p: F) -> tuple[F, F, F]:
    """Of the candidate windows (starts, (times, windows)), the one whose failures stand
    furthest above the baseline rate (a normal score: a short burst shows in a short
    window, a slow rise at volume in a long one): (failures, renders, money lost beyond
    the baseline rate)."""
    k = s.over(s.f, los, hi[:, None])
    n = k + s.over(s.d, los, hi[:, None])
    score = (k - n * p[:, None]) / np.sqrt(np.maximum(n * p[:, None] * (1 - p[:, None]), 1e-12))
    j = np.argmax(score, axis=1)
    rows = np.arange(len(hi))
    lo = los[rows, j]
    k, n = k[rows, j], n[rows, j]
    excess = np.clip(1 - n * p / np.maximum(k, 1), 0, 1)
    return k, n, s.over(s.fx, lo, hi) * excess


def measure(series: Series, times: I, rule: Rule) -> Measures:
    r, h = series.renders, _padded(series.hourly)
    s = Sums(series.renders)
    hi = np.searchsorted(r.at, times, side="right")
    lo6 = np.searchsorted(r.at, times - rule.window_hours * HOUR, side="right")
    busy = s.over(s.d, lo6, hi) >= rule.min_renders
    lo = np.where(busy, last_delivered(s.d, hi, rule.min_renders), lo6)
    unit, unit_var, n = s.mean_var(s.x, s.x2, lo, hi)
    caption, caption_var, _ = s.mean_var(s.stages[:, CAPTION], s.c2, lo, hi)

    # Baseline points: the same hour of day (±1 h) on each of the last baseline_days days.
    offsets = np.array(
        [-DAY * k + HOUR * o for k in range(1, rule.baseline_days + 1) for o in (-1, 0, 1)]
    )
    wanted = (times // HOUR * HOUR)[:, None] + offsets[None, :]
    idx = np.minimum(np.searchsorted(h.hour, wanted), len(h.hour) - 1)
    found = h.hour[idx] == wanted
    hd = np.where(found, h.delivered[idx], 0.0)
    valid = hd >= 5
    safe = np.maximum(hd, 1)
    unit_pts = np.where(valid, h.delivered_nanos[idx] / safe, np.nan)
    base = nanmedian(unit_pts)
    mad = nanmedian(np.abs(unit_pts - base[:, None])) * MAD_TO_SIGMA
    # The spread of the recent mean: its own sampling error, and how much the baseline's
    # hours differ among themselves (which includes theirs).
    scale = np.maximum(np.hypot(np.sqrt(unit_var / n), mad), np.maximum(0.005 * base, 1.0))
    stage_base = nanmedian(np.where(valid[..., None], h.stages[idx] / safe[..., None], np.nan), 1)
    caption_pts = np.where(valid, h.stages[idx][..., CAPTION] / safe, np.nan)
    caption_base = stage_base[:, CAPTION]
    caption_mad = nanmedian(np.abs(caption_pts - caption_base[:, None])) * MAD_TO_SIGMA
    caption_scale = np.maximum(
        np.hypot(np.sqrt(caption_var / n), caption_mad), np.maximum(0.02 * caption_base, 1.0)
    )
    hl = np.where(found, h.lookups[idx], 0.0)
    hit_base = nanmedian(np.where(hl >= 5, h.hits[idx] / np.maximum(hl, 1), np.nan))
    failed_base = pooled_rate(np.where(valid, h.failed[idx], np.nan), np.where(valid, hd, np.nan))
    points = valid.sum(axis=1)
    ok = busy & (points >= rule.min_baseline_points) & np.isfinite(base)
    lookups = s.over(s.lookups, lo, hi)
    hit = s.over(s.hits, lo, hi) / np.maximum(lookups, 1)
    nan = np.full(len(times), np.nan)
    v: dict[str, npt.NDArray[Any]] = {
        "lo": lo,
        "far": lo6,
        # Failures are judged on the window among these that shows them best.
        "failed_los": np.stack([lo, *[lo6] * max(len(rule.low_windows) - 1, 1)], axis=1),
        "recent_lo": lo,  # the most recent window
        "n": n,
        "unit": unit,
        "unit_recent": unit,
        "base": base,
        "scale": scale,
        "stage_base": stage_base,
        "hit": hit,
        "hit_recent": hit,
        "hit_base": hit_base,
        "lookups": lookups,
        "caption": caption,
        "caption_recent": caption,
        "caption_base": caption_base,
        "caption_scale": caption_scale,
        "failed_base": failed_base,
        **dict.fromkeys(("unit_recent_score", "caption_recent_score", "hit_recent_score"), nan),
    }
    quiet = np.flatnonzero(~busy)
    if len(quiet):
        low = LowVolume(series, s, times[quiet], hi[quiet], rule)
        ok[quiet] = low.ok
        for name, values in v.items():
            v[name] = values.copy()
            v[name][quiet] = getattr(low, name)
    lo, n = v["lo"], v["n"]
    failed, renders, waste = _failed_window(s, v["failed_los"], hi, v["failed_base"])
    # Failures resolve on the busy path's two windows, on the low-volume path's most recent.
    clear_los = [v["recent_lo"], np.where(busy, lo6, v["recent_lo"])]
    fk = np.stack([s.over(s.f, c, hi) for c in clear_los], axis=1)
    fn = fk + np.stack([s.over(s.d, c, hi) for c in clear_los], axis=1)
    return Measures(
        times=times,
        ok=ok,
        low=~busy,
        hi=hi,
        stage=s.over(s.stages, lo, hi) / n[:, None],
        failed=failed,
        renders=renders,
        failed_clear=np.stack([fk, fn], axis=2),
        waste=waste,
        **{k: x for k, x in v.items() if k not in ("failed_los", "recent_lo")},
    )


def value(m: Measures, signal: str, i: int) -> tuple[float, float, float]:
    """(current, baseline, spread) of a signal at evaluation ``i``; for failures the third
    is the number of renders in the failed window."""
    if signal in ("unit_cost", "unit_cost_decrease"):
        return float(m.unit[i]), float(m.base[i]), float(m.scale[i])
    if signal == "caption_cost":
        return float(m.caption[i]), float(m.caption_base[i]), float(m.caption_scale[i])
    if signal == "cache_hit_rate":
        p = float(m.hit_base[i])
        se = max(np.sqrt(max(p * (1 - p), 0.0) / max(float(m.lookups[i]), 1.0)), 0.01)
        return float(m.hit[i]), p, se
    renders = float(m.renders[i])
    return float(m.failed[i]) / max(renders, 1.0), float(m.failed_base[i]), renders


def fires(
    signal: str, now: float, base: float, spread: float, rule: Rule, m: Measures, i: int
) -> bool:
    if not m.ok[i] or not np.isfinite(base) or not np.isfinite(now):
        return False
    low = bool(m.low[i])
    z = rule.low_z if low else rule.z
    if signal in ("unit_cost", "unit_cost_decrease"):
        sign = 1 if signal == "unit_cost" else -1
        change = sign * (now - base)
        if low and not sign * float(m.unit_recent_score[i]) >= 0.5:
            return False
        return (
            change >= rule.relative * base
            and change >= rule.absolute_nanos
            and change >= z * spread
        )
    if signal == "caption_cost":
        if low and not float(m.caption_recent_score[i]) >= 0.5:
            return False
        rise = now - base
        meaningful = base > 0.01 * float(m.base[i])
        return meaningful and rise >= rule.caption_relative * base and rise >= z * spread
    if signal == "cache_hit_rate":
        if m.lookups[i] < rule.min_renders or (low and not float(m.hit_recent_score[i]) >= 0.5):
            return False
        return base - now >= rule.cache_drop and base - now >= z * spread
    k, n = (int(x) for x in m.failed_clear[i][0])
    if low and (
        k / max(n, 1) - base < rule.failed_rise / 2
        or binomial_tail(k, n, base) >= rule.failed_clear_p
    ):
        return False  # the failures are behind it: the most recent renders are fine
    if now - base < rule.failed_rise and m.waste[i] < rule.failed_waste_nanos:
        return False  # not enough to matter, however unlikely
    return binomial_tail(int(m.failed[i]), round(spread), base) < rule.failed_p_value


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space from the near side only: terms
    fall away geometrically past the mode, so thousands of renders cost a few dozen terms."""
    if k <= 0 or p >= 1:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def term(j: int) -> float:
        return (
            math.lgamma(n + 1)
            - math.lgamma(j + 1)
            - math.lgamma(n - j + 1)
            + j * log_p
            + (n - j) * log_q
        )

    upper = k > n * p  # the tail beyond the mean: sum up from k; else 1 − the sum below k
    top, terms = -math.inf, list[float]()
    for j in range(k, n + 1) if upper else range(k - 1, -1, -1):
        t = term(j)
        if t < top - 40:  # e^-40 of the largest: nothing left that could show
            break
        top = max(top, t)
        terms.append(t)
    total = math.exp(top) * sum(math.exp(t - top) for t in terms)
    return min(total, 1.0) if upper else max(1.0 - total, 0.0)


def clears(signal: str, now: float, opened_base: float, rule: Rule, m: Measures, i: int) -> bool:
    """Back within half the threshold of the baseline the alert opened against, in the most
    recent window (the judged one, on the busy path)."""
    if not m.ok[i] or not np.isfinite(now):
        return False
    if signal == "unit_cost":
        return float(m.unit_recent[i]) - opened_base < rule.relative / 2 * opened_base
    if signal == "unit_cost_decrease":
        return opened_base - float(m.unit_recent[i]) < rule.relative / 2 * opened_base
    if signal == "caption_cost":
        return float(m.caption_recent[i]) - opened_base < rule.caption_relative / 2 * opened_base
    if signal == "cache_hit_rate":
        return opened_base - float(m.hit_recent[i]) < rule.cache_drop / 2
    return all(  # near the rate again, and no longer unlikely at it
        k / max(n, 1) - opened_base < rule.failed_rise / 2
        and binomial_tail(int(k), int(n), opened_base) > rule.failed_clear_p
        for k, n in m.failed_clear[i]
    )

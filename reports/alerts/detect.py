"""The detector: each series' recent unit cost against a robust baseline of its own past.

A series is one tenant × use case × currency, so no figure here adds two currencies.
*Recent* is the last ``min_renders`` delivered renders (at most ``window_hours`` back);
fewer than that and the series is not judged. *Baseline* is the median, over the last
``baseline_days`` days, of the hourly unit cost at the same hour of day and the hours on
either side (daily seasonality, where the data has it, is then already in the baseline),
with the MAD as its spread, scaled to the recent sample's size. An alert needs a relative
rise, an absolute rise, and a rise of ``z`` spreads — so a noisy series needs a larger
change and a quiet one a smaller. Volume never enters: only cost per delivered render.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.events import Stage
from reports.alerts.series import HOUR, STAGES, F, Hourly, I, Renders, Series

B = npt.NDArray[np.bool_]
DAY = 24 * HOUR
MAD_TO_SIGMA = 1.4826
SIGNALS = ("unit_cost", "unit_cost_decrease", "cache_hit_rate", "failed_waste", "caption_cost")
CAPTION = STAGES.index(Stage.CAPTION_LLM)


@dataclass(frozen=True)
class Rule:
    """Thresholds; per tenant and use case through ``AlertSettings.rules``.

    ``absolute_nanos`` is in nano-units of the judged series' currency (a tenant whose book
    is in EUR has EUR series): one figure for every currency, never converted."""

    relative: float = 0.10
    absolute_nanos: float = 1_000.0  # 0.000001 (of the series' currency) a render
    z: float = 4.5
    min_renders: int = 100
    window_hours: int = 6
    baseline_days: int = 21
    min_baseline_points: int = 14
    failed_p_value: float = 1e-6  # binomial tail of the failures seen, at the baseline rate
    cache_drop: float = 0.15  # absolute fall in hit rate
    failed_rise: float = 0.05  # absolute rise in the failed share of renders
    caption_relative: float = 0.25


@dataclass
class Measures:
    """What the detector saw at each evaluation time, one array entry per time."""

    times: I
    ok: B
    lo: I
    hi: I
    n: F
    unit: F
    base: F
    scale: F
    stage: F
    stage_base: F
    hit: F
    hit_base: F
    lookups: F
    failed_share: F
    failed_base: F
    renders: F
    waste: F
    caption: F
    caption_base: F
    caption_scale: F


def _cum(values: npt.NDArray[Any]) -> F:
    out = np.zeros((len(values) + 1, *values.shape[1:]))
    np.cumsum(values, axis=0, out=out[1:])
    return out


def _median(x: F) -> F:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are simply "no baseline"
        return np.nanmedian(x, axis=1)


def _padded(h: Hourly) -> Hourly:
    """An empty history as one empty hour that no lookup will find."""
    if len(h.hour):
        return h
    z = np.zeros(1)
    return Hourly(np.array([-1], dtype=np.int64), z, z, z, np.zeros((1, len(STAGES))), z, z)


def measure(series: Series, times: I, rule: Rule) -> Measures:
    r, h = series.renders, _padded(series.hourly)
    delivered = r.delivered.astype(np.float64)
    failed = r.failed.astype(np.float64)
    d_cum = _cum(delivered)
    hi = np.searchsorted(r.at, times, side="right")
    lo_window = np.searchsorted(r.at, times - rule.window_hours * HOUR, side="right")
    enough = d_cum[hi] - d_cum[lo_window] >= rule.min_renders
    target = np.maximum(d_cum[hi] - rule.min_renders, 0)
    lo = np.maximum(np.searchsorted(d_cum, target, side="right") - 1, 0)
    lo = np.where(enough, lo, lo_window)
    n = np.maximum(d_cum[hi] - d_cum[lo], 1)

    def window(values: npt.NDArray[Any]) -> F:
        c = _cum(values)
        return np.asarray(c[hi] - c[lo], dtype=np.float64)

    unit = window(r.total * delivered) / n
    unit_se = np.sqrt(np.maximum(window(r.total**2 * delivered) / n - unit**2, 0) / n)
    stage = window(r.stages * delivered[:, None]) / n[:, None]
    caption_sq = window(r.stages[:, CAPTION] ** 2 * delivered) / n
    caption_se = np.sqrt(np.maximum(caption_sq - stage[:, CAPTION] ** 2, 0) / n)
    nf = window(failed)
    lookups = window(r.lookups)
    hit = window(r.hits) / np.maximum(lookups, 1)

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

    def pick(a: F) -> F:
        return np.where(valid, a, np.nan)

    unit_pts = pick(h.delivered_nanos[idx] / safe)
    base = _median(unit_pts)
    mad = _median(np.abs(unit_pts - base[:, None])) * MAD_TO_SIGMA
    # The spread of the recent mean: its own sampling error, and how much the baseline's
    # hours differ among themselves (which includes theirs).
    scale = np.maximum(np.hypot(unit_se, mad), np.maximum(0.005 * base, 1.0))
    stage_pts = np.where(valid[..., None], h.stages[idx] / safe[..., None], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stage_base = np.nanmedian(stage_pts, axis=1)
    caption_pts = stage_pts[..., CAPTION]
    caption_base = stage_base[:, CAPTION]
    caption_mad = _median(np.abs(caption_pts - caption_base[:, None])) * MAD_TO_SIGMA
    caption_scale = np.maximum(
        np.hypot(caption_se, caption_mad), np.maximum(0.02 * caption_base, 1.0)
    )
    hl = np.where(found, h.lookups[idx] if len(h.hour) else 0.0, 0.0)
    hit_base = _median(
        np.where(hl >= 5, (h.hits[idx] if len(h.hour) else 0.0) / np.maximum(hl, 1), np.nan)
    )
    hf = np.where(found, h.failed[idx] if len(h.hour) else 0.0, 0.0)
    # Failures are rare: most hours have none, so the baseline is the pooled rate.
    failed_base = np.maximum(
        np.nansum(np.where(valid, hf, np.nan), axis=1)
        / np.maximum(np.nansum(np.where(valid, hd + hf, np.nan), axis=1), 1),
        0.001,
    )
    points = valid.sum(axis=1)
    ok = enough & (points >= rule.min_baseline_points) & np.isfinite(base)
    return Measures(
        times=times,
        ok=ok,
        lo=lo,
        hi=hi,
        n=n,
        unit=unit,
        base=base,
        scale=scale,
        stage=stage,
        stage_base=stage_base,
        hit=hit,
        hit_base=hit_base,
        lookups=lookups,
        failed_share=nf / np.maximum(nf + n, 1),
        failed_base=failed_base,
        renders=nf + n,
        waste=window(r.total * failed),
        caption=stage[:, CAPTION],
        caption_base=caption_base,
        caption_scale=caption_scale,
    )


def value(m: Measures, signal: str, i: int) -> tuple[float, float, float]:
    """(current, baseline, spread) of a signal at evaluation ``i``."""
    if signal in ("unit_cost", "unit_cost_decrease"):
        return float(m.unit[i]), float(m.base[i]), float(m.scale[i])
    if signal == "caption_cost":
        return float(m.caption[i]), float(m.caption_base[i]), float(m.caption_scale[i])
    if signal == "cache_hit_rate":
        p = float(m.hit_base[i])
        se = max(np.sqrt(max(p * (1 - p), 0.0) / max(float(m.lookups[i]), 1.0)), 0.01)
        return float(m.hit[i]), p, se
    p = float(m.failed_base[i])
    return float(m.failed_share[i]), p, float(m.renders[i])


def fires(
    signal: str, now: float, base: float, spread: float, rule: Rule, m: Measures, i: int
) -> bool:
    if not m.ok[i] or not np.isfinite(base) or not np.isfinite(now):
        return False
    if signal == "unit_cost":
        rise = now - base
        return (
            rise >= rule.relative * base and rise >= rule.absolute_nanos and rise >= rule.z * spread
        )
    if signal == "unit_cost_decrease":
        fall = base - now
        return (
            fall >= rule.relative * base and fall >= rule.absolute_nanos and fall >= rule.z * spread
        )
    if signal == "caption_cost":
        rise = now - base
        meaningful = base > 0.01 * float(m.base[i])
        return meaningful and rise >= rule.caption_relative * base and rise >= rule.z * spread
    if signal == "cache_hit_rate":
        if m.lookups[i] < rule.min_renders:
            return False
        return base - now >= rule.cache_drop and base - now >= rule.z * spread
    if now - base < rule.failed_rise:
        return False
    renders = round(spread)  # for this signal the third value is the sample size
    return binomial_tail(round(now * renders), renders, base) < rule.failed_p_value


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), summed in log space (n is a few hundred at most)."""
    if k <= 0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * log_p
        + (n - j) * log_q
        for j in range(k, n + 1)
    ]
    top = max(terms)
    return math.exp(top) * sum(math.exp(t - top) for t in terms)


def clears(signal: str, now: float, opened_base: float, rule: Rule, m: Measures, i: int) -> bool:
    """Back within half the threshold of the baseline the alert opened against."""
    if not m.ok[i] or not np.isfinite(now):
        return False
    if signal == "unit_cost":
        return now - opened_base < rule.relative / 2 * opened_base
    if signal == "unit_cost_decrease":
        return opened_base - now < rule.relative / 2 * opened_base
    if signal == "caption_cost":
        return now - opened_base < rule.caption_relative / 2 * opened_base
    if signal == "cache_hit_rate":
        return opened_base - now < rule.cache_drop / 2
    return now - opened_base < rule.failed_rise / 2


def _mode(values: npt.NDArray[np.object_]) -> Any:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    uniques, counts = np.unique(np.array(kept, dtype=str), return_counts=True)
    return str(uniques[int(np.argmax(counts))])


def explain(series: Series, m: Measures, i: int, rule: Rule) -> dict[str, Any]:
    """Stages and changed attributes ranked by their share of the change, in money."""
    delta = m.stage[i] - m.stage_base[i]
    rising = np.clip(delta, 0, None)
    total = float(rising.sum()) or 1.0
    stages: list[dict[str, Any]] = [
        {"stage": s, "share": float(rising[k]) / total, "change_nanos": float(delta[k])}
        for k, s in enumerate(STAGES)
    ]
    stages.sort(key=lambda x: -float(x["share"]))
    r: Renders = series.renders
    lo, hi = int(m.lo[i]), int(m.hi[i])
    ref_lo = int(np.searchsorted(r.at, int(m.times[i]) - rule.window_hours * HOUR, side="right"))
    reference = r.take(slice(ref_lo, lo))
    recent = r.take(slice(lo, hi))
    changes = []
    increase = float(m.unit[i] - m.base[i]) or 1.0
    ref_delivered = reference.delivered
    for name, values in recent.attributes.items():
        before = _mode(reference.attributes[name][ref_delivered]) if ref_delivered.any() else None
        after = _mode(values[recent.delivered])
        if before is None or after is None or before == after:
            continue
        changed = recent.delivered & (values.astype(str) != before)
        ref_same = ref_delivered & (reference.attributes[name].astype(str) == before)
        ref_mean = float(reference.total[ref_same].mean()) if ref_same.any() else float(m.base[i])
        contribution = float((recent.total[changed] - ref_mean).sum()) / max(float(m.n[i]), 1.0)
        changes.append(
            {
                "attribute": name,
                "before": before,
                "after": after,
                "share": float(np.clip(contribution / increase, 0, 1)),
            }
        )
    if np.isfinite(m.hit_base[i]) and m.lookups[i] > 0 and abs(m.hit[i] - m.hit_base[i]) >= 0.1:
        cached = rising[STAGES.index(Stage.TEXT_ENCODER)] + rising[CAPTION]
        changes.append(
            {
                "attribute": "cache_hit_rate",
                "before": f"{m.hit_base[i]:.0%}",
                "after": f"{m.hit[i]:.0%}",
                "share": float(cached) / total,
            }
        )
    changes.sort(key=lambda c: -float(c["share"]))
    return {"stages": stages, "changes": changes}

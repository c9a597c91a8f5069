"""Why an alert opened, and since when: root cause by money, and the change point.

The cause is each stage's change in cost per render, and for each recorded attribute whose
usual value changed, the extra cost the changed renders carry relative to the reference
renders (those before the judged window) — as a share of the increase. *Since* is where
the change began, not where the judged window starts (which is as many renders back as
the window holds, whenever the change came): the render after which the values sit
nearer the new level than the old, the change point a CUSUM would name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.events import Stage
from reports.alerts.detect import Measures, value
from reports.alerts.series import CAPTION, STAGES, Renders, Series

FALLS = ("unit_cost_decrease", "cache_hit_rate")  # signals that alert on a fall


def change_start(series: Series, m: Measures, i: int, signal: str) -> int:
    """Epoch seconds of the first render of the change, looking back as far as the path
    that judged it (the window hours, or the horizon): the start of the suffix whose
    values sum furthest past the midpoint between the baseline and the current value."""
    now, base, _ = value(m, signal, i)
    lo, hi = int(m.far[i]), int(m.hi[i])
    r = series.renders.take(slice(lo, hi))
    mid = (now + base) / 2
    if signal in ("unit_cost", "unit_cost_decrease", "caption_cost"):
        keep = r.delivered
        x = (r.total if signal != "caption_cost" else r.stages[:, CAPTION])[keep] - mid
    elif signal == "cache_hit_rate":
        keep = r.lookups > 0
        x = r.hits[keep] - mid * r.lookups[keep]
    else:
        keep = r.delivered | r.failed
        x = r.failed[keep].astype(np.float64) - mid
    at = r.at[keep]
    if not len(at):
        return int(m.times[i])
    if signal in FALLS:
        x = -x
    suffix = np.cumsum(x[::-1])[::-1]
    return int(at[int(np.argmax(suffix))])


def _mode(values: npt.NDArray[np.object_]) -> Any:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    uniques, counts = np.unique(np.array(kept, dtype=str), return_counts=True)
    return str(uniques[int(np.argmax(counts))])


def explain(series: Series, m: Measures, i: int) -> dict[str, Any]:
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
    reference = r.take(slice(int(m.far[i]), lo))
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

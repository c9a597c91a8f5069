"""Opening and resolving alerts from measures: one open alert per series and signal.

A series is a tenant × use case × currency, so the open alerts of a tenant are keyed by
(tenant, use case, currency, signal); every amount an alert logs (value, baseline, spread,
``change_nanos``, ``waste_nanos``) is in its series' currency, which its detail names
(``currency``) and its message spells after the figures.

An alert opens against the baseline of that moment and keeps it: a regression that lasts
longer than the baseline window does not become the new normal and resolve itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reports.alerts.detect import SIGNALS, Measures, Rule, clears, explain, fires, value
from reports.alerts.series import Series

LABELS = {
    "unit_cost": "cost per render",
    "unit_cost_decrease": "cost per render",
    "caption_cost": "caption cost per render",
    "cache_hit_rate": "cache hit rate",
    "failed_waste": "failed renders",
}


@dataclass
class OpenAlert:
    alert_id: uuid.UUID
    signal: str
    opened_at: int
    base: float


@dataclass
class Decision:
    kind: str  # opened | resolved
    alert_id: uuid.UUID
    signal: str
    at: int
    detail: dict[str, Any] = field(default_factory=dict)


def _amount(nanos: float) -> str:
    return f"{nanos / 1e9:.3g}" if abs(nanos) >= 1 else "0"


def _clock(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def message(
    series: Series, signal: str, now: float, base: float, since: int, why: dict[str, Any]
) -> str:
    head = f"{series.tenant}/{series.use_case} {LABELS[signal]}"
    if signal in ("cache_hit_rate", "failed_waste"):
        text = f"{head} {base:.0%} → {now:.0%} since {_clock(since)}"
    else:
        change = (now - base) / base if base else 0.0
        pct = f"{change:+.0%}".replace("-", "−")
        money = f"{_amount(base)} → {_amount(now)} {series.currency} per render"
        text = f"{head} {pct} ({money}) since {_clock(since)}"
    stages = [s for s in why.get("stages", []) if s["share"] > 0]
    if stages and signal in ("unit_cost", "caption_cost"):
        text += f"; {stages[0]['share']:.0%} of the increase is `{stages[0]['stage']}`"
    for change in why.get("changes", [])[:2]:
        text += f"; {change['attribute']} changed {change['before']} → {change['after']}"
    return text


def decide(
    series: Series, m: Measures, i: int, rule: Rule, open_alerts: dict[str, OpenAlert]
) -> list[Decision]:
    """What changes at evaluation ``i``; ``open_alerts`` (by signal) is updated in place."""
    out = []
    at = int(m.times[i])
    for signal in SIGNALS:
        now, base, spread = value(m, signal, i)
        current = open_alerts.get(signal)
        if current is not None:
            if clears(signal, now, current.base, rule, m, i):
                out.append(
                    Decision(
                        "resolved",
                        current.alert_id,
                        signal,
                        at,
                        {"value": now, "baseline": current.base, "currency": series.currency},
                    )
                )
                del open_alerts[signal]
            continue
        if not fires(signal, now, base, spread, rule, m, i):
            continue
        since = int(series.renders.at[int(m.lo[i])])
        why = explain(series, m, i, rule) if signal in ("unit_cost", "caption_cost") else {}
        detail = {
            "currency": series.currency,
            "value": now,
            "baseline": base,
            "spread": spread,
            "change": (now - base) / base if base else None,
            "renders": float(m.n[i]),
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "waste_nanos": float(m.waste[i]) if signal == "failed_waste" else None,
            **why,
            "message": message(series, signal, now, base, since, why),
        }
        alert = OpenAlert(uuid.uuid4(), signal, at, base)
        open_alerts[signal] = alert
        out.append(Decision("opened", alert.alert_id, signal, at, detail))
    return out

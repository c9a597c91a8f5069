"""Opening and resolving alerts from measures: one open alert per series and signal.

A series is a tenant × use case × currency, so the open alerts of a tenant are keyed by
(tenant, use case, currency, signal); every amount an alert logs (value, baseline, spread,
``change_nanos``, ``waste_nanos``) is in its series' currency, which its detail names
(``currency``) and its message spells after the figures.

An alert opens against the baseline of that moment and keeps it: a regression that lasts
longer than the baseline window does not become the new normal and resolve itself. Its
"since" is the change point (``explain.change_start``): when the change began, not when
the window that caught it filled.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reports.alerts.detect import SIGNALS, Measures, Rule, clears, fires, value
from reports.alerts.explain import change_start, explain
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


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _clock(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _share(x: float) -> str:
    """A rate as a user reads it: 0.31 % stays 0.31 %, not 0 %."""
    return f"{x:.0%}" if x >= 0.1 or x == 0 else f"{x:.2%}"


def message(
    series: Series, signal: str, now: float, base: float, since: int, why: dict[str, Any]
) -> str:
    head = f"{series.tenant}/{series.use_case} {LABELS[signal]}"
    if signal == "cache_hit_rate":
        text = f"{head} {base:.0%} → {now:.0%} since {_clock(since)}"
    elif signal == "failed_waste":
        text = f"{head} {_share(base)} → {_share(now)} since {_clock(since)}"
        waste = float(why.get("waste_nanos") or 0.0)
        text += f"; {_amount(waste)} {series.currency} lost beyond the usual rate"
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
    series: Series,
    m: Measures,
    i: int,
    rule: Rule,
    open_alerts: dict[str, OpenAlert],
    resolved: dict[str, int] | None = None,
) -> list[Decision]:
    """What changes at evaluation ``i``; ``open_alerts`` (by signal) is updated in place,
    and so is ``resolved`` (by signal, when its last alert resolved): a change that began
    before then is the one that alert was about, and it has ended — renders of it still in
    a long window are no reason to open it again."""
    out = []
    at = int(m.times[i])
    resolved = {} if resolved is None else resolved
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
                        {
                            "value": now,
                            "baseline": current.base,
                            "currency": series.currency,
                            "judged_at": _iso(at),
                        },
                    )
                )
                del open_alerts[signal]
                resolved[signal] = at
            continue
        if not fires(signal, now, base, spread, rule, m, i):
            continue
        since = change_start(series, m, i, signal)
        if since < resolved.get(signal, since):
            continue
        why: dict[str, Any] = (
            explain(series, m, i) if signal in ("unit_cost", "caption_cost") else {}
        )
        if signal == "failed_waste":
            why = {"waste_nanos": float(m.waste[i]), "failures": float(m.failed[i])}
        detail = {
            "currency": series.currency,
            "value": now,
            "baseline": base,
            "spread": spread,
            "change": (now - base) / base if base else None,
            "renders": float(m.renders[i] if signal == "failed_waste" else m.n[i]),
            "since": _iso(since),
            "waste_nanos": None,
            "window": "low_volume" if m.low[i] else "busy",
            **why,
            "message": message(series, signal, now, base, since, why),
        }
        alert = OpenAlert(uuid.uuid4(), signal, at, base)
        open_alerts[signal] = alert
        out.append(Decision("opened", alert.alert_id, signal, at, detail))
    return out

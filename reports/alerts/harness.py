"""The evaluation harness: histories with known regressions, scored like an on-call would.

Each tenant × use case gets ``days`` of renders with daily seasonality in volume (and a
little in unit cost, through cache hit rates), per-render noise, and injected changes of
known start, size and stage. The detector runs every ``interval`` on what it would have
seen then. Renders are generated in the shape of ``render_rollup`` rows and go through the
same hourly aggregation, detector and tracker as the service; only PostgreSQL is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ledger.events import Stage
from ledger.tables import STAGE_COLUMNS
from reports.alerts.detect import Rule, measure
from reports.alerts.series import HOUR, STAGES, F, Series, hourly_frame, to_hourly, to_renders
from reports.alerts.tracker import Decision, OpenAlert, decide

DAY = 24 * HOUR
CURRENCY = "USD"  # of every generated series: a series is of one currency
START = 1_780_000_000 // DAY * DAY  # a fixed midnight (2026-05-29 UTC): runs are reproducible
# Mean cost of each stage of a delivered render, nanos, before caches.
STAGE_MEANS: dict[str, int] = {
    Stage.TEXT_ENCODER: 20_000,
    Stage.CAPTION_LLM: 150_000,
    Stage.UNET: 550_000,
    Stage.VAE_DECODE: 60_000,
    Stage.POSTPROCESS: 20_000,
    Stage.STORAGE: 30_000,
    Stage.CDN_EGRESS: 40_000,
}
GPU_STAGES = (Stage.TEXT_ENCODER, Stage.UNET, Stage.VAE_DECODE)


@dataclass(frozen=True)
class Injection:
    tenant: str
    use_case: str
    kind: str
    start: int
    end: int
    stage: Stage | None  # the stage the detector should name first
    size: float = 0.0  # the change in cost per delivered render (or waste share), measured

    @property
    def alerting(self) -> bool:
        return self.kind != "volume_double"


KINDS: dict[str, tuple[Stage | None, int]] = {  # kind: (expected stage, hours)
    "int8_off": (Stage.UNET, 20),
    "embedding_cache_outage": (Stage.TEXT_ENCODER, 10),
    "caption_cache_off": (Stage.CAPTION_LLM, 16),
    "gpu_swap": (Stage.UNET, 24),
    "failed_burst": (None, 4),
    "pipeline_small": (Stage.UNET, 24),
    "cheaper_unet": (Stage.UNET, 24),  # a decrease: alerts of its own kind
    "volume_double": (None, 48),
}


def _renders(
    rng: np.random.Generator, tenant: str, use_case: str, days: int, injections: list[Injection]
) -> pl.DataFrame:
    level = rng.uniform(70, 150)
    hours = np.arange(days * 24)
    season = 0.35 + 0.65 * (1 + np.sin(2 * np.pi * ((hours % 24) - 8) / 24)) / 2
    rate = level * season
    for inj in injections:
        if inj.kind == "volume_double":
            inside = (START + hours * HOUR >= inj.start) & (START + hours * HOUR < inj.end)
            rate = np.where(inside, rate * 2, rate)
    counts = rng.poisson(rate)
    at = np.repeat(START + hours * HOUR, counts) + rng.integers(0, HOUR, counts.sum())
    at.sort()
    n = len(at)
    hod = (at % DAY) / HOUR
    caption_hit_p = 0.85 + 0.05 * np.sin(2 * np.pi * (hod - 8) / 24)
    embed_hit = rng.random(n) < 0.9
    caption_hit = rng.random(n) < caption_hit_p
    fail_p = np.full(n, 0.01)
    mult = {s: np.ones(n) for s in STAGES}
    precision = np.full(n, "int8", dtype=object)
    gpu = np.full(n, "h100", dtype=object)
    pipeline = np.full(n, "2026.10", dtype=object)
    for inj in injections:
        inside = (at >= inj.start) & (at < inj.end)
        if inj.kind == "int8_off":
            mult[Stage.UNET][inside] *= 1.39
            precision[inside] = "fp16"
        elif inj.kind == "embedding_cache_outage":
            embed_hit &= ~inside
        elif inj.kind == "caption_cache_off":
            caption_hit &= ~inside
        elif inj.kind == "gpu_swap":
            for gpu_stage in GPU_STAGES:
                mult[gpu_stage][inside] *= 1.22
            gpu[inside] = "a100"
        elif inj.kind == "failed_burst":
            fail_p[inside] = 0.2
        elif inj.kind == "cheaper_unet":
            mult[Stage.UNET][inside] *= 0.7
        elif inj.kind == "pipeline_small":
            mult[Stage.UNET][inside] *= 1.08
            pipeline[inside] = "2026.11"
    stages: dict[str, F] = {}
    for s in STAGES:
        noise = rng.lognormal(-0.02, 0.2 if s == Stage.UNET else 0.15, n)
        stages[s] = STAGE_MEANS[s] * noise * mult[s]
    stages[Stage.TEXT_ENCODER] *= np.where(embed_hit, 0.1, 1.0) * 10 / 1.9  # mean ≈ 20,000 at 90 %
    stages[Stage.CAPTION_LLM] *= np.where(caption_hit, 0.0, 1.0)
    failed = rng.random(n) < fail_p
    total_stages = np.stack([stages[s] for s in STAGES], axis=1)
    total_stages[failed] *= 0.6  # a failed render stops part-way
    frame = pl.DataFrame(
        {
            "tenant_id": tenant,
            "use_case": use_case,
            "currency": CURRENCY,
            "rendered_at": pl.Series(at * 1_000_000).cast(pl.Datetime("us", "UTC")),
            "outcome": np.where(failed, "failed", "delivered"),
            **{
                STAGE_COLUMNS[s]: total_stages[:, k].round().astype(np.int64)
                for k, s in enumerate(STAGES)
            },
            "cache_hits": embed_hit.astype(np.int64) + caption_hit.astype(np.int64),
            "cache_lookups": np.full(n, 2, dtype=np.int64),
            "model": "sdxl-1.0",
            "pipeline_version": pipeline,
            "gpu_type": gpu,
            "precision": precision,
        }
    )
    return frame.with_columns(pl.sum_horizontal(STAGE_COLUMNS.values()).alias("total_nanos"))


def plan_injections(rng: np.random.Generator, tenants: int, days: int) -> list[Injection]:
    """Each tenant gets every kind once, at random non-overlapping times after a warm-up."""
    out = []
    kinds = list(KINDS)
    for t in range(tenants):
        tenant = f"tenant{t:02d}"
        slots = rng.permutation(np.arange(10, days - 2, 2))[: len(kinds)]
        for kind, day in zip(rng.permutation(kinds), sorted(slots), strict=False):
            stage, hours = KINDS[str(kind)]
            start = START + int(day) * DAY + int(rng.integers(0, 24)) * HOUR
            use_case = ("ecommerce", "social")[int(rng.integers(0, 2))]
            out.append(Injection(tenant, use_case, str(kind), start, start + hours * HOUR, stage))
    return out


def _size(frame: pl.DataFrame, inj: Injection) -> float:
    """The injected change as it landed: relative rise in cost per delivered render (or in
    the failed share, for a burst), inside the window against the day before it."""

    def unit(lo: int, hi: int) -> tuple[float, float]:
        part = frame.filter(pl.col("rendered_at").dt.epoch("s").is_between(lo, hi, closed="left"))
        delivered = part["outcome"].to_numpy() == "delivered"
        totals = part["total_nanos"].to_numpy()
        mean = float(totals[delivered].mean()) if delivered.any() else 0.0
        return mean, float((~delivered).mean()) if len(delivered) else 0.0

    before, f0 = unit(inj.start - DAY, inj.start)
    after, f1 = unit(inj.start, inj.end)
    if inj.kind == "failed_burst":
        return f1 - f0
    return after / before - 1 if before else 0.0


@dataclass
class Result:
    injections: list[Injection]
    alerts: list[tuple[str, str, Decision]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)


def evaluate(
    tenants: int = 6,
    days: int = 60,
    seed: int = 7,
    interval_minutes: int = 15,
    rule: Rule | None = None,
) -> Result:
    rule = rule or Rule()
    rng = np.random.default_rng(seed)
    injections = plan_injections(rng, tenants, days)
    result = Result([])
    times = np.arange(START + HOUR, START + days * DAY + 1, interval_minutes * 60, dtype=np.int64)
    sized: list[Injection] = []
    for t in range(tenants):
        for use_case in ("ecommerce", "social"):
            tenant = f"tenant{t:02d}"
            mine = [i for i in injections if (i.tenant, i.use_case) == (tenant, use_case)]
            frame = _renders(rng, tenant, use_case, days, mine)
            sized += [Injection(**{**i.__dict__, "size": _size(frame, i)}) for i in mine]
            hourly = hourly_frame(frame.lazy()).collect()
            series = Series(tenant, use_case, CURRENCY, to_renders(frame), to_hourly(hourly))
            m = measure(series, times, rule)
            open_alerts: dict[str, OpenAlert] = {}
            for i in range(len(times)):
                for d in decide(series, m, i, rule, open_alerts):
                    result.alerts.append((tenant, use_case, d))
            first_enough = {}
            for inj in mine:
                after = series.renders.at[
                    (series.renders.at >= inj.start) & series.renders.delivered
                ]
                k = min(rule.min_renders - 1, len(after) - 1)
                first_enough[inj] = int(after[k]) if k >= 0 else inj.end
            result.rows += [{"injection": inj, "min_sample_at": first_enough[inj]} for inj in mine]
    result.injections = sized
    by_key = {(i.tenant, i.use_case, i.kind, i.start): i for i in sized}
    for row in result.rows:
        inj = row["injection"]
        row["injection"] = by_key[(inj.tenant, inj.use_case, inj.kind, inj.start)]
    result.summary = score(result, interval_minutes)
    return result


def _matches(inj: Injection, tenant: str, use_case: str, d: Decision) -> bool:
    return (tenant, use_case) == (
        inj.tenant,
        inj.use_case,
    ) and inj.start <= d.at <= inj.end + 2 * HOUR


def score(result: Result, interval_minutes: int) -> dict[str, float]:
    opened = [(t, u, d) for t, u, d in result.alerts if d.kind == "opened"]
    regressions = [i for i in result.injections if i.alerting]
    true_alerts = [a for a in opened if any(_matches(i, *a) for i in regressions)]
    explained = [a[2] for a in true_alerts]
    big = [r for r in result.rows if r["injection"].alerting and abs(r["injection"].size) >= 0.15]
    caught, right_stage, staged, delays = 0, 0, 0, []
    for row in result.rows:
        inj = row["injection"]
        hits = sorted((a for a in opened if _matches(inj, *a)), key=lambda a: a[2].at)
        row["alerts"] = [a[2] for a in hits]
        if not inj.alerting or not hits:
            continue
        delay = max((hits[0][2].at - row["min_sample_at"]) / (interval_minutes * 60), 0.0)
        row["intervals_to_detect"] = delay
        if abs(inj.size) >= 0.15:
            caught += 1
            delays.append(delay)
        costs = [a[2] for a in hits if a[2].signal in ("unit_cost", "caption_cost")]
        if inj.stage and costs:
            staged += 1
            named = next((s["stage"] for s in costs[0].detail["stages"] if s["share"] > 0), None)
            row["stage_named"] = named
            right_stage += named == inj.stage
    small = [r for r in result.rows if r["injection"].alerting and abs(r["injection"].size) < 0.15]
    return {
        "alerts_opened": len(opened),
        "false_alerts": len(opened) - len(true_alerts),
        "precision": len(true_alerts) / len(opened) if opened else 1.0,
        "regressions_15pct": len(big),
        "recall_15pct": caught / len(big) if big else 1.0,
        "small_caught": sum(1 for r in small if r.get("alerts")),
        "small_total": len(small),
        "stage_first_right": right_stage / staged if staged else 1.0,
        "median_intervals_to_detect": float(np.median(delays)) if delays else float("nan"),
        "max_intervals_to_detect": float(max(delays)) if delays else float("nan"),
        "volume_changes_alerted": sum(
            1
            for r in result.rows
            if r["injection"].kind == "volume_double"
            and any(a not in explained for a in r.get("alerts", []))
        ),
    }

"""The evaluation harness: histories with known regressions, scored like an on-call would.

Each tenant × use case gets ``days`` of renders with daily seasonality in volume (and a
little in unit cost, through cache hit rates), per-render noise, and injected changes of
known start, size and stage. The detector runs every ``interval`` on what it would have
seen then. Renders are generated in the shape of ``render_rollup`` rows and go through the
same hourly aggregation, detector and tracker as the service; only PostgreSQL is left out.

Two populations: *busy* series (≈ 50–100 renders an hour, changes of a day or less) and
*low-volume* ones (10–100 renders a day, changes lasting days, as a small tenant's
configuration change does), each scored on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
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
LOW_KINDS: dict[str, tuple[Stage | None, int]] = {  # a small tenant's changes last days
    "unet_up": (Stage.UNET, 72),  # int8 off, UNet +44 %: the tenant
    "steps_doubled": (Stage.UNET, 72),
    "gpu_swap_big": (Stage.UNET, 72),
    "caption_cache_off": (Stage.CAPTION_LLM, 72),  # ≈ +17 %: below the 30 % mark
    "cheaper_unet_big": (Stage.UNET, 72),
    "provider_outage": (None, 48),  # 30 % of renders fail
    "volume_double": (None, 96),
}
# kind: (cost multiplier by stage, attribute changed); cache and failure kinds are apart.
EFFECTS: dict[str, tuple[dict[Stage, float], tuple[str, str] | None]] = {
    "int8_off": ({Stage.UNET: 1.39}, ("precision", "fp16")),
    "gpu_swap": (dict.fromkeys(GPU_STAGES, 1.22), ("gpu", "a100")),
    "cheaper_unet": ({Stage.UNET: 0.7}, None),
    "pipeline_small": ({Stage.UNET: 1.08}, ("pipeline", "2026.11")),
    "unet_up": ({Stage.UNET: 1.44}, ("precision", "fp16")),
    "steps_doubled": ({Stage.UNET: 1.8}, ("pipeline", "2026.12")),
    "gpu_swap_big": (dict.fromkeys(GPU_STAGES, 1.5), ("gpu", "l40s")),
    "cheaper_unet_big": ({Stage.UNET: 0.5}, None),
}
FAILING = {"failed_burst": 0.2, "provider_outage": 0.3}
SEASON_MEAN = 0.675  # of the volume's daily shape below


def _renders(
    rng: np.random.Generator,
    tenant: str,
    use_case: str,
    days: int,
    injections: list[Injection],
    per_day: float | None = None,
) -> pl.DataFrame:
    level = rng.uniform(70, 150) if per_day is None else per_day / 24 / SEASON_MEAN
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
    attributes = {
        "precision": np.full(n, "int8", dtype=object),
        "gpu": np.full(n, "h100", dtype=object),
        "pipeline": np.full(n, "2026.10", dtype=object),
    }
    for inj in injections:
        inside = (at >= inj.start) & (at < inj.end)
        if inj.kind == "embedding_cache_outage":
            embed_hit &= ~inside
        elif inj.kind == "caption_cache_off":
            caption_hit &= ~inside
        elif inj.kind in FAILING:
            fail_p[inside] = FAILING[inj.kind]
        elif inj.kind in EFFECTS:
            factors, changed = EFFECTS[inj.kind]
            for stage, factor in factors.items():
                mult[stage][inside] *= factor
            if changed:
                attributes[changed[0]][inside] = changed[1]
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
            "pipeline_version": attributes["pipeline"],
            "gpu_type": attributes["gpu"],
            "precision": attributes["precision"],
        }
    )
    return frame.with_columns(pl.sum_horizontal(STAGE_COLUMNS.values()).alias("total_nanos"))


def plan_injections(
    rng: np.random.Generator,
    tenants: int,
    days: int,
    kinds: dict[str, tuple[Stage | None, int]] = KINDS,
    slots: tuple[int, int] = (10, 2),  # first day, days between slots
) -> list[Injection]:
    """Each tenant gets every kind once, at random non-overlapping times after a warm-up."""
    out = []
    first, every = slots
    for t in range(tenants):
        tenant = f"tenant{t:02d}"
        days_free = rng.permutation(np.arange(first, days - 2 - (every - 2), every))[: len(kinds)]
        for kind, day in zip(rng.permutation(list(kinds)), sorted(days_free), strict=False):
            stage, hours = kinds[str(kind)]
            start = START + int(day) * DAY + int(rng.integers(0, 24)) * HOUR
            use_case = ("ecommerce", "social")[int(rng.integers(0, 2))]
            out.append(Injection(tenant, use_case, str(kind), start, start + hours * HOUR, stage))
    return out


def _size(frame: pl.DataFrame, inj: Injection, before_days: int) -> float:
    """The injected change as it landed: relative rise in cost per delivered render (or in
    the failed share, for failures), inside the window against the days before it."""

    def unit(lo: int, hi: int) -> tuple[float, float]:
        part = frame.filter(pl.col("rendered_at").dt.epoch("s").is_between(lo, hi, closed="left"))
        delivered = part["outcome"].to_numpy() == "delivered"
        totals = part["total_nanos"].to_numpy()
        mean = float(totals[delivered].mean()) if delivered.any() else 0.0
        return mean, float((~delivered).mean()) if len(delivered) else 0.0

    before, f0 = unit(inj.start - before_days * DAY, inj.start)
    after, f1 = unit(inj.start, inj.end)
    if inj.kind in FAILING:
        return f1 - f0
    return after / before - 1 if before else 0.0


@dataclass
class Result:
    injections: list[Injection]
    alerts: list[tuple[str, str, Decision]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Population:
    """Who is generated and how they are scored: ``big`` is the change recall counts."""

    name: str
    kinds: dict[str, tuple[Stage | None, int]]
    slots: tuple[int, int]
    per_day: tuple[float, float] | None  # renders a day, log-uniform; None: busy
    big: float
    before_days: int  # the change's size is measured against this many days before it


BUSY = Population("busy", KINDS, (10, 2), None, 0.15, 1)
LOW = Population("low", LOW_KINDS, (12, 6), (10.0, 100.0), 0.30, 7)


def evaluate(
    tenants: int = 6,
    days: int = 60,
    seed: int = 7,
    interval_minutes: int = 15,
    rule: Rule | None = None,
    population: Population = BUSY,
) -> Result:
    rule = rule or Rule()
    # The low-volume population draws from a stream of its own, so the busy one's histories
    # (and figures) are the same with or without it.
    rng = np.random.default_rng(seed if population is BUSY else [seed, 15])
    injections = plan_injections(rng, tenants, days, population.kinds, population.slots)
    result = Result([])
    times = np.arange(START + HOUR, START + days * DAY + 1, interval_minutes * 60, dtype=np.int64)
    sized: list[Injection] = []
    for t in range(tenants):
        for use_case in ("ecommerce", "social"):
            tenant = f"tenant{t:02d}"
            mine = [i for i in injections if (i.tenant, i.use_case) == (tenant, use_case)]
            per_day = None
            if population.per_day:
                per_day = float(np.exp(rng.uniform(*np.log(population.per_day))))
            frame = _renders(rng, tenant, use_case, days, mine, per_day)
            sized += [
                Injection(**{**i.__dict__, "size": _size(frame, i, population.before_days)})
                for i in mine
            ]
            hourly = hourly_frame(frame.lazy()).collect()
            series = Series(tenant, use_case, CURRENCY, to_renders(frame), to_hourly(hourly))
            m = measure(series, times, rule)
            open_alerts: dict[str, OpenAlert] = {}
            resolved: dict[str, int] = {}
            for i in range(len(times)):
                for d in decide(series, m, i, rule, open_alerts, resolved):
                    result.alerts.append((tenant, use_case, d))
            daily = float(series.renders.delivered.sum()) / days
            for inj in mine:
                after = series.renders.at[
                    (series.renders.at >= inj.start) & series.renders.delivered
                ]
                k = min(rule.min_renders - 1, len(after) - 1)
                first_enough = int(after[k]) if k >= 0 else inj.end
                if per_day is not None:
                    first_enough = inj.start  # no minimum sample: the clock starts at the change
                result.rows.append(
                    {"injection": inj, "min_sample_at": first_enough, "per_day": daily}
                )
    result.injections = sized
    by_key = {(i.tenant, i.use_case, i.kind, i.start): i for i in sized}
    for row in result.rows:
        inj = row["injection"]
        row["injection"] = by_key[(inj.tenant, inj.use_case, inj.kind, inj.start)]
    result.summary = score(result, interval_minutes, population.big)
    return result


def _matches(inj: Injection, tenant: str, use_case: str, d: Decision) -> bool:
    return (tenant, use_case) == (
        inj.tenant,
        inj.use_case,
    ) and inj.start <= d.at <= inj.end + 2 * HOUR


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def score(result: Result, interval_minutes: int, big: float = 0.15) -> dict[str, float]:
    """Precision over every alert opened; recall, time to detect and the stage named over
    changes of at least ``big``. *Since* is scored too: how far the alert's "since" is from
    the change's true start."""
    opened = [(t, u, d) for t, u, d in result.alerts if d.kind == "opened"]
    regressions = [i for i in result.injections if i.alerting]
    true_alerts = [a for a in opened if any(_matches(i, *a) for i in regressions)]
    explained = [a[2] for a in true_alerts]
    large = [r for r in result.rows if r["injection"].alerting and abs(r["injection"].size) >= big]
    caught, right_stage, staged, delays = 0, 0, 0, []
    hours: list[float] = []
    since_errors: list[float] = []
    within_day = dozens = 0
    for row in result.rows:
        inj = row["injection"]
        hits = sorted((a for a in opened if _matches(inj, *a)), key=lambda a: a[2].at)
        row["alerts"] = [a[2] for a in hits]
        if not inj.alerting or not hits:
            continue
        first = hits[0][2]
        delay = max((first.at - row["min_sample_at"]) / (interval_minutes * 60), 0.0)
        row["intervals_to_detect"] = delay
        row["hours_to_detect"] = (first.at - inj.start) / HOUR
        if abs(inj.size) >= big:
            caught += 1
            delays.append(delay)
            hours.append(row["hours_to_detect"])
            since = datetime.fromisoformat(first.detail["since"]).timestamp()
            since_errors.append(abs(since - inj.start) / 60)
        costs = [a[2] for a in hits if a[2].signal in ("unit_cost", "caption_cost")]
        if inj.stage and costs:
            staged += 1
            named = next((s["stage"] for s in costs[0].detail["stages"] if s["share"] > 0), None)
            row["stage_named"] = named
            right_stage += named == inj.stage
    for row in large:  # "a few dozen a day": alerted within a day of the change
        if row["per_day"] >= 24:
            dozens += 1
            within_day += row.get("hours_to_detect", float("inf")) <= 24
    small = [r for r in result.rows if r["injection"].alerting and abs(r["injection"].size) < big]
    recall = caught / len(large) if large else 1.0
    return {
        "alerts_opened": len(opened),
        "false_alerts": len(opened) - len(true_alerts),
        "precision": len(true_alerts) / len(opened) if opened else 1.0,
        "big": big,
        "regressions_big": len(large),
        "recall_big": recall,
        "regressions_15pct": len(large),  # the busy population's names (big = 0.15)
        "recall_15pct": recall,
        "small_caught": sum(1 for r in small if r.get("alerts")),
        "small_total": len(small),
        "stage_first_right": right_stage / staged if staged else 1.0,
        "median_intervals_to_detect": _median(delays),
        "max_intervals_to_detect": float(max(delays)) if delays else float("nan"),
        "median_hours_to_detect": _median(hours),
        "max_hours_to_detect": float(max(hours)) if hours else float("nan"),
        "within_day_dozens": within_day / dozens if dozens else 1.0,  # ≥ 24 renders a day
        "median_since_error_minutes": _median(since_errors),
        "volume_changes_alerted": sum(
            1
            for r in result.rows
            if r["injection"].kind == "volume_double"
            and any(a not in explained for a in r.get("alerts", []))
        ),
    }

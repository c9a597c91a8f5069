"""Plausible event histories for the demo and the benchmarks, reproducible from a seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID, uuid4

from ledger.events import Cache, CostEvent, Outcome, Stage

TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
USE_CASES = ("ecommerce", "social", "game_assets", "architecture")
GPUS = ("h100", "a100", "rtx4090")


def _uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def _q(value: float, places: int = 6) -> Decimal:
    return Decimal(f"{value:.{places}f}")


def _event(
    rng: random.Random, common: dict[str, Any], stage: Stage, sku: str, qty: Decimal, **extra: Any
) -> CostEvent:
    fields = {"event_id": _uuid(rng), "stage": stage, "sku": sku, "quantity": qty}
    return CostEvent.model_validate({**common, **fields, **extra})


def sample_events(
    renders: int, *, seed: int = 7, start: datetime | None = None, span: timedelta | None = None
) -> Iterator[CostEvent]:
    """About nine events per render: every stage of an SDXL-like render on a GPU.

    The same seed gives the same event_ids, so ingesting a sample twice stores it once.
    """
    rng = random.Random(seed)  # noqa: S311  # reproducible demo data, not secrets
    start = start or datetime(2026, 10, 1, tzinfo=UTC)
    span = span or timedelta(days=30)
    for _ in range(renders):
        tenant = rng.choice(TENANTS)
        use_case = rng.choice(USE_CASES)
        gpu = rng.choices(GPUS, weights=(5, 3, 2))[0]
        render_id = _uuid(rng)
        at = start + timedelta(seconds=rng.uniform(0, span.total_seconds()))
        failed = rng.random() < 0.03
        hit = rng.random() < 0.8
        attrs = {"model": "sdxl-1.0", "gpu_type": gpu, "steps": 25, "width": 1024, "height": 1024}
        yield from _render(rng, tenant, use_case, render_id, at, attrs, failed=failed, hit=hit)


def _render(
    rng: random.Random,
    tenant: str,
    use_case: str,
    render_id: UUID,
    at: datetime,
    attrs: dict[str, Any],
    *,
    failed: bool,
    hit: bool,
    unet_factor: float = 1.0,
) -> Iterator[CostEvent]:
    # The order of the rng calls is what keeps a seed's event_ids: do not reorder.
    gpu = attrs["gpu_type"]
    common = {
        "tenant_id": tenant,
        "use_case": use_case,
        "render_id": render_id,
        "occurred_at": at,
        "attributes": attrs,
    }
    event = partial(_event, rng, common)
    encoder = _q(rng.uniform(0.015, 0.03))
    yield event(
        Stage.TEXT_ENCODER,
        f"gpu.{gpu}.second",
        Decimal(0) if hit else encoder,
        cache=Cache.HIT if hit else Cache.MISS,
        baseline_quantity=encoder,
    )
    yield event(Stage.CAPTION_LLM, "llm.gpt-4o-mini.input_token", Decimal(rng.randint(40, 90)))
    yield event(Stage.CAPTION_LLM, "llm.gpt-4o-mini.output_token", Decimal(rng.randint(60, 160)))
    unet = _q(max(0.5, rng.gauss(2.6, 0.2)) * unet_factor)
    yield event(Stage.UNET, f"gpu.{gpu}.second", unet)
    if not failed:
        yield event(Stage.VAE_DECODE, f"gpu.{gpu}.second", _q(rng.uniform(0.12, 0.2)))
        yield event(Stage.POSTPROCESS, "image.transform", Decimal(1))
        yield event(Stage.STORAGE, "s3.put_request", Decimal(1))
        yield event(Stage.STORAGE, "s3.standard.gb_month", _q(rng.uniform(0.0009, 0.0016), 9))
    unet_s = float(unet)
    yield event(
        Stage.RENDER,
        "render.image",
        Decimal(1),
        outcome=Outcome.FAILED if failed else Outcome.DELIVERED,
        attributes={**attrs, "latency_ms": round(unet_s * 1000 + 450, 1)},
    )


REGRESSION_SERIES = ("acme", "architecture")  # a series the demo's real renders leave alone


def regression_events(now: datetime) -> Iterator[CostEvent]:
    """One series the alert detector can judge at ``now``, and that regressed.

    The detector wants a baseline of at least 14 hours with 5 delivered renders at the same
    hour of day (±1 h) on earlier days, and 100 delivered renders in the last 6 hours. This
    gives it 7 days × 8 hours (from 3 hours before ``now``'s hour to 4 after, so a later
    ``alerts run`` still finds its baseline) of 8 int8 renders, 32 more today before the
    change, then 120 in the two hours before ``now``'s hour whose UNet runs in fp16 and
    costs 39 % more. Ids and times hang on the hour, so a rerun within it adds nothing.
    """
    tenant, use_case = REGRESSION_SERIES
    anchor = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(f"regression {tenant}/{use_case} {anchor.isoformat()}")  # noqa: S311

    def stretch(
        start: datetime, hours: int, n: int, precision: str, factor: float
    ) -> Iterator[CostEvent]:
        for i in range(n):
            at = start + timedelta(seconds=rng.uniform(0, hours * 3600 - 1))
            attrs = {"model": "sdxl-1.0", "gpu_type": "h100", "precision": precision}
            # Exactly 4 in 5 hit the cache in every stretch: a random draw per render moved
            # the recent hit rate by chance with the hour of the run, and opened a second
            # alert (cache hit rate) beside the regression the demo shows, in some hours.
            hit = i % 5 != 4
            render = _uuid(rng)
            yield from _render(
                rng, tenant, use_case, render, at, attrs, failed=False, hit=hit, unet_factor=factor
            )

    for day in range(7, 0, -1):
        for hour in range(-3, 5):
            start = anchor - timedelta(days=day, hours=-hour)
            yield from stretch(start, 1, 8, "int8", 1.0)
    yield from stretch(anchor - timedelta(hours=6), 4, 32, "int8", 1.0)
    yield from stretch(anchor - timedelta(hours=2), 2, 120, "fp16", 1.39)


def unet_event(tenant: str, render: UUID | None = None, **overrides: Any) -> CostEvent:
    """One H100 UNet event with plain defaults, for tests and scripts to override."""
    fields: dict[str, Any] = {
        "event_id": uuid4(),
        "tenant_id": tenant,
        "use_case": "social",
        "render_id": render or uuid4(),
        "stage": "unet",
        "sku": "gpu.h100.second",
        "quantity": Decimal(1),
        "occurred_at": datetime(2026, 10, 15, 12, tzinfo=UTC),
    }
    return CostEvent.model_validate(fields | overrides)


def pooled_events(
    start: datetime,
    hours: int,
    gpus: int,
    utilisation: float,
    pool: str,
    *,
    seed: int = 11,
) -> Iterator[CostEvent]:
    """Renders on a pool's H100s that keep it about ``utilisation`` busy for ``hours``.

    Each render's GPU events name the pool (attribute ``pool``), so the allocation job can
    set their busy GPU-seconds against the capacity held; the same seed gives the same ids.
    """
    rng = random.Random(f"pooled {pool} {start.isoformat()} {seed}")  # noqa: S311
    target = hours * 3600 * gpus * utilisation
    busy = 0.0
    while busy < target:
        at = start + timedelta(seconds=rng.uniform(0, hours * 3600 - 1))
        attrs = {"model": "sdxl-1.0", "gpu_type": "h100", "pool": pool}
        tenant, use_case = rng.choice(TENANTS[:3]), rng.choice(USE_CASES[:2])
        for event in _render(rng, tenant, use_case, _uuid(rng), at, attrs, failed=False, hit=True):
            if event.sku.startswith("gpu."):
                busy += float(event.quantity)
            yield event

"""A render, stage by stage, and the priced cost events it leaves behind.

Every image is its own render. Work done once for a batch (caption, prompt encoding,
denoising, decoding) is shared evenly between its renders; post-processing and storage
are measured per image. A stage that raises still leaves the events of the stages that
ran, then a ``failed`` outcome: that money was spent and nothing was delivered.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import torch

from ingest.client import Emitter
from ledger.events import Cache, CostEvent, Outcome, Stage
from render.caches import CachedEmbedding, CacheStore
from render.caption import CaptionClient, Rewrite
from render.heartbeat import Heartbeat
from render.meters import PipelineMeter, StageTimes
from render.postprocess import postprocess
from render.presets import Built
from render.storage import ImageStore

GPU_SKUS = {"H100": "gpu.h100.second", "A100": "gpu.a100.second", "4090": "gpu.rtx4090.second"}
_NANO = Decimal("1e-9")


def compute_sku(device: torch.device, override: str | None = None) -> tuple[str, Decimal, str]:
    """(SKU, units per wall second, hardware name) for the device the pipeline runs on.

    A CPU render reserves every thread torch uses, so it is metered in vCPU-seconds:
    wall seconds times threads, as cloud CPUs are billed whether busy or not.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        sku = override or next((s for key, s in GPU_SKUS.items() if key in name), None)
        if sku is None:
            raise ValueError(
                f"no SKU known for GPU {name!r}; pass --gpu-sku (e.g. gpu.a100.second)"
            )
        return sku, Decimal(1), name
    return override or "cpu.vcpu.second", Decimal(torch.get_num_threads()), "cpu"


def _qty(value: float | Decimal) -> Decimal:
    return Decimal(value).quantize(_NANO) if value > 0 else Decimal(0)


@dataclass(frozen=True)
class RenderRequest:
    tenant: str
    use_case: str
    prompt: str
    n: int = 1
    steps: int = 25
    width: int = 64
    height: int = 64
    guidance: float = 5.0
    batch_size: int = 1
    negative_prompt: str = ""
    seed: int | None = None
    image_format: str = "webp"


@dataclass
class RenderResult:
    render_id: UUID
    outcome: Outcome
    events: list[CostEvent] = field(default_factory=list)
    uri: str | None = None
    error: str | None = None
    latency_s: float = 0.0

    @property
    def metered_seconds(self) -> Decimal:
        """Wall seconds the stage events account for (before the vCPU multiplier)."""
        return sum((Decimal(str(e.attributes.get("wall_s", 0))) for e in self.events), Decimal(0))


@dataclass
class _Trace:
    """One render's events under construction."""

    request: RenderRequest
    render_id: UUID
    attributes: dict[str, Any]
    events: list[CostEvent] = field(default_factory=list)

    def add(
        self,
        stage: Stage,
        sku: str,
        quantity: Decimal,
        *,
        wall_s: float | None = None,
        cache: Cache | None = None,
        baseline: Decimal | None = None,
        outcome: Outcome | None = None,
        **extra: Any,
    ) -> None:
        attrs = dict(self.attributes, **extra)
        if wall_s is not None:
            attrs["wall_s"] = round(wall_s, 9)
        self.events.append(
            CostEvent(
                event_id=uuid4(),
                tenant_id=self.request.tenant,
                use_case=self.request.use_case,
                render_id=self.render_id,
                stage=stage,
                sku=sku,
                quantity=quantity,
                occurred_at=datetime.now(UTC),
                cache=cache,
                baseline_quantity=baseline,
                outcome=outcome,
                attributes=attrs,
            )
        )


class Renderer:
    def __init__(
        self,
        built: Built,
        emitter: Emitter,
        *,
        captions: CaptionClient,
        cache: CacheStore | None = None,
        store: ImageStore | None = None,
        gpu_sku: str | None = None,
        storage_months: Decimal = Decimal(1),
        precision: str = "fp32",
        pool: str | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.built = built
        self.emitter = emitter
        self.captions = captions
        self.cache = cache
        self.store = store
        self.sku, self.units_per_second, self.hardware = compute_sku(built.device, gpu_sku)
        self.storage_months = storage_months
        self.precision = precision
        # The GPU pool this worker holds: every event names it, so busy GPU-seconds are the
        # pool's; the heartbeat (started by whoever built it) records the time held.
        self.pool = pool if pool is not None else (heartbeat.pool if heartbeat else None)
        if heartbeat is not None and heartbeat.pool != self.pool:
            raise ValueError(f"the heartbeat is for pool {heartbeat.pool!r}, not {self.pool!r}")
        self.heartbeat = heartbeat
        self.meter = PipelineMeter(built.pipe, built.device)
        self.is_xl = "XL" in type(built.pipe).__name__
        self.can_cache_embeddings = hasattr(built.pipe, "encode_prompt")

    def close(self, timeout_s: float = 5.0) -> int:
        """Stop the heartbeat (a final beat up to now), then the emitter; how many event
        batches remain spooled."""
        if self.heartbeat is not None:
            self.heartbeat.close()
        return self.emitter.close(timeout_s)

    def render(self, request: RenderRequest, on_done: Any = None) -> list[RenderResult]:
        if request.n < 1 or request.batch_size < 1:
            raise ValueError("n and batch_size must be at least 1")
        results: list[RenderResult] = []
        for start in range(0, request.n, request.batch_size):
            batch = self._render_batch(request, min(request.batch_size, request.n - start))
            results.extend(batch)
            if on_done:
                on_done(len(batch))
        return results

    # -- one batch --------------------------------------------------------------------

    def _render_batch(self, req: RenderRequest, k: int) -> list[RenderResult]:
        attrs = {
            "model": self.built.model_id,
            "precision": self.precision,
            "steps": req.steps,
            "width": req.width,
            "height": req.height,
            "batch_size": k,
            "gpu_type": self.hardware,
            "pipeline": type(self.built.pipe).__name__,
            "pipeline_version": "renderledger-0.1",
        }
        if self.pool:
            attrs["pool"] = self.pool
        traces = [_Trace(req, uuid4(), attrs) for _ in range(k)]
        results = [RenderResult(t.render_id, Outcome.FAILED) for t in traces]
        started = time.perf_counter()
        try:
            rewrite = self._caption(req, traces, k)
            embeds = self._encode(req, rewrite.text, traces, k)
            images = self._generate(req, embeds, traces, k)
            for trace, result, image in zip(traces, results, images, strict=True):
                result.uri = self._finish(req, trace, image)
                result.outcome = Outcome.DELIVERED
        except Exception as exc:
            for result in results:
                if result.outcome is not Outcome.DELIVERED:
                    result.error = f"{type(exc).__name__}: {exc}"
        latency = time.perf_counter() - started
        for trace, result in zip(traces, results, strict=True):
            error: dict[str, Any] = {"error": result.error[:500]} if result.error else {}
            trace.add(
                Stage.RENDER,
                "render.image",
                Decimal(1),
                outcome=result.outcome,
                latency_ms=round(latency * 1000, 3),
                **error,
            )
            result.events, result.latency_s = trace.events, latency
        # Durable before the render is reported done; delivered now or by the retry thread.
        self.emitter.emit([e for t in traces for e in t.events])
        return results

    def _caption(self, req: RenderRequest, traces: list[_Trace], k: int) -> Rewrite:
        t0 = time.perf_counter()
        rewrite = self.captions.rewrite(req.prompt)
        wall = (time.perf_counter() - t0) / k
        cache = Cache.HIT if rewrite.cached else Cache.MISS
        for trace in traces:
            for kind, tokens in (
                ("input", rewrite.input_tokens),
                ("output", rewrite.output_tokens),
            ):
                share = Decimal(tokens) / k
                trace.add(
                    Stage.CAPTION_LLM,
                    f"{rewrite.sku_prefix}.{kind}_token",
                    Decimal(0) if rewrite.cached else share,
                    wall_s=wall if kind == "input" else 0,
                    cache=cache,
                    baseline=share,
                    provider=rewrite.provider,
                )
        return rewrite

    def _encode(
        self, req: RenderRequest, prompt: str, traces: list[_Trace], k: int
    ) -> dict[str, Any]:
        if not self.can_cache_embeddings:
            return {"prompt": prompt, "negative_prompt": req.negative_prompt or None}
        key = hashlib.sha256(
            f"{self.built.model_id}\0{self.precision}\0{req.guidance > 1}\0{prompt}\0"
            f"{req.negative_prompt}".encode()
        ).digest()
        hit = self.cache.embedding(key) if self.cache else None
        t0 = time.perf_counter()
        with self.meter.encoding():
            if hit is not None:
                tensors = torch.load(io.BytesIO(hit.tensors), weights_only=True)
                tensors = [t.to(self.built.device, self.built.dtype) for t in tensors]
            else:
                with torch.inference_mode():
                    tensors = list(self._encode_prompt(prompt, req))
        wall = time.perf_counter() - t0
        miss_units = hit.miss_seconds if hit else _qty(wall) * self.units_per_second
        if hit is None and self.cache is not None:
            buffer = io.BytesIO()
            torch.save([t.detach().cpu() for t in tensors], buffer)
            self.cache.put_embedding(
                key, self.built.model_id, CachedEmbedding(buffer.getvalue(), miss_units)
            )
        for trace in traces:
            trace.add(
                Stage.TEXT_ENCODER,
                self.sku,
                _qty(wall / k) * self.units_per_second if hit is None else Decimal(0),
                wall_s=wall / k,
                cache=Cache.HIT if hit else Cache.MISS,
                baseline=_qty(miss_units / k),
            )
        names = ["prompt_embeds", "negative_prompt_embeds"]
        if self.is_xl:
            names += ["pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
        return {n: t for n, t in zip(names, tensors, strict=False) if t is not None}

    def _encode_prompt(self, prompt: str, req: RenderRequest) -> tuple[Any, ...]:
        pipe, device = self.built.pipe, self.built.device
        cfg = req.guidance > 1
        neg = req.negative_prompt or None
        if self.is_xl:
            return tuple(
                pipe.encode_prompt(
                    prompt=prompt,
                    device=device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=cfg,
                    negative_prompt=neg,
                )
            )
        return tuple(pipe.encode_prompt(prompt, device, 1, cfg, negative_prompt=neg))

    def _generate(
        self, req: RenderRequest, embeds: dict[str, Any], traces: list[_Trace], k: int
    ) -> list[Any]:
        generator = None
        if req.seed is not None:
            generator = torch.Generator(device=self.built.device).manual_seed(req.seed)
        times = StageTimes()
        try:
            with torch.inference_mode(), self.meter.generating() as times:
                out = self.built.pipe(
                    **embeds,
                    num_images_per_prompt=k,
                    num_inference_steps=req.steps,
                    height=req.height,
                    width=req.width,
                    guidance_scale=req.guidance,
                    generator=generator,
                    output_type="pil",
                )
        finally:
            for stage, wall in ((Stage.UNET, times.unet), (Stage.VAE_DECODE, times.vae_decode)):
                if wall > 0:
                    for trace in traces:
                        trace.add(
                            stage,
                            self.sku,
                            _qty(wall / k) * self.units_per_second,
                            wall_s=wall / k,
                            unet_steps=times.unet_steps,
                        )
        return list(out.images)

    def _finish(self, req: RenderRequest, trace: _Trace, image: Any) -> str | None:
        t0 = time.perf_counter()
        encoded = postprocess(image, fmt=req.image_format)
        wall = time.perf_counter() - t0
        # PIL post-processing runs on one thread: one vCPU for its wall time.
        trace.add(
            Stage.POSTPROCESS,
            "cpu.vcpu.second",
            _qty(wall),
            wall_s=wall,
            output_format=encoded.extension,
            output_bytes=len(encoded.data),
        )
        if self.store is None:
            return None
        t0 = time.perf_counter()
        stored = self.store.put(req.tenant, trace.render_id, encoded)
        wall = time.perf_counter() - t0
        # A local folder makes no request (render.storage.LocalStore): no PUT is billed, and
        # the write's wall time goes on the GB-month event instead.
        if stored.put_requests:
            trace.add(
                Stage.STORAGE,
                "s3.put_request",
                Decimal(stored.put_requests),
                wall_s=wall,
                uri=stored.uri,
            )
        gb_months = Decimal(stored.bytes) / Decimal(10**9) * self.storage_months
        trace.add(
            Stage.STORAGE,
            "s3.standard.gb_month",
            gb_months.quantize(Decimal("1e-12")),
            wall_s=None if stored.put_requests else wall,
            bytes=stored.bytes,
            months=str(self.storage_months),
            uri=stored.uri,
        )
        return stored.uri

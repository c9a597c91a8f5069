"""The bundled renderer on the CPU with the tiny preset: real diffusers modules, real ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import torch

from ingest.client import DeliveryFailed, Emitter, HttpTransport, LedgerTransport, Spool
from ledger.events import CostEvent
from ledger.journal import read_render
from ledger.store import Ledger
from render.caches import CacheStore
from render.caption import CaptionClient
from render.presets import Built, build
from render.renderer import Renderer, RenderRequest
from render.storage import LocalStore
from tests.conftest import free_port

STAGES = {"caption_llm", "text_encoder", "unet", "vae_decode", "postprocess", "storage", "render"}


@pytest.fixture(scope="module")
def tiny() -> Built:
    return build("tiny")


@pytest.fixture
def renderer(tiny: Built, ledger: Ledger, tmp_path: Path) -> Iterator[Renderer]:
    cache = CacheStore(ledger.engine)
    r = Renderer(
        tiny,
        Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
        captions=CaptionClient([], cache),
        cache=cache,
        store=LocalStore(tmp_path / "out"),
    )
    yield r
    r.emitter.close()


def _request(tenant: str, **kw: Any) -> RenderRequest:
    fields: dict[str, Any] = {"steps": 4, "prompt": f"white sneaker {uuid.uuid4()}"} | kw
    return RenderRequest(tenant, "ecommerce", **fields)


def test_a_render_yields_an_image_and_a_complete_priced_event_set(
    renderer: Renderer, ledger: Ledger, tenant: str, tmp_path: Path
) -> None:
    (result,) = renderer.render(_request(tenant))
    assert result.outcome.value == "delivered", result.error
    assert result.uri is not None
    assert Path(result.uri).read_bytes()[:4] == b"RIFF"  # a WebP file
    stored = read_render(ledger.engine, result.render_id)
    assert {e.stage for e in stored} == STAGES
    assert len(stored) == len(result.events)
    for e in stored:
        worked = e.stage not in ("render",) and not e.sku.startswith("llm.offline")
        if worked:
            assert e.quantity > 0, (e.stage, e.sku)
            assert e.cost_nanos > 0, (e.stage, e.sku)
    unet = next(e for e in stored if e.stage == "unet")
    assert unet.sku == "cpu.vcpu.second"
    assert unet.attributes["unet_steps"] == 4  # cond and uncond share one batched call per step
    assert next(e for e in stored if e.stage == "render").outcome == "delivered"


def test_stages_cover_the_render_wall_time(renderer: Renderer, tenant: str) -> None:
    results = renderer.render(_request(tenant, n=2, batch_size=2, steps=6))
    metered = sum((r.metered_seconds for r in results), Decimal(0))
    wall = Decimal(str(results[0].latency_s))
    assert metered >= Decimal("0.95") * wall, (metered, wall)
    assert metered <= Decimal("1.01") * wall
    assert len({r.render_id for r in results}) == 2


def test_the_second_render_of_a_prompt_hits_both_caches(
    renderer: Renderer, ledger: Ledger, tenant: str
) -> None:
    request = _request(tenant)
    (first,) = renderer.render(request)
    (second,) = renderer.render(request)

    def stage(events: list[CostEvent], name: str) -> CostEvent:
        return next(e for e in events if e.stage == name)

    miss, hit = stage(first.events, "text_encoder"), stage(second.events, "text_encoder")
    assert (miss.cache, hit.cache) == ("miss", "hit")
    assert hit.quantity == 0
    assert hit.baseline_quantity == miss.quantity > 0
    caption = [e for e in second.events if e.stage == "caption_llm"]
    assert {e.cache for e in caption} == {"hit"}
    assert all(e.quantity == 0 and e.baseline_quantity for e in caption)
    stored = {e.event_id: e for e in read_render(ledger.engine, second.render_id)}
    stored_hit = stored[hit.event_id]
    assert stored_hit.cost_nanos == 0
    assert stored_hit.baseline_cost_nanos is not None
    assert stored_hit.baseline_cost_nanos > 0


def test_a_failing_vae_leaves_failed_with_the_costs_already_spent(
    renderer: Renderer, tiny: Built, ledger: Ledger, tenant: str
) -> None:
    def explode(*_: Any) -> None:
        raise RuntimeError("VAE out of memory")

    handle = tiny.pipe.vae.decoder.register_forward_pre_hook(explode)
    try:
        (result,) = renderer.render(_request(tenant))
    finally:
        handle.remove()
    assert result.outcome.value == "failed"
    assert result.error is not None
    assert "VAE out of memory" in result.error
    stored = read_render(ledger.engine, result.render_id)
    # The VAE started (and failed): its time until the failure is metered too.
    expected = {"caption_llm", "text_encoder", "unet", "vae_decode", "render"}
    assert {e.stage for e in stored} == expected
    assert next(e for e in stored if e.stage == "unet").cost_nanos > 0
    outcome = next(e for e in stored if e.stage == "render")
    assert outcome.outcome == "failed"
    assert "VAE out of memory" in outcome.attributes["error"]


def test_with_the_ledger_down_renders_complete_and_events_arrive_once_later(
    tiny: Built, ledger: Ledger, tenant: str, tmp_path: Path, api_base: str
) -> None:
    from service.keys import create_key

    key = create_key(ledger.engine, tenant, ["ingest"])
    down = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout_s=0.5)
    with pytest.raises(DeliveryFailed):
        down.send([])
    spool = Spool(tmp_path / "spool")
    emitter = Emitter(down, spool, max_backoff_s=0.2)
    r = Renderer(tiny, emitter, captions=CaptionClient([]), store=LocalStore(tmp_path / "out"))
    results = r.render(_request(tenant, n=3))
    assert all(x.outcome.value == "delivered" for x in results)
    assert emitter.close(timeout_s=2) == 3  # three batches wait on disk
    for x in results:
        assert read_render(ledger.engine, x.render_id) == []
    up = HttpTransport(api_base, api_key=key)
    assert spool.flush(up) == (3, 0)
    # A crash after delivery but before the spool file was removed means a resend:
    spool.write(results[0].events)
    assert spool.flush(up) == (1, 0)
    for x in results:
        stored = read_render(ledger.engine, x.render_id)
        assert sorted(e.event_id for e in stored) == sorted(e.event_id for e in x.events)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="gpu: needs CUDA")
def test_gpu_render_is_metered_with_cuda_events(
    ledger: Ledger, tenant: str, tmp_path: Path
) -> None:
    built = build("tiny", device="cuda")
    r = Renderer(
        built,
        Emitter(LedgerTransport(ledger), Spool(tmp_path / "spool")),
        captions=CaptionClient([]),
        gpu_sku="gpu.h100.second",
    )
    (result,) = r.render(_request(tenant))
    assert result.outcome.value == "delivered"
    assert next(e for e in result.events if e.stage == "unet").sku == "gpu.h100.second"

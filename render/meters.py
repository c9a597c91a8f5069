"""Stage meters that plug into any diffusers pipeline through module hooks, without forking it.

A render's wall time is cut at stage boundaries, so the stages cover it by construction:
``text_encoder`` is the prompt encoding (or the cache lookup that replaced it), ``unet``
runs from the pipeline call to the first VAE decoder call and so includes the scheduler's
work between steps, and ``vae_decode`` runs from there until the pipeline returns, image
post-conversion included. On CUDA the marks are CUDA events, synchronized once per render;
on a CPU they are readings of a monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Clock:
    """Named instants; on CUDA recorded in-stream so no mark forces a synchronize."""

    device: torch.device
    _marks: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def mark(self, name: str) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks[name] = event
        else:
            self._marks[name] = time.perf_counter()

    def has(self, name: str) -> bool:
        return name in self._marks

    def seconds(self, start: str, end: str) -> float:
        a, b = self._marks[start], self._marks[end]
        if self.cuda:
            return float(a.elapsed_time(b)) / 1000.0
        return float(b - a)

    def settle(self) -> None:
        """The one synchronize per render, after which every CUDA event can be read."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


@dataclass
class StageTimes:
    text_encoder: float = 0.0
    unet: float = 0.0
    vae_decode: float = 0.0
    unet_steps: int = 0

    @property
    def total(self) -> float:
        return self.text_encoder + self.unet + self.vae_decode


def _vae_entry(pipe: Any) -> torch.nn.Module:
    vae = pipe.vae
    return vae.post_quant_conv if getattr(vae, "post_quant_conv", None) is not None else vae.decoder


@dataclass
class PipelineMeter:
    """Hooks on the UNet and the VAE decoder of one pipeline; reusable across renders."""

    pipe: Any
    device: torch.device
    clock: Clock = field(init=False)
    steps: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.clock = Clock(self.device)

    def _on_unet(self, _module: torch.nn.Module, _args: Any) -> None:
        self.steps += 1

    def _on_vae(self, _module: torch.nn.Module, _args: Any) -> None:
        if not self.clock.has("vae"):
            self.clock.mark("vae")

    @contextmanager
    def encoding(self) -> Iterator[None]:
        """Wrap the prompt encoding (or the cache lookup standing in for it)."""
        self.clock.mark("encode")
        yield
        self.clock.mark("denoise")

    @contextmanager
    def generating(self) -> Iterator[StageTimes]:
        """Wrap the pipeline call; the yielded times are filled in when the block exits."""
        times = StageTimes()
        self.steps = 0
        handles = [
            self.pipe.unet.register_forward_pre_hook(self._on_unet),
            _vae_entry(self.pipe).register_forward_pre_hook(self._on_vae),
        ]
        if not self.clock.has("denoise"):
            self.clock.mark("encode")
            self.clock.mark("denoise")
        try:
            yield times
        finally:
            # Also when the pipeline raised: time spent before the failure was spent.
            self.clock.mark("end")
            if not self.clock.has("vae"):
                self.clock.mark("vae")  # failed in the UNet, or output_type="latent"
            self.clock.settle()
            times.text_encoder = self.clock.seconds("encode", "denoise")
            times.unet = self.clock.seconds("denoise", "vae")
            times.vae_decode = self.clock.seconds("vae", "end")
            times.unet_steps = self.steps
            for handle in handles:
                handle.remove()
            self.clock = Clock(self.device)

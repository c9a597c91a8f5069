"""Metering overhead and stage coverage of the renderer, measured side by side.

The same prompt encoding and pipeline call, with the stage meters' hooks and marks and
without, interleaved pair by pair so drift on a shared machine hits both alike; then the
full metered render (caption, encode, UNet, VAE, post-processing, storage) compared with
its own wall time. ``tiny`` preset, 25 steps, CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path
from typing import Any

import torch

from bench.report import write_section
from ingest.client import Spool
from render.caption import CaptionClient
from render.meters import PipelineMeter
from render.presets import Built, build
from render.renderer import Renderer, RenderRequest
from render.storage import LocalStore

PROMPT = "white sneaker on a beach, product photo"


class NullTransport:
    """Delivery is not what is measured here: events are spooled and dropped."""

    def send(self, events: Any) -> None:
        return None


def _render(built: Built, steps: int, size: int, meter: PipelineMeter | None) -> float:
    """One prompt encoding and pipeline call, metered or not; wall seconds."""
    pipe = built.pipe
    start = time.perf_counter()
    with torch.inference_mode():
        with meter.encoding() if meter else nullcontext():
            embeds, negative = pipe.encode_prompt(PROMPT, built.device, 1, True)
        with meter.generating() if meter else nullcontext():
            pipe(
                prompt_embeds=embeds,
                negative_prompt_embeds=negative,
                num_inference_steps=steps,
                height=size,
                width=size,
                output_type="pil",
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    built = build("tiny", device="cpu")
    meter = PipelineMeter(built.pipe, built.device)
    size = 64
    for _ in range(3):  # warm up allocator and kernels
        _render(built, args.steps, size, None)
        _render(built, args.steps, size, meter)
    plain, metered = [], []
    print(f"{args.pairs} interleaved pairs…", file=sys.stderr)
    for i in range(args.pairs):
        for m in (None, meter) if i % 2 == 0 else (meter, None):
            (metered if m else plain).append(_render(built, args.steps, size, m))
    overhead = statistics.median(m - p for m, p in zip(metered, plain, strict=True))
    base = statistics.median(plain)

    with tempfile.TemporaryDirectory() as tmp:
        renderer = Renderer(
            built,
            _emitter(Path(tmp)),
            captions=CaptionClient([]),
            store=LocalStore(Path(tmp) / "out"),
        )
        coverage = []
        for _ in range(10):
            (r,) = renderer.render(RenderRequest("bench", "ecommerce", PROMPT, steps=args.steps))
            coverage.append(r.metered_seconds / Decimal(str(r.latency_s)))
    cov = statistics.median(coverage)
    table = "\n".join(
        [
            "| measure | value | target |",
            "|---|---:|---:|",
            f"| render without meters (median of {args.pairs}) | {base * 1000:.1f} ms | |",
            f"| with meters (median) | {statistics.median(metered) * 1000:.1f} ms | |",
            f"| overhead, median of paired differences | {overhead * 1000:+.2f} ms "
            f"({overhead / base * 100:+.2f} %) | ≤ 1 % |",
            f"| metered stage time / render wall time (median of 10 full renders) "
            f"| {cov * 100:.2f} % | ≥ 99 % |",
        ]
    )
    print(table)
    if args.write:
        body = (
            "## Renderer metering overhead and coverage (issue 3)\n\n"
            f"`tiny` preset, {args.steps} steps, 64×64, CPU ({torch.get_num_threads()} torch "
            "threads). Paired runs of the same prompt encoding + pipeline call with and without "
            "the stage meters, interleaved (order alternating); coverage over full renders "
            "(caption, encode, UNet, VAE, post-processing, local storage).\n\n" + table
        )
        write_section(args.write, "render", body, "make bench")


def _emitter(tmp: Path) -> Any:
    from ingest.client import Emitter

    return Emitter(NullTransport(), Spool(tmp / "spool"))


if __name__ == "__main__":
    main()

"""Per-stage seconds of the ``sdxl`` preset at 1024x1024, 25 steps, on a GPU when there is one."""

from __future__ import annotations

import argparse
import sys

import torch

from render.meters import PipelineMeter
from render.presets import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the sdxl stage timing needs a GPU; nothing measured")
        return
    built = build("sdxl", precision=args.precision, device="cuda")
    meter = PipelineMeter(built.pipe, built.device)
    print(f"GPU: {torch.cuda.get_device_name()}  sdxl {args.size}x{args.size} {args.steps} steps")
    for run in range(args.runs + 1):
        with torch.inference_mode():
            with meter.encoding():
                embeds = built.pipe.encode_prompt(prompt="a red bicycle", device=built.device)
            names = (
                "prompt_embeds",
                "negative_prompt_embeds",
                "pooled_prompt_embeds",
                "negative_pooled_prompt_embeds",
            )
            with meter.generating() as times:
                built.pipe(
                    **dict(zip(names, embeds, strict=True)),
                    height=args.size,
                    width=args.size,
                    num_inference_steps=args.steps,
                )
        label = "warm-up" if run == 0 else f"run {run}"
        print(
            f"{label}: text_encoder {times.text_encoder:.3f}s  unet {times.unet:.3f}s "
            f"({times.unet_steps} steps)  vae_decode {times.vae_decode:.3f}s",
            file=sys.stdout,
        )


if __name__ == "__main__":
    main()

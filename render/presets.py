"""Pipelines built from configs (no weights can be downloaded) or loaded from a local folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PRESETS = ("tiny", "sdxl")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Built:
    pipe: Any
    model_id: str
    device: torch.device
    dtype: torch.dtype


def _quiet() -> None:
    """transformers and diffusers warn about image backends and dtype casts we do on purpose."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def byte_tokenizer(max_length: int = 77) -> Any:
    """A CLIP-shaped byte-level tokenizer made in code: no vocabulary file to download.

    Every byte is a token, so any prompt encodes; ids stay below 259, inside any CLIP vocab.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = {"<|startoftext|>": 256, "<|endoftext|>": 257, "<|pad|>": 258}
    vocab.update(specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 256), ("<|endoftext|>", 257)],
    )
    names = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **names)


def scheduler(config: dict[str, Any] | None = None) -> Any:
    """DPM++ 2M Karras, the common default for SD and SDXL serving."""
    from diffusers import DPMSolverMultistepScheduler

    base = dict(config or {})
    base.update(
        algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True, steps_offset=1
    )
    return (
        DPMSolverMultistepScheduler.from_config(base)
        if config
        else (DPMSolverMultistepScheduler(**base))
    )


def _tiny() -> Any:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=8,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=260,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=256,
            eos_token_id=257,
            pad_token_id=258,
        )
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=byte_tokenizer(),
        unet=unet,
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl() -> Any:
    """The SDXL 1.0 base architecture at full size with random weights (~3.5B parameters)."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=1024,
        scaling_factor=0.13025,
    )
    common: dict[str, Any] = dict(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_dim=768,
            hidden_act="quick_gelu",
            **common,
        )
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=20,
            projection_dim=1280,
            hidden_act="gelu",
            **common,
        )
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=byte_tokenizer(),
        tokenizer_2=byte_tokenizer(),
        unet=unet,
        scheduler=scheduler(),
    )


def build(
    preset: str = "tiny",
    *,
    weights: Path | None = None,
    precision: str = "fp32",
    device: str | None = None,
) -> Built:
    """A ready pipeline on ``device`` (CUDA when present) in ``precision``."""
    _quiet()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu" and dtype is torch.float16:
        raise ValueError("fp16 needs a GPU; use fp32 or bf16 on a CPU")
    if weights is not None:
        from diffusers import DiffusionPipeline

        if not (weights / "model_index.json").is_file():
            raise ValueError(f"{weights} is not a diffusers folder (no model_index.json)")
        pipe = DiffusionPipeline.from_pretrained(weights, torch_dtype=dtype, local_files_only=True)
        pipe.scheduler = scheduler(dict(pipe.scheduler.config))
        model_id = f"local:{weights.resolve().name}"
    elif preset == "tiny":
        pipe, model_id = _tiny(), "renderledger/tiny-sd"
    elif preset == "sdxl":
        pipe, model_id = _sdxl(), "renderledger/sdxl-random"
    else:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    pipe = pipe.to(dev, dtype)
    pipe.set_progress_bar_config(disable=True)
    return Built(pipe, model_id, dev, dtype)

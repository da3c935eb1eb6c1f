"""Tiny random vision checkpoints for tests: the one place that builds them.

``tiny_tower_checkpoint(folder, family)`` writes a hub-style folder (config.json +
model.safetensors via ``save_pretrained``, optionally preprocessor_config.json) with a
CLIP / SigLIP / SigLIP2-NaFlex / DINOv2 / DINOv2-with-registers vision model of a few
kilobytes. ``full=True`` saves the whole CLIP / SigLIP / SigLIP2 model (text tower too),
as the hub checkpoints are. Nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    PreTrainedModel,
    Siglip2Config,
    Siglip2Model,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

FAMILIES = ("clip", "siglip", "siglip2", "dinov2", "dinov2_reg")
# each family's transformers vision model: the reference the towers are checked against
RAW_CLASSES: dict[str, type[PreTrainedModel]] = {
    "clip": CLIPVisionModel,
    "siglip": SiglipVisionModel,
    "siglip2": Siglip2VisionModel,
    "dinov2": Dinov2Model,
    "dinov2_reg": Dinov2WithRegistersModel,
}
PATCH = 8
IMAGE_SIZE = 32  # a 4x4 position table; SigLIP2 NaFlex: num_patches = 16
DEPTH = 3
WIDTH = 32
NUM_REGISTERS = 2

# An unusual normalisation no family uses by default, so tests can tell which one was applied.
ODD_PREPROCESSOR = {"image_mean": [0.1, 0.3, 0.7], "image_std": [0.2, 0.4, 0.9]}

_VISION = {
    "hidden_size": WIDTH,
    "intermediate_size": 2 * WIDTH,
    "num_hidden_layers": DEPTH,
    "num_attention_heads": 4,
    "patch_size": PATCH,
}
_TEXT = {
    "hidden_size": WIDTH,
    "intermediate_size": 2 * WIDTH,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "vocab_size": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def tiny_vision_model(family: str, *, full: bool = False, **config: Any) -> PreTrainedModel:
    """A tiny random model of ``family`` (see ``FAMILIES``); ``config`` overrides the vision
    config (e.g. ``vision_use_head=False``). ``full``: the CLIP/SigLIP/SigLIP2 dual encoder."""
    vision = {**_VISION, **config}
    if family in ("clip", "siglip"):
        vision.setdefault("image_size", IMAGE_SIZE)
    if family == "siglip2":
        vision.setdefault("num_patches", (IMAGE_SIZE // PATCH) ** 2)
    if family == "dinov2_reg":
        vision.setdefault("num_register_tokens", NUM_REGISTERS)
    if family.startswith("dinov2"):
        vision.setdefault("image_size", IMAGE_SIZE)
        # random layer scale and position table so every part of the forward matters
        vision.setdefault("layerscale_value", 0.5)
    classes = {
        "clip": (CLIPVisionConfig, CLIPVisionModel, CLIPConfig, CLIPModel),
        "siglip": (SiglipVisionConfig, SiglipVisionModel, SiglipConfig, SiglipModel),
        "siglip2": (Siglip2VisionConfig, Siglip2VisionModel, Siglip2Config, Siglip2Model),
        "dinov2": (Dinov2Config, Dinov2Model, None, None),
        "dinov2_reg": (Dinov2WithRegistersConfig, Dinov2WithRegistersModel, None, None),
    }
    if family not in classes:
        raise ValueError(f"unknown tiny model family {family!r}; use one of {FAMILIES}")
    vision_config_cls, vision_cls, full_config_cls, full_cls = classes[family]
    if full:
        if full_cls is None:
            raise ValueError(f"{family} has no full (dual-encoder) model; use full=False")
        return full_cls(full_config_cls(vision_config=vision, text_config=_TEXT)).eval()
    return vision_cls(vision_config_cls(**vision)).eval()


def tiny_tower_checkpoint(
    folder: Path,
    family: str,
    *,
    full: bool = False,
    preprocessor: dict[str, Any] | None = None,
    seed: int = 0,
    **config: Any,
) -> Path:
    """Write a tiny random checkpoint of ``family`` into ``folder`` (created) and return it.

    preprocessor: the preprocessor_config.json to write (None: no such file).
    """
    torch.manual_seed(seed)
    model = tiny_vision_model(family, full=full, **config)
    with torch.no_grad():  # non-trivial norms, so a missed or doubled layernorm shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * 0.3)
    folder = Path(folder)
    model.save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder

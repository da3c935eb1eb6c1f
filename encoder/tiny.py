"""Tiny random vision checkpoints, written in the real on-disk formats: what the quickstart's
encoder starts from, what the "tiny" recipe spec builds, what tests and benchmarks load. The
one place that builds them; nothing touches the network, the same arguments give the same
bytes.

    >>> radio_dir = write_tiny_radio(tmp / "radio")             # NVIDIA hub format (load_radio)
    >>> folder = tiny_tower_checkpoint(tmp / "clip", "clip")    # a transformers hub folder
    >>> model = tiny_radio_model(num_layers=4)                  # transformers' RadioModel

``tiny_tower_checkpoint(folder, family)`` writes config.json + model.safetensors (via
``save_pretrained``, optionally preprocessor_config.json) with a CLIP / SigLIP / SigLIP2-NaFlex /
DINOv2 / DINOv2-with-registers vision model of a few kilobytes. ``full=True`` saves the whole
CLIP / SigLIP / SigLIP2 model (text tower too), as the hub checkpoints are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
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
    RadioConfig,
    RadioModel,
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

# An unusual normalisation no family uses by default, so checks can tell which one was applied.
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


def tiny_radio_model(
    num_layers: int = 4, *, hidden_size: int = 32, patch_size: int = 16, seed: int = 0
) -> RadioModel:
    """A tiny random transformers ``RadioModel`` (2 cls tokens + 2 registers, positions for
    256 px), seeded, in eval mode."""
    torch.manual_seed(seed)
    config = RadioConfig(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_cls_tokens=2,
        num_registers=2,
        patch_size=patch_size,
        max_img_size=256,
        summary_idxs=[0, 1],
    )
    return RadioModel(config).eval()


def write_tiny_radio(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    depth: int = 2,
    heads: int = 4,
    patch_size: int = 16,
    max_resolution: int = 512,
    preferred_resolution: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random RADIOv2.5-style checkpoint in NVIDIA's hub format into ``folder``.

    config.json: the reference code's training ``args`` (``vit_base_patch16_224`` shrunk by
    ``model_kwargs``; two teachers with one cls token each, padded with registers to a multiple
    of 8; a position table for ``max_resolution``) + ``version``, ``patch_size``,
    ``max_resolution``, ``preferred_resolution``. model.safetensors: ``radio_model.*`` keys
    (patch generator, ViT blocks with fused qkv, input conditioner, summary_idxs), float32,
    drawn from a seeded generator. Loads with ``encoder.load_radio(folder)``.
    """
    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by heads {heads}")
    if max_resolution % patch_size:
        raise ValueError(
            f"max_resolution {max_resolution} must be a multiple of patch_size {patch_size}"
        )
    teachers = [
        {"name": "clip", "type": "open_clip", "use_summary": True, "feature_distillation": True},
        {"name": "dino_v2", "type": "dino_v2", "use_summary": True, "feature_distillation": True},
    ]
    register_multiple = 8
    num_prefix = len(teachers) + (register_multiple - len(teachers) % register_multiple)
    args = {
        "model": "vit_base_patch16_224",
        "model_kwargs": {"embed_dim": hidden_size, "depth": depth, "num_heads": heads},
        "cpe_max_size": max_resolution,
        "cls_token_per_teacher": True,
        "teachers": teachers,
        "register_multiple": register_multiple,
        "feature_summarizer": "cls_token",
        "dtype": "float32",
    }
    config = {
        "architectures": ["RADIOModel"],
        "args": args,
        "version": "radio_v2.5-b",
        "patch_size": patch_size,
        "max_resolution": max_resolution,
        "preferred_resolution": [preferred_resolution, preferred_resolution],
        "adaptor_names": None,
    }
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std + mean

    c, p, grid = hidden_size, patch_size, max_resolution // patch_size
    vit = "radio_model.model."
    tensors = {
        f"{vit}patch_generator.embedder.weight": randn(c, 3 * p * p, std=(3 * p * p) ** -0.5),
        f"{vit}patch_generator.pos_embed": randn(1, grid * grid, c),
        f"{vit}patch_generator.cls_token.token": randn(num_prefix, c),
        "radio_model.input_conditioner.norm_mean": torch.tensor([0.48, 0.46, 0.41]).view(3, 1, 1),
        "radio_model.input_conditioner.norm_std": torch.tensor([0.27, 0.26, 0.28]).view(3, 1, 1),
        "radio_model.summary_idxs": torch.arange(len(teachers), dtype=torch.int64),
    }
    shapes = {"attn.qkv": (3 * c, c), "attn.proj": (c, c), "mlp.fc1": (4 * c, c)}
    shapes["mlp.fc2"] = (c, 4 * c)
    for i in range(depth):
        block = f"{vit}blocks.{i}."
        for norm in ("norm1", "norm2"):  # non-trivial norms, so a missed one shows
            tensors[f"{block}{norm}.weight"] = randn(c, std=0.1, mean=1.0)
            tensors[f"{block}{norm}.bias"] = randn(c, std=0.1)
        for name, (out, inp) in shapes.items():
            tensors[f"{block}{name}.weight"] = randn(out, inp, std=inp**-0.5)
            tensors[f"{block}{name}.bias"] = randn(out, std=0.02)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    return folder

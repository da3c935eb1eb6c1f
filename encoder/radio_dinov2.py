"""RADIOv2.5-g: the DINOv2-student ViT on transformers' ``RadioModel``.

The reference code builds RADIOv2.5-g from DINOv2's own ViT-g/14 (with registers) and stores
it under ``radio_model.model.inner.``: a patch embedder with a bias, SwiGLU MLPs (``mlp.w12``
= gate and up halves, ``mlp.w3`` = down), LayerScale (``ls1``/``ls2.grandma``, or ``gamma`` in
DINOv2's own naming) and a final LayerNorm. transformers has no rename rules for these keys
and would quietly leave a missing LayerScale at 1, so the mapping is done here, strictly:
every ViT tensor must be found and used.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import RadioConfig, RadioModel

INNER = "radio_model.model.inner."
_UNUSED = ("mask_token",)  # DINOv2's masked-image-modelling token; not used at inference


class RadioDinoV2Model(RadioModel):
    """``RadioModel`` plus what the DINOv2 student has beyond it: a bias on the patch
    embedder and a final LayerNorm.

    The final norm is applied to ``summary``, ``features`` and ``last_hidden_state`` (it is
    per token, so normalising the gathered tokens equals gathering the normalised ones, also on
    the packed path); ``hidden_states`` stay un-normalised, as the reference's
    ``forward_intermediates(norm=False)``.
    """

    def __init__(self, config: RadioConfig) -> None:
        super().__init__(config)
        self.embeddings.patch_projection = nn.Linear(config.patch_dim, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: Tensor, image_grid_hw: Tensor | None = None, **kwargs: Any):
        out = super().forward(pixel_values, image_grid_hw, **kwargs)
        width = self.config.hidden_size
        out.summary = self.norm(out.summary.unflatten(-1, (-1, width))).flatten(-2)
        out.features = self.norm(out.features)
        out.last_hidden_state = self.norm(out.last_hidden_state)
        return out


def dinov2_state_dict(tensors: dict[str, Tensor], config: RadioConfig) -> dict[str, Tensor]:
    """Hub keys (``radio_model.model.inner.*`` + conditioner) -> ``RadioDinoV2Model`` keys.

    Raises ValueError for a missing LayerScale, leftover or missing ViT tensors.
    """
    inner = {k.removeprefix(INNER): v for k, v in tensors.items() if k.startswith(INNER)}
    out: dict[str, Tensor] = {
        "input_conditioner.norm_mean": tensors["radio_model.input_conditioner.norm_mean"],
        "input_conditioner.norm_std": tensors["radio_model.input_conditioner.norm_std"],
        "summary_idxs": torch.tensor(config.summary_idxs, dtype=torch.long),
    }
    used: set[str] = set(_UNUSED)

    def take(key: str) -> Tensor:
        if key not in inner:
            raise ValueError(
                f"RADIO DINOv2-student checkpoint has no '{INNER}{key}'; the checkpoint is "
                "incomplete or not a RADIOv2.5-g checkpoint"
            )
        used.add(key)
        return inner[key]

    gen = "patch_generator."
    out["embeddings.patch_projection.weight"] = take(gen + "embedder.weight")
    out["embeddings.patch_projection.bias"] = take(gen + "embedder.bias")
    out["embeddings.position_embedding"] = take(gen + "pos_embed")
    out["embeddings.cls_register_token"] = take(gen + "cls_token.token")
    out["norm.weight"], out["norm.bias"] = take("norm.weight"), take("norm.bias")

    for i in range(config.num_hidden_layers):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for norm in ("norm1", "norm2"):
            for p in ("weight", "bias"):
                out[f"{dst}{norm}.{p}"] = take(f"{src}{norm}.{p}")
        for p in ("weight", "bias"):
            q, k, v = take(f"{src}attn.qkv.{p}").chunk(3, dim=0)
            out[f"{dst}attention.q_proj.{p}"] = q
            out[f"{dst}attention.k_proj.{p}"] = k
            out[f"{dst}attention.v_proj.{p}"] = v
            out[f"{dst}attention.o_proj.{p}"] = take(f"{src}attn.proj.{p}")
            if config.use_swiglu_ffn:
                gate, up = take(f"{src}mlp.w12.{p}").chunk(2, dim=0)
                out[f"{dst}mlp.gate_proj.{p}"], out[f"{dst}mlp.up_proj.{p}"] = gate, up
                out[f"{dst}mlp.down_proj.{p}"] = take(f"{src}mlp.w3.{p}")
            else:
                out[f"{dst}mlp.fc1.{p}"] = take(f"{src}mlp.fc1.{p}")
                out[f"{dst}mlp.fc2.{p}"] = take(f"{src}mlp.fc2.{p}")
        for j in (1, 2):
            out[f"{dst}layer_scale{j}.lambda1"] = _layer_scale(inner, f"{src}ls{j}", used)

    leftover = sorted(set(inner) - used)
    if leftover:
        raise ValueError(
            f"RADIO DINOv2-student checkpoint has tensors this model does not use: {leftover[:8]} "
            f"(config: {config.num_hidden_layers} blocks); is args.model right?"
        )
    return out


def _layer_scale(inner: dict[str, Tensor], prefix: str, used: set[str]) -> Tensor:
    # DINOv2 names it gamma; RADIO renames it grandma because transformers used to rewrite
    # "gamma" keys on load.
    for key in (f"{prefix}.grandma", f"{prefix}.gamma"):
        if key in inner:
            used.add(key)
            return inner[key]
    raise ValueError(
        f"RADIO DINOv2-student checkpoint has no LayerScale '{INNER}{prefix}.grandma' (or "
        "'.gamma'); refusing to load: without it every block would be scaled by 1 and the "
        "features would be silently wrong"
    )


def load_dinov2_student(
    tensors: dict[str, Tensor], config: RadioConfig, dtype: torch.dtype | None = None
) -> RadioDinoV2Model:
    """Build ``RadioDinoV2Model`` on the meta device and assign the converted weights."""
    state = dinov2_state_dict(tensors, config)
    with torch.device("meta"):
        model = RadioDinoV2Model(config)
    model.load_state_dict(state, strict=True, assign=True)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()

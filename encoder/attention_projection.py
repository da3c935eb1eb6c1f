"""Attention keys or values of one encoder block on the patch grid: what ToMe can match on.

ToMe (Bolya et al.) matches tokens on their attention keys; the RADIOv2.5 paper (4.8, Table
A10) matches on the output features instead, because that reconstructs the features better,
and compares against keys and values. ``attention_projection`` gives the keys or values side
of that comparison, for any tower with a block-wise adapter (RADIO, CLIP, SigLIP/SigLIP2,
DINOv2):

    >>> keys = attention_keys(enc, pixels)                                 # [B, h, w, head_dim]
    >>> values = attention_projection(enc, pixels, layer=2, kind="values")  # [B, h, w, head_dim]
    >>> grid = enc(pixels).grid                                            # [B, h, w, C]
    >>> out = compress(grid, "tome", 256, metric=keys)     # match on keys, merge the features
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import VisionEncoder
from .blockwise_tome import BlockwiseAdapter, radio_adapter
from .blockwise_towers import tower_adapter
from .hf_towers import HFVisionTower
from .radio import RadioEncoder

PROJECTIONS = {"keys": "k_proj", "values": "v_proj"}  # kind -> the BlockParts projection


def attention_projection(
    encoder: VisionEncoder, pixel_values: Tensor, *, layer: int = -1, kind: str = "keys"
) -> Tensor:
    """Keys or values (``kind``) of block ``layer``'s attention on the patch tokens, averaged
    over heads (as ToMe averages its keys).

    pixel_values: [B, 3, H, W] in [0, 1], as ``encoder`` takes them (one size per batch).
    Returns [B, h, w, head_dim] on the encoder's patch grid (cls/register tokens dropped),
    float32, without gradients.
    """
    if kind not in PROJECTIONS:
        raise ValueError(f"kind must be one of {sorted(PROJECTIONS)}; got {kind!r}")
    if encoder.blockwise_tome is not None:
        raise ValueError(
            f"attention {kind} need the full patch grid; this encoder merges tokens inside its "
            "blocks (blockwise_tome), so build it without blockwise_tome"
        )
    adapter = _adapter(encoder)
    num_blocks = len(adapter.blocks)
    if not -num_blocks <= layer < num_blocks:
        raise ValueError(f"layer {layer} is out of range for an encoder with {num_blocks} blocks")
    parts = adapter.blocks[layer]
    projection = getattr(parts, PROJECTIONS[kind])
    captured: list[Tensor] = []
    hook = projection.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            grid = encoder(pixel_values).grid
    finally:
        hook.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"expected block {layer}'s {PROJECTIONS[kind]} to run once per forward, it ran "
            f"{len(captured)} times"
        )
    b, h, w, _ = grid.shape
    out = captured[0][:, adapter.num_prefix :]  # [B, h*w, heads * head_dim]
    if out.shape[1] != h * w:
        raise RuntimeError(f"{out.shape[1]} patch {kind} for a {h}x{w} grid")
    out = out.reshape(b, h * w, -1, parts.head_dim).mean(dim=2)
    return out.reshape(b, h, w, parts.head_dim).float()


def attention_keys(encoder: VisionEncoder, pixel_values: Tensor, *, layer: int = -1) -> Tensor:
    """``attention_projection(..., kind="keys")``: [B, h, w, head_dim], ToMe's own metric."""
    return attention_projection(encoder, pixel_values, layer=layer, kind="keys")


def _adapter(encoder: VisionEncoder) -> BlockwiseAdapter:
    if isinstance(encoder, RadioEncoder):
        return radio_adapter(encoder.model)
    if isinstance(encoder, HFVisionTower):
        return tower_adapter(encoder.model)
    raise TypeError(
        f"attention_projection supports RadioEncoder and the transformers towers "
        f"(HFVisionTower); got {type(encoder).__name__}"
    )

"""Attention keys of one encoder block on the patch grid: what ToMe matches on by default.

ToMe (Bolya et al.) matches tokens on their attention keys; the RADIOv2.5 paper (4.8, Table
A10) matches on the output features instead, because that reconstructs the features better.
``attention_keys`` gives the keys side of that comparison, for any tower with a block-wise
adapter (RADIO, CLIP, SigLIP/SigLIP2, DINOv2):

    >>> keys = attention_keys(enc, pixels)                  # [B, h, w, head_dim]
    >>> grid = enc(pixels).grid                             # [B, h, w, C]
    >>> out = compress(grid, "tome", 256, metric=keys)      # match on keys, merge the features
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import VisionEncoder
from .blockwise_tome import BlockwiseAdapter, radio_adapter
from .blockwise_towers import tower_adapter
from .hf_towers import HFVisionTower
from .radio import RadioEncoder


def attention_keys(encoder: VisionEncoder, pixel_values: Tensor, *, layer: int = -1) -> Tensor:
    """Keys of block ``layer``'s attention on the patch tokens, averaged over heads.

    pixel_values: [B, 3, H, W] in [0, 1], as ``encoder`` takes them (one size per batch).
    Returns [B, h, w, head_dim] on the encoder's patch grid (cls/register tokens dropped),
    float32, without gradients.
    """
    if encoder.blockwise_tome is not None:
        raise ValueError(
            "attention_keys needs the full patch grid; this encoder merges tokens inside its "
            "blocks (blockwise_tome), so build it without blockwise_tome"
        )
    adapter = _adapter(encoder)
    num_blocks = len(adapter.blocks)
    if not -num_blocks <= layer < num_blocks:
        raise ValueError(f"layer {layer} is out of range for an encoder with {num_blocks} blocks")
    parts = adapter.blocks[layer]
    captured: list[Tensor] = []
    hook = parts.k_proj.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            grid = encoder(pixel_values).grid
    finally:
        hook.remove()
    if len(captured) != 1:
        raise RuntimeError(
            f"expected block {layer}'s key projection to run once per forward, it ran "
            f"{len(captured)} times"
        )
    b, h, w, _ = grid.shape
    keys = captured[0][:, adapter.num_prefix :]  # [B, h*w, heads * head_dim]
    if keys.shape[1] != h * w:
        raise RuntimeError(f"{keys.shape[1]} patch keys for a {h}x{w} grid")
    keys = keys.reshape(b, h * w, -1, parts.head_dim).mean(dim=2)
    return keys.reshape(b, h, w, parts.head_dim).float()


def _adapter(encoder: VisionEncoder) -> BlockwiseAdapter:
    if isinstance(encoder, RadioEncoder):
        return radio_adapter(encoder.model)
    if isinstance(encoder, HFVisionTower):
        return tower_adapter(encoder.model)
    raise TypeError(
        f"attention_keys supports RadioEncoder and the transformers towers (HFVisionTower); "
        f"got {type(encoder).__name__}"
    )

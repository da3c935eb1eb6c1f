"""Block-wise ToMe (paper Table A4) for the transformers towers: CLIP, SigLIP, SigLIP2 NaFlex,
DINOv2 and DINOv2 with registers.

    >>> out = blockwise_tower_forward(model, pixels, num_tokens=196)  # pixels normalised
    >>> out.summary, out.compressed.tokens.shape       # the tower's usual summary, [B, K, C]

The block loop, the schedule and proportional attention are ``encoder.blockwise_tome``'s; this
module only says where each family keeps its pieces (a ``BlockwiseAdapter`` per family). With
K = h*w nothing merges and every output equals the transformers model's:

| family          | prefix P        | per block                          | final sequence / summary  |
|-----------------|-----------------|------------------------------------|---------------------------|
| CLIP            | cls             | pre-norm, no layer scale; the      | raw / post_layernorm(cls) |
|                 |                 | embedding goes through pre_layrnorm|                           |
| SigLIP, SigLIP2 | none            | pre-norm, no layer scale           | post_layernorm / pooling  |
|                 |                 |                                    | head (see below)          |
| DINOv2 (+reg)   | cls + registers | pre-norm, layer scale, drop path   | layernorm / layernormed   |
|                 |                 | (laid out as RADIO's blocks)       | cls                       |

SigLIP's attention-pooling head runs on the K merged, post-layernormed tokens and is
size-weighted: log(size) is added to its probe's key logits (when ``proportional`` and
something merged), so the probe weighs a merged token as the s patches it stands for, as
proportional attention does inside the blocks; merging exact duplicates then leaves the
summary unchanged. With ``proportional=False`` it is the plain head on K tokens.

SigLIP2 NaFlex takes [B, 3, H, W] here too (one grid for the batch, no padding); the adapter
patchifies it and resizes the position table to (h, w) as the model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from .blockwise_tome import (
    BlockParts,
    BlockwiseAdapter,
    BlockwiseToMeOutput,
    blockwise_forward,
    prenorm_block_parts,
    proportional_attention,
)


def blockwise_tower_forward(
    model: PreTrainedModel,
    pixel_values: Tensor,
    num_tokens: int,
    *,
    schedule: Sequence[int] | None = None,
    proportional: bool = True,
) -> BlockwiseToMeOutput:
    """Run a CLIP / SigLIP / SigLIP2 / DINOv2 vision model with ToMe inside every block.

    pixel_values: [B, 3, H, W] already normalised (the tower's mean/std) in the model's dtype;
        H, W multiples of the patch size.
    num_tokens, schedule, proportional: as ``blockwise_tome_forward``.
    Returns summary (the family's, see the module docstring; None for SigLIP without head),
    compressed (K patch tokens of the family's final sequence), prefix_tokens [B, P, C],
    last_hidden_state [B, P + K, C] (as the model's own ``last_hidden_state``), schedule.
    """
    return blockwise_forward(
        tower_adapter(model), pixel_values, num_tokens, schedule=schedule, proportional=proportional
    )


def tower_adapter(model: PreTrainedModel) -> BlockwiseAdapter:
    """The ``BlockwiseAdapter`` for a transformers vision model, by its config's model_type."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(
            f"block-wise ToMe has no adapter for model_type {model_type!r}; supported: "
            f"{', '.join(sorted(ADAPTERS))} (RADIO: encoder.blockwise_tome_forward)"
        )
    return ADAPTERS[model_type](model)


def patchify(pixels: Tensor, patch: int) -> Tensor:
    """[B, C, h*p, w*p] -> [B, h*w, p*p*C]: patches in raster order, each flattened as
    (row, column, channel), the layout of transformers' ``Siglip2ImageProcessor``."""
    b, c, height, width = pixels.shape
    x = pixels.reshape(b, c, height // patch, patch, width // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (height // patch) * (width // patch), -1)


# --------------------------------------------------------------------------- families


def clip_style_block_parts(layer: nn.Module) -> BlockParts:
    """``BlockParts`` of a ``CLIPEncoderLayer`` / ``SiglipEncoderLayer`` / ``Siglip2EncoderLayer``
    (layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2, mlp; no layer scale)."""
    attention = layer.self_attn
    return BlockParts(
        norm1=layer.layer_norm1,
        q_proj=attention.q_proj,
        k_proj=attention.k_proj,
        v_proj=attention.v_proj,
        o_proj=attention.out_proj,
        head_dim=attention.head_dim,
        scaling=attention.scale,
        dropout=attention.dropout if attention.training else 0.0,
        norm2=layer.layer_norm2,
        mlp=layer.mlp,
    )


def clip_adapter(model: PreTrainedModel) -> BlockwiseAdapter:
    """``CLIPVisionModel``: [cls | patches]; pre_layrnorm on the embedding; the final
    sequence stays raw, the summary is post_layernorm(cls) (its ``pooler_output``)."""

    def embed(pixels: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        return model.pre_layrnorm(model.embeddings(pixels, interpolate_pos_encoding=True))

    def finish(x: Tensor, log_sizes: Tensor | None) -> tuple[Tensor, Tensor]:
        return model.post_layernorm(x[:, 0]), x

    return _adapter(
        model, 1, embed, [clip_style_block_parts(x) for x in model.encoder.layers], finish
    )


def siglip_adapter(model: PreTrainedModel) -> BlockwiseAdapter:
    """``SiglipVisionModel`` / ``Siglip2VisionModel``: no prefix; post_layernorm on the final
    sequence; the summary is the pooling head on it, size-weighted (None without a head)."""
    naflex = model.config.model_type == "siglip2_vision_model"

    def embed(pixels: Tensor, grid_hw: tuple[int, int]) -> Tensor:
        if not naflex:
            return model.embeddings(pixels, interpolate_pos_encoding=True)
        shapes = torch.tensor([grid_hw] * pixels.shape[0], dtype=torch.long, device=pixels.device)
        return model.embeddings(patchify(pixels, model.config.patch_size), shapes)

    def finish(x: Tensor, log_sizes: Tensor | None) -> tuple[Tensor | None, Tensor]:
        x = model.post_layernorm(x)
        return (attention_pool(model.head, x, log_sizes) if model.use_head else None), x

    return _adapter(
        model, 0, embed, [clip_style_block_parts(x) for x in model.encoder.layers], finish
    )


def dinov2_adapter(model: PreTrainedModel) -> BlockwiseAdapter:
    """``Dinov2Model`` / ``Dinov2WithRegistersModel``: [cls | registers | patches] (the model
    interpolates its positions itself); layernorm on the final sequence, summary its cls."""
    num_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    def finish(x: Tensor, log_sizes: Tensor | None) -> tuple[Tensor, Tensor]:
        x = model.layernorm(x)
        return x[:, 0], x

    blocks = [prenorm_block_parts(layer) for layer in model.encoder.layer]
    return _adapter(model, num_prefix, lambda pixels, hw: model.embeddings(pixels), blocks, finish)


ADAPTERS: dict[str, Callable[[PreTrainedModel], BlockwiseAdapter]] = {
    "clip_vision_model": clip_adapter,
    "siglip_vision_model": siglip_adapter,
    "siglip2_vision_model": siglip_adapter,
    "dinov2": dinov2_adapter,
    "dinov2_with_registers": dinov2_adapter,
}


# --------------------------------------------------------------------------- pooling head


def attention_pool(head: nn.Module, tokens: Tensor, log_sizes: Tensor | None) -> Tensor:
    """SigLIP's ``MultiheadAttentionPoolingHead`` on tokens [B, T, C] -> [B, C], with log(size)
    of each token [B, T] (or None: all sizes 1) added to the probe's attention logits.

    The head's ``nn.MultiheadAttention`` weights run through ``proportional_attention``
    (it has no per-key additive input of its own that keeps the fast path); then the
    residual MLP on the layernormed result, as the head does.
    """
    attention: nn.MultiheadAttention = head.attention
    if attention.bias_k is not None or attention.add_zero_attn:
        raise ValueError("attention_pool does not support add_bias_kv / add_zero_attn heads")
    b, _, c = tokens.shape
    heads, d = attention.num_heads, attention.head_dim
    if attention.in_proj_weight is not None:  # one packed [3C, C] projection (SigLIP's case)
        weights = attention.in_proj_weight.chunk(3)
    else:
        weights = (attention.q_proj_weight, attention.k_proj_weight, attention.v_proj_weight)
    bias = attention.in_proj_bias
    biases = (None, None, None) if bias is None else bias.chunk(3)
    probe = head.probe.expand(b, -1, -1)
    q, k, v = (
        F.linear(x, weight, bias_).view(b, x.shape[1], heads, d).transpose(1, 2)
        for x, weight, bias_ in zip((probe, tokens, tokens), weights, biases, strict=True)
    )
    dropout = attention.dropout if attention.training else 0.0
    out = proportional_attention(q, k, v, log_sizes, d**-0.5, dropout)  # [B, H, 1, d]
    x = attention.out_proj(out.transpose(1, 2).reshape(b, 1, c))
    x = x + head.mlp(head.layernorm(x))
    return x[:, 0]


def _adapter(
    model: PreTrainedModel,
    num_prefix: int,
    embed: Callable[[Tensor, tuple[int, int]], Tensor],
    blocks: list[BlockParts],
    finish: Callable[[Tensor, Tensor | None], tuple[Tensor | None, Tensor]],
) -> BlockwiseAdapter:
    config = model.config
    return BlockwiseAdapter(
        patch_size=int(config.patch_size),
        num_channels=int(config.num_channels),
        num_prefix=num_prefix,
        embed=embed,
        blocks=blocks,
        finish=finish,
    )

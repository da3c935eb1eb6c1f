"""Block-wise ToMe for transformers' ``RadioModel`` (the "block-wise" row of paper Table A4).

The project's default merger (``token_merge.compress(..., "tome")``) merges ONCE, on the final
patch grid, matching on the features. This module is the original ToMe formulation instead
(Bolya et al. 2023): merging happens inside every ViT block, between attention and MLP,
matching on the attention keys, with proportional attention so a token that stands for s
patches weighs like s copies of itself. Both reach exactly K patch tokens for the same K.

    >>> out = blockwise_tome_forward(model, pixel_values, num_tokens=196)  # pixels in [0, 1]
    >>> out.compressed.tokens.shape, out.compressed.assignment.shape       # [B, 196, C], [B, h*w]
    >>> grid = out.compressed.unmerge().reshape(b, h, w, -1)

Per block i, with the residual stream x [B, P + n_i, C] (P cls/register tokens first) and
the sizes s [B, P + n_i] (patches each token stands for; all ones at the start):

1. attention of norm1(x) with log(s) of every KEY token added to the logits (proportional
   attention); with nothing merged yet s = 1 and no mask is passed, so it is the plain model;
2. x = x + layer_scale1(attention) (RADIO's own submodules, weights shared, not copied);
3. bipartite soft matching on the keys (mean over heads, cosine similarity): patch tokens at
   alternating positions are destinations (``token_merge.alternating_destinations``), the
   other patch tokens are sources, the P prefix tokens are protected; the r_i most similar
   sources merge into their best destination: x becomes the size-weighted mean of its
   members, s their sum (``token_merge.merge_tokens``);
4. x = x + layer_scale2(mlp(norm2(x))).

Attention always runs through ``F.scaled_dot_product_attention`` (an additive float mask of
log sizes once something has merged), whatever ``config._attn_implementation`` says; no
per-block hidden states are returned (their token counts differ per block).

The r_i come from ``merge_schedule`` (``encoder.blockwise_schedule``); the assignment of
every input patch to its output token is the ``token_merge.compose`` of all rounds. Output
tokens keep the raster order of their representatives (``bipartite_soft_matching`` orders
slots that way in every round).

The block loop (``blockwise_forward``) is family-neutral: a ``BlockwiseAdapter`` says how a
model embeds pixels, how many prefix tokens it protects, where each block's norms, q/k/v/o
projections, layer scales and MLP are (``BlockParts``) and what its final norm / pooling
head makes of the last sequence. ``radio_adapter`` is RADIO's; ``encoder.blockwise_towers``
has CLIP's, SigLIP(2)'s and DINOv2's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import RadioModel

from token_merge import Compressed, alternating_destinations, bipartite_soft_matching, compose
from token_merge import merge_tokens as merge_weighted

from .blockwise_schedule import (
    check_schedule,
    max_merges,
    merge_schedule,
    min_reachable,
    resolve_schedule,
)

# The schedule's names stay importable from here, the module that documents the algorithm.
__all__ = [
    "BlockParts",
    "BlockwiseAdapter",
    "BlockwiseToMeOutput",
    "blockwise_forward",
    "blockwise_tome_forward",
    "check_schedule",
    "max_merges",
    "merge_schedule",
    "min_reachable",
    "prenorm_block_parts",
    "proportional_attention",
    "radio_adapter",
]

METHOD = "blockwise-tome"


@dataclass
class BlockwiseToMeOutput:
    """The result of ``blockwise_tome_forward`` (and ``blockwise_forward``).

    summary:           RADIO: [B, len(summary_idxs) * C] as ``RadioModel`` computes it (its
                       cls tokens at ``config.summary_idxs``, flattened); other families:
                       their usual summary [B, S] or None (the adapter's ``finish``).
    compressed:        K patch tokens [B, K, C], sizes [B, K] (float32, summing to h*w),
                       assignment [B, h*w] (the output token each input patch ended in),
                       grid_hw (h, w), method "blockwise-tome".
    prefix_tokens:     [B, P, C] the final cls + register tokens (P = num_summary_tokens).
    last_hidden_state: [B, P + K, C] the final sequence (prefix, then the K patch tokens),
                       after the family's final norm where it has one (not RADIO).
    schedule:          r_i, the tokens merged in each block (sums to h*w - K).
    """

    summary: Tensor | None
    compressed: Compressed
    prefix_tokens: Tensor
    last_hidden_state: Tensor
    schedule: list[int]

    @property
    def features(self) -> Tensor:
        """The K patch tokens [B, K, C] (``RadioModel``'s ``features`` when K = h*w)."""
        return self.compressed.tokens


# --------------------------------------------------------------------------- attention


def proportional_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_sizes: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> Tensor:
    """softmax(q k^T * scaling + log(size_key)) v, the attention ToMe uses for merged tokens.

    query, key, value: [B, H, T, d]; log_sizes: [B, T] (log of the patches each key token
    stands for) or None for all sizes 1. Adding log(s) to a key's logit multiplies its
    softmax weight by s: exactly what s identical copies of that key/value would get.
    Runs ``F.scaled_dot_product_attention`` with the log sizes as an additive float mask
    broadcast over heads and queries (the mask takes the query dtype, so bfloat16 rounds
    log(s) to ~3 significant digits). Returns [B, H, T, d].
    """
    mask = None if log_sizes is None else log_sizes[:, None, None, :].to(query.dtype)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )


# --------------------------------------------------------------------------- adapters

Module = Callable[[Tensor], Tensor]


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class BlockParts:
    """Where one pre-norm ViT block keeps its pieces; ToMe runs it as

        x = x + drop_path(layer_scale1(o_proj(attention(norm1(x)))))   # proportional
        (merge r_i tokens, matching on the keys)
        x = x + drop_path(layer_scale2(mlp(norm2(x))))

    Every callable maps [B, T, C_in] -> [B, T, C_out] (the model's own submodules, weights
    shared). ``dropout`` is the attention dropout to apply now (0 outside training).
    """

    norm1: Module
    q_proj: Module
    k_proj: Module
    v_proj: Module
    o_proj: Module
    head_dim: int
    scaling: float
    dropout: float
    norm2: Module
    mlp: Module
    layer_scale1: Module = _identity
    layer_scale2: Module = _identity
    drop_path: Module = _identity


@dataclass(frozen=True)
class BlockwiseAdapter:
    """How ``blockwise_forward`` drives one model family.

    patch_size, num_channels: the input the embedding takes ([B, num_channels, h*p, w*p]).
    num_prefix: P, cls/register tokens in front of the patches (protected from merging).
    embed:      (pixel_values, (h, w)) -> the first block's input [B, P + h*w, C].
    blocks:     one ``BlockParts`` per block, in order.
    finish:     (final sequence [B, P + K, C], log sizes [B, P + K] or None) -> (summary or
                None, the sequence the model reports [B, P + K, C]): the family's final norm
                and pooling. The log sizes are None until something merged (or with
                proportional=False); a pooling head may weigh its keys with them.
    """

    patch_size: int
    num_channels: int
    num_prefix: int
    embed: Callable[[Tensor, tuple[int, int]], Tensor]
    blocks: Sequence[BlockParts]
    finish: Callable[[Tensor, Tensor | None], tuple[Tensor | None, Tensor]]


def prenorm_block_parts(layer) -> BlockParts:
    """``BlockParts`` of a layer laid out as ``RadioLayer`` / ``Dinov2Layer`` (norm1,
    attention.{q,k,v,o}_proj, layer_scale1, drop_path, norm2, mlp, layer_scale2)."""
    attention = layer.attention
    return BlockParts(
        norm1=layer.norm1,
        q_proj=attention.q_proj,
        k_proj=attention.k_proj,
        v_proj=attention.v_proj,
        o_proj=attention.o_proj,
        head_dim=attention.head_dim,
        scaling=attention.scaling,
        dropout=attention.attention_dropout if attention.training else 0.0,
        norm2=layer.norm2,
        mlp=layer.mlp,
        layer_scale1=layer.layer_scale1,
        layer_scale2=layer.layer_scale2,
        drop_path=layer.drop_path,
    )


def radio_adapter(model: RadioModel) -> BlockwiseAdapter:
    """RADIO: the input conditioner normalises [0, 1] pixels; P = cls + registers; the
    summary is the cls tokens at ``summary_idxs``, flattened; no final norm."""
    config = model.config

    def finish(x: Tensor, log_sizes: Tensor | None) -> tuple[Tensor, Tensor]:
        cls_tokens = x[:, : config.num_cls_tokens]
        return cls_tokens[:, model.summary_idxs].flatten(1), x

    return BlockwiseAdapter(
        patch_size=config.patch_size,
        num_channels=config.num_channels,
        num_prefix=config.num_summary_tokens,
        embed=lambda pixels, grid_hw: model.embeddings(model.input_conditioner(pixels)),
        blocks=[prenorm_block_parts(layer) for layer in model.encoder.layer],
        finish=finish,
    )


# --------------------------------------------------------------------------- forward


def _attention(
    parts: BlockParts, hidden: Tensor, log_sizes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """A block's projections around ``proportional_attention``.

    hidden [B, T, C] -> (output [B, T, C] after o_proj, keys averaged over heads [B, T, d]).
    """
    b, t, _ = hidden.shape
    shape = (b, t, -1, parts.head_dim)
    q = parts.q_proj(hidden).view(shape).transpose(1, 2)
    k = parts.k_proj(hidden).view(shape).transpose(1, 2)
    v = parts.v_proj(hidden).view(shape).transpose(1, 2)
    out = proportional_attention(q, k, v, log_sizes, parts.scaling, parts.dropout)
    return parts.o_proj(out.transpose(1, 2).reshape(b, t, -1)), k.mean(dim=1)


def _merge_round(
    x: Tensor, sizes: Tensor, metric: Tensor, num_prefix: int, num_merged: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One ToMe round on [prefix | n patches]: x [B, P+n, C], sizes [B, P+n], metric [B, P+n, d]
    -> (x [B, P+n-r, C], sizes [B, P+n-r], patch assignment [B, n] into the n - r patches)."""
    total = x.shape[1]
    dst = alternating_destinations(total, start=num_prefix)
    protected = torch.arange(num_prefix) if num_prefix else None
    assignment = bipartite_soft_matching(metric, dst, num_merged, protected)  # [B, P+n]
    x, sizes = merge_weighted(x, assignment, total - num_merged, sizes)
    # Protected tokens are the first representatives, so they keep slots 0..P-1.
    return x, sizes, assignment[:, num_prefix:] - num_prefix


def _block(
    parts: BlockParts, x: Tensor, sizes: Tensor, num_prefix: int, num_merged: int, use_sizes: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One block with ToMe between attention and MLP (as ToMe's timm patch).

    use_sizes: add log(sizes) to the attention logits (proportional attention).
    Returns (x, sizes, patch assignment of this round [B, n] or None when r = 0).
    """
    log_sizes = sizes.log() if use_sizes else None
    attn, keys = _attention(parts, parts.norm1(x), log_sizes)
    x = parts.drop_path(parts.layer_scale1(attn)) + x
    assignment = None
    if num_merged > 0:
        x, sizes, assignment = _merge_round(x, sizes, keys, num_prefix, num_merged)
    x = parts.drop_path(parts.layer_scale2(parts.mlp(parts.norm2(x)))) + x
    return x, sizes, assignment


def blockwise_forward(
    adapter: BlockwiseAdapter,
    pixel_values: Tensor,
    num_tokens: int,
    *,
    schedule: Sequence[int] | None = None,
    proportional: bool = True,
) -> BlockwiseToMeOutput:
    """Run the model behind ``adapter`` with ToMe inside every block, down to ``num_tokens``.

    pixel_values [B, C, H, W] as ``adapter.embed`` takes them; the other arguments as
    ``blockwise_tome_forward``. The output's ``summary`` and ``last_hidden_state`` are what
    ``adapter.finish`` makes of the final sequence; ``compressed.tokens`` and
    ``prefix_tokens`` are its patch and prefix parts.
    """
    h, w = _check_pixels(pixel_values, adapter.patch_size, adapter.num_channels)
    b, n = pixel_values.shape[0], h * w
    schedule = resolve_schedule(n, num_tokens, len(adapter.blocks), schedule)

    x = adapter.embed(pixel_values, (h, w))  # [B, P + N, C]
    num_prefix = adapter.num_prefix
    sizes = torch.ones(b, num_prefix + n, device=x.device)  # float32 whatever x's dtype
    assignment = torch.arange(n, device=x.device).expand(b, n)
    merged = False  # sizes are exactly 1 until the first merge: no mask = the plain model
    for parts, r in zip(adapter.blocks, schedule, strict=True):
        x, sizes, step = _block(parts, x, sizes, num_prefix, r, proportional and merged)
        if step is not None:
            assignment, merged = compose(assignment, step), True

    summary, x = adapter.finish(x, sizes.log() if proportional and merged else None)
    compressed = Compressed(
        x[:, num_prefix:], sizes[:, num_prefix:], assignment.contiguous(), (h, w), METHOD
    )
    return BlockwiseToMeOutput(summary, compressed, x[:, :num_prefix], x, list(schedule))


def blockwise_tome_forward(
    model: RadioModel,
    pixel_values: Tensor,
    num_tokens: int,
    *,
    schedule: Sequence[int] | None = None,
    proportional: bool = True,
) -> BlockwiseToMeOutput:
    """Run ``model`` with ToMe inside every block, down to ``num_tokens`` patch tokens.

    pixel_values: [B, 3, H, W] RGB in [0, 1], as ``RadioModel.forward`` takes it (the model's
        ``input_conditioner`` normalises it here too); H, W multiples of the patch size; the
        dtype of the model's weights.
    num_tokens:   K, 1 <= K <= h*w (and >= ``min_reachable(h*w, depth)``); K = h*w is the
        plain model.
    schedule:     r_i per block; default ``merge_schedule(h*w, K, depth)``. The same r for
        every image of the batch, so shapes stay rectangular.
    proportional: add log(size) of each key to the attention logits (ToMe's default for
        off-the-shelf models; False is ToMe's ``prop_attn=False``).
    """
    adapter = radio_adapter(model)
    return blockwise_forward(
        adapter, pixel_values, num_tokens, schedule=schedule, proportional=proportional
    )


def _check_pixels(pixel_values: Tensor, patch_size: int, channels: int) -> tuple[int, int]:
    if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else None
        raise ValueError(
            f"pixel_values must be a tensor [B, {channels}, H, W] (packed or video input is "
            f"not supported by block-wise ToMe); got shape {shape}"
        )
    b, c, height, width = pixel_values.shape
    if b == 0 or c != channels:
        raise ValueError(
            f"pixel_values must be [B >= 1, {channels}, H, W]; got {tuple(pixel_values.shape)}"
        )
    if height % patch_size or width % patch_size or not height or not width:
        raise ValueError(
            f"image size {height}x{width} is not a positive multiple of the patch size "
            f"{patch_size}; resize it with the encoder's image processor"
        )
    return height // patch_size, width // patch_size

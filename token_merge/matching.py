"""Bipartite soft matching primitives (ToMe / ToMeSD style) as small pure functions.

A *matching* maps N input tokens onto M <= N output tokens. It is stored as an
``assignment`` tensor [B, N] of int64 in [0, M): the output slot each input token went to.
Everything else follows from it:

- ``merge_tokens(x, assignment, M, sizes)``: size-weighted mean of each slot's members;
- ``unmerge(tokens, assignment)``: copy every output token back to all its members;
- ``compose(first, second)``: the assignment of two successive rounds (block-wise ToMe).

Output slots are ordered by the raster position of their *representative* (the destination
token, or the source token that stayed unmerged), so a merged sequence keeps reading order.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

# Norms below this count as zero: cosine similarity with a zero vector is 0, never NaN.
_EPS = 1e-12


class TomePlan(NamedTuple):
    """How a strided single-round ToMe reaches K tokens on an h x w grid."""

    stride: tuple[int, int]  # window (sy, sx); one destination per full window
    num_dst: int  # D = (h // sy) * (w // sx)
    num_merged: int  # r = N - K source tokens merged away


@functools.lru_cache(maxsize=4096)
def choose_stride(h: int, w: int, num_tokens: int) -> tuple[int, int]:
    """The window (sy, sx) whose count of full windows D = (h//sy)(w//sx) is the largest D <= K.

    Ties are broken by (1) the most grid cells covered by full windows, so destinations are
    spread over the whole image, (2) the squarest window, (3) the smaller sy. Examples:
    48x48, K=256 -> (3, 3); 48x48, K=196 -> (3, 4); 64x64, K=512 -> (2, 4).
    """
    best_key: tuple[int, int, int, int] | None = None
    best = (h, w)
    for sy in range(1, h + 1):
        rows = h // sy
        for sx in range(1, w + 1):
            cols = w // sx
            num_dst = rows * cols
            if num_dst > num_tokens:
                continue
            key = (num_dst, rows * sy * cols * sx, -abs(sy - sx), -sy)
            if best_key is None or key > best_key:
                best_key, best = key, (sy, sx)
    return best


def plan_tome(h: int, w: int, num_tokens: int, stride: tuple[int, int] | None = None) -> TomePlan:
    """Stride, destination count D and merge count r = N - K for a strided ToMe to K tokens.

    Assumes validated arguments (1 <= K <= h*w); an explicit ``stride`` must satisfy D <= K.
    """
    sy, sx = stride if stride is not None else choose_stride(h, w, num_tokens)
    return TomePlan((sy, sx), (h // sy) * (w // sx), h * w - num_tokens)


def strided_destinations(
    h: int,
    w: int,
    stride: tuple[int, int],
    random: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Raster positions [D] (sorted) of one destination per full sy x sx window.

    The destination is the window's top-left cell, or with ``random=True`` a cell drawn per
    window from ``generator`` (the same draw for every image of a batch). Cells in leftover
    rows/columns (when sy or sx does not divide h or w) are never destinations.
    """
    sy, sx = stride
    rows, cols = h // sy, w // sx
    if random:
        cell = torch.randint(sy * sx, (rows, cols), generator=generator)
        off_y, off_x = cell // sx, cell % sx
    else:
        off_y = off_x = torch.zeros(rows, cols, dtype=torch.long)
    y = torch.arange(rows)[:, None] * sy + off_y
    x = torch.arange(cols)[None, :] * sx + off_x
    return (y * w + x).flatten().sort().values


def alternating_destinations(num_tokens: int, start: int = 0) -> Tensor:
    """Every second position from ``start`` on ([start+1, start+3, ...]) as destinations.

    The partition of the original ToMe for sequences that no longer form a grid (block-wise
    merging inside a ViT); positions before ``start`` (cls/register tokens) should be passed
    to ``bipartite_soft_matching`` as ``protected``.
    """
    return torch.arange(start + 1, num_tokens, 2)


def bipartite_soft_matching(
    metric: Tensor,
    dst_idx: Tensor,
    num_merged: int,
    protected: Tensor | None = None,
) -> Tensor:
    """One round of bipartite soft matching; returns the assignment [B, N] onto N - r slots.

    metric:     [B, N, C] features to match on (the tokens themselves, or attention keys).
    dst_idx:    [D] positions that are destinations; every other position that is not
                ``protected`` is a source.
    num_merged: r, how many sources merge into their most cosine-similar destination: the r
                sources with the highest best-match scores (ties: the earlier source first).
                0 <= r <= number of sources.
    protected:  [P] positions that are neither source nor destination (kept as they are).

    Similarities are computed in float32 (float64 stays float64); zero vectors have
    similarity 0 with everything, so they never produce NaN.
    """
    batch, n, _ = metric.shape
    device = metric.device
    dst_idx = dst_idx.to(device)
    is_dst = torch.zeros(n, dtype=torch.bool, device=device)
    is_dst[dst_idx] = True
    is_src = ~is_dst
    if protected is not None:
        is_src[protected.to(device)] = False
    src_idx = is_src.nonzero().squeeze(1)
    if not 0 <= num_merged <= src_idx.numel():
        raise ValueError(
            f"num_merged must be in [0, {src_idx.numel()}] (the number of source tokens); "
            f"got {num_merged}"
        )

    with torch.no_grad():
        m = metric.to(torch.promote_types(metric.dtype, torch.float32))
        norms = m.norm(dim=-1)  # [B, N]; non-finite iff a value is (or the norm overflows)
        if not torch.isfinite(norms).all() and (bad := int((~torch.isfinite(m)).sum())):
            raise ValueError(f"metric has {bad} non-finite values (NaN or inf); all must be finite")
        norms = norms.clamp_min(_EPS)
        unit_dst_t = (m[:, dst_idx] / norms[:, dst_idx, None]).transpose(1, 2).contiguous()
        # Best destination of every token, sources and destinations alike: multiplying all N
        # rows costs a little more than the S source rows but saves copying them out of m.
        best, best_dst = (m @ unit_dst_t).max(dim=-1)  # [B, N]
        best, best_dst = best[:, src_idx], best_dst[:, src_idx]  # [B, S]
        score = best / norms[:, src_idx]  # cosine similarity of each source's best match
        order = score.argsort(dim=-1, descending=True, stable=True)
        merged = torch.zeros_like(score, dtype=torch.bool)
        merged.scatter_(1, order[:, :num_merged], True)

        # Output slots: destinations, protected tokens and unmerged sources, in raster order.
        is_rep = (~is_src).expand(batch, n).clone()
        is_rep[:, src_idx] = ~merged
        slot = is_rep.cumsum(dim=1) - 1  # [B, N]; the slot of each representative
        target = slot[:, dst_idx].gather(1, best_dst)  # slot of each source's best destination
        slot[:, src_idx] = torch.where(merged, target, slot[:, src_idx])
    return slot


def merge_tokens(
    x: Tensor, assignment: Tensor, num_out: int, sizes: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Size-weighted mean of the tokens assigned to each output slot.

    x [B, N, C], assignment [B, N] in [0, num_out), sizes [B, N] (members each input token
    already stands for; ones when None) -> (tokens [B, num_out, C] in x's dtype,
    sizes [B, num_out] float32). Arithmetic in float32 (float64 stays float64).
    """
    batch, n, c = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    flat = (assignment + torch.arange(batch, device=x.device)[:, None] * num_out).reshape(-1)
    weight = (
        torch.ones(batch * n, dtype=dtype, device=x.device)
        if sizes is None
        else sizes.reshape(-1).to(dtype)
    )
    values = x.reshape(batch * n, c).to(dtype)
    if sizes is not None:
        values = values * weight[:, None]
    total = torch.zeros(batch * num_out, dtype=dtype, device=x.device).index_add_(0, flat, weight)
    tokens = torch.zeros(batch * num_out, c, dtype=dtype, device=x.device)
    tokens.index_add_(0, flat, values)
    tokens /= total[:, None]
    return (
        tokens.reshape(batch, num_out, c).to(x.dtype),
        total.reshape(batch, num_out).to(torch.float32),
    )


def unmerge(tokens: Tensor, assignment: Tensor) -> Tensor:
    """Copy each output token back to all of its members: [B, M, C] x [B, N] -> [B, N, C]."""
    index = assignment[..., None].expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, index)


def compose(first: Tensor, second: Tensor) -> Tensor:
    """Assignment of two successive rounds: first [B, N] -> M slots, second [B, M] -> L slots."""
    return second.gather(1, first)

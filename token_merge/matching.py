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
import math
from typing import NamedTuple

import torch
from torch import Tensor

# Norms below this count as zero: cosine similarity with a zero vector is 0, never NaN.
_EPS = 1e-12


class TomePlan(NamedTuple):
    """How a strided single-round ToMe reaches K tokens on an h x w grid."""

    lattice: tuple[int, int]  # (ky, kx): windows down and across, one destination each
    num_dst: int  # D = ky * kx <= K
    num_merged: int  # r = N - K source tokens merged away
    stride: tuple[int, int] | None = None  # whole sy x sx windows (given, or fitting K exactly)


MAX_WINDOW_ASPECT = 2.0  # a window taller or wider than this is a strip (DESIGN section 4)


@functools.lru_cache(maxsize=4096)
def exact_stride(h: int, w: int, num_tokens: int) -> tuple[int, int] | None:
    """Whole sy x sx windows that tile the grid into exactly K windows with aspect <= 2
    (the squarest, then the smaller sy), or None. 48x48, K=256 -> (3, 3); 64x64, K=512 ->
    (2, 4); 48x36, K=256 -> None."""
    options = [
        (abs(sy - sx), sy, (sy, sx))
        for sy in range(1, h + 1)
        if h % sy == 0
        for sx in range(1, w + 1)
        if w % sx == 0
        and (h // sy) * (w // sx) == num_tokens
        and max(sy, sx) <= MAX_WINDOW_ASPECT * min(sy, sx)
    ]
    return min(options)[2] if options else None


@functools.lru_cache(maxsize=4096)
def choose_lattice(h: int, w: int, num_tokens: int) -> tuple[int, int]:
    """The lattice (ky, kx) of even windows: the most windows D = ky*kx <= K whose shape
    (h/ky x w/kx cells) is at most 2:1, the squarest windows among those, then the smaller ky.
    Grids too thin for any such lattice (1 x 100) take the squarest windows available."""
    best_key: tuple[int, float, int] | None = None
    best = (1, 1)
    for ky in range(1, h + 1):
        for kx in range(1, min(w, num_tokens // ky) + 1):
            skew = abs(math.log((h / ky) / (w / kx)))  # 0: square windows
            fits = skew <= math.log(MAX_WINDOW_ASPECT) + 1e-9
            key = (int(fits), ky * kx if fits else -skew, -skew if fits else ky * kx, -ky)
            if best_key is None or key > best_key:
                best_key, best = key, (ky, kx)
    return best


def plan_tome(h: int, w: int, num_tokens: int, stride: tuple[int, int] | None = None) -> TomePlan:
    """Lattice, destination count D and merge count r = N - K for a strided ToMe to K tokens.

    Whole windows where they fit K exactly (``exact_stride``); else an even lattice
    (``choose_lattice``) whose windows differ in size by at most one cell, the way adaptive
    pooling splits a grid. An explicit ``stride`` keeps plain whole windows, leftover rows and
    columns holding sources only (ToMeSD's partition). Assumes validated arguments
    (1 <= K <= h*w); an explicit ``stride`` must give D <= K.
    """
    stride = stride if stride is not None else exact_stride(h, w, num_tokens)
    if stride is not None:
        sy, sx = stride
        lattice = (h // sy, w // sx)
    else:
        lattice = choose_lattice(h, w, num_tokens)
    return TomePlan(lattice, lattice[0] * lattice[1], h * w - num_tokens, stride)


def plan_destinations(
    h: int, w: int, plan: TomePlan, random: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Raster positions [D] (sorted) of the plan's destinations: one per window, its top-left
    cell or (``random``) a cell drawn per window from ``generator``."""
    if plan.stride is not None:
        return strided_destinations(h, w, plan.stride, random, generator)
    ky, kx = plan.lattice
    ys, xs = _even_edges(h, ky), _even_edges(w, kx)
    top, left = ys[:-1], xs[:-1]  # [ky], [kx]
    if random:
        heights, widths = (ys[1:] - top)[:, None], (xs[1:] - left)[None, :]
        cell = torch.rand(ky, kx, generator=generator)
        off_y = (cell * heights).long().clamp_max(heights - 1)
        off_x = (torch.rand(ky, kx, generator=generator) * widths).long().clamp_max(widths - 1)
    else:
        off_y = off_x = torch.zeros(ky, kx, dtype=torch.long)
    y = top[:, None] + off_y
    x = left[None, :] + off_x
    return (y * w + x).flatten().sort().values


def _even_edges(size: int, parts: int) -> Tensor:
    """[parts + 1] window borders splitting ``size`` cells into ``parts`` near-equal windows
    (floor(i * size / parts), as adaptive pooling starts its windows)."""
    return torch.tensor([i * size // parts for i in range(parts + 1)], dtype=torch.long)


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
    dst_idx:    [D] positions that are destinations (any order; repeats count once); every
                other position that is not ``protected`` is a source. A source's best
                destination is its most similar one, the earliest in raster order on a tie.
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
    dst_idx = is_dst.nonzero().squeeze(1)  # sorted and unique: slots and ties in raster order
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
        if num_merged == src_idx.numel() and protected is None:
            return _merge_every_source(m, dst_idx)
        norms = m.norm(dim=-1)  # [B, N]; non-finite iff a value is (or the norm overflows)
        if not torch.isfinite(norms).all():
            _check_finite(m)
        norms = norms.clamp_min(_EPS)
        unit_dst = m[:, dst_idx] / norms[:, dst_idx, None]  # [B, D, C]
        # Best destination of every token, sources and destinations alike: multiplying all N
        # rows costs a little more than the S source rows but saves copying them out of m.
        best, best_dst = (m @ unit_dst.mT).max(dim=-1)  # [B, N]
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


def _merge_every_source(m: Tensor, dst_idx: Tensor) -> Tensor:
    """The assignment [B, N] when every token but the D destinations (``dst_idx``: sorted,
    unique) merges (D = K, the usual plan): nothing to rank; slot j is destination j.

    A source's best destination is the same by dot product as by cosine, so only the
    destinations are normalised; all N rows are multiplied, which costs less than copying
    the S sources out of m. Destination rows are overwritten with their own slot.
    """
    unit_dst = m.index_select(1, dst_idx)  # [B, D, C], a copy: normalised in place
    unit_dst /= unit_dst.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    best, slot = (m @ unit_dst.mT).max(dim=-1)  # [B, N]
    # A non-finite value anywhere in m makes its row's (or every row's) best non-finite.
    if not torch.isfinite(best).all():
        _check_finite(m)
    slot[:, dst_idx] = torch.arange(dst_idx.numel(), device=m.device)
    return slot


def _check_finite(metric: Tensor) -> None:
    if bad := int((~torch.isfinite(metric)).sum()):
        raise ValueError(f"metric has {bad} non-finite values (NaN or inf); all must be finite")


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

"""Compress an encoder's patch grid [B, h, w, C] to a budget of visual tokens.

Methods (all behind ``compress``):

- ``tome``: strided bipartite soft matching on the features (RADIOv2.5 paper, section 4.8),
  applied once at the encoder output; exactly K tokens for any h, w and 1 <= K <= h*w.
- ``unshuffle``: space-to-depth by s x s (InternVL's pixel shuffle, VILA's mlp_downsample):
  ceil(h/s) * ceil(w/s) tokens of s*s*C channels, zero-padded at the bottom/right edges.
- ``avgpool``: mean over a kh x kw partition of the grid with kh * kw = K cells.
- ``none``: every patch is a token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .matching import (
    TomePlan,
    bipartite_soft_matching,
    merge_tokens,
    plan_destinations,
    plan_tome,
)
from .matching import unmerge as unmerge_assignment

METHODS = ("tome", "unshuffle", "avgpool", "none")
DST_MODES = ("top-left", "random")


@dataclass
class Compressed:
    """The result of ``compress``.

    tokens:     [B, K, C'] in the input dtype (C' = C, or s*s*C for ``unshuffle``).
    sizes:      [B, K] float32, how many input patches each output token stands for.
    assignment: [B, h*w] int64, the output token each input patch (raster order) went to.
    grid_hw:    (h, w) of the input grid.
    method:     the method that produced it; ``scale`` is s for ``unshuffle``.
    """

    tokens: Tensor
    sizes: Tensor
    assignment: Tensor
    grid_hw: tuple[int, int]
    method: str
    scale: int | None = None

    @property
    def num_tokens(self) -> int:
        return self.tokens.shape[1]

    def unmerge(self) -> Tensor:
        """Back to one feature per input patch: [B, h*w, C] (exact inverse for ``unshuffle``)."""
        if self.method == "unshuffle":
            return _depth_to_space(self.tokens, self.grid_hw, self.scale)
        return unmerge_assignment(self.tokens, self.assignment)


def compress(
    grid: Tensor,
    method: str = "tome",
    num_tokens: int | None = None,
    *,
    stride: tuple[int, int] | None = None,
    dst: str = "top-left",
    seed: int = 0,
    metric: Tensor | None = None,
    scale: int | None = None,
) -> Compressed:
    """Compress a patch grid [B, h, w, C] to a fixed number of tokens.

    num_tokens: K. Required for ``tome`` and ``avgpool``; for ``unshuffle`` it picks the
        smallest s with ceil(h/s)*ceil(w/s) <= K when ``scale`` is not given; for ``none`` it
        must be h*w or None.
    stride:   ``tome`` whole windows (sy, sx), leftover rows/columns holding sources only
        (ToMeSD's partition); default (``plan_tome``): whole windows where they tile the grid
        into exactly K, else an even lattice of D <= K windows at most 2:1 (DESIGN section 4).
    dst:      ``tome`` destination cell per window: "top-left" or "random" (seeded by ``seed``,
        the same cells for every image of the batch).
    metric:   ``tome`` features to match on, [B, h, w, C_m]; default the grid itself.
    scale:    ``unshuffle`` factor s.

    Arithmetic is float32 whatever the input dtype; tokens come back in the input dtype.
    """
    # ToMe matching on the grid itself finds non-finite values from the token norms it needs
    # anyway; everything else pays one extra pass.
    _check_grid(grid, finite=not (method == "tome" and metric is None))
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    h, w = grid.shape[1:3]
    if method == "tome":
        return _tome(grid, check_budget(num_tokens, h, w, method), stride, dst, seed, metric)
    if method == "avgpool":
        return _avgpool(grid, check_budget(num_tokens, h, w, method))
    if method == "unshuffle":
        return _unshuffle(grid, resolve_unshuffle_scale(h, w, num_tokens, scale))
    if num_tokens is not None and num_tokens != h * w:
        raise ValueError(
            f"method 'none' keeps all h*w = {h * w} tokens of a {h}x{w} grid; got "
            f"num_tokens={num_tokens}. Pass num_tokens=None or choose a compressing method."
        )
    return _identity(grid)


def unmerge(tokens: Tensor | Compressed, assignment: Tensor | None = None) -> Tensor:
    """Copy every output token back to its member patches: [B, K, C] x [B, N] -> [B, N, C].

    Also takes a ``Compressed`` alone (``unmerge(out)``), which inverts ``unshuffle`` too.
    """
    if isinstance(tokens, Compressed):
        return tokens.unmerge()
    if assignment is None:
        raise ValueError("unmerge(tokens, assignment) needs the assignment [B, h*w]")
    return unmerge_assignment(tokens, assignment)


def reconstruction_error(
    grid: Tensor, compressed: Compressed, normalize: bool = False, reduction: str = "mean"
) -> Tensor:
    """MSE between the grid [B, h, w, C] and the unmerged tokens, computed in float32.

    normalize=True first standardises every channel with the grid's own mean and std (over
    batch and space), so errors of encoders with different feature scales compare.
    reduction: "mean" (a scalar) or "none" (one value per image, [B]).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    b, h, w, c = grid.shape
    if compressed.grid_hw != (h, w) or compressed.assignment.shape[0] != b:
        raise ValueError(
            f"compressed comes from a grid of batch {compressed.assignment.shape[0]} and size "
            f"{compressed.grid_hw}; got a grid of shape {tuple(grid.shape)}"
        )
    target = grid.reshape(b, h * w, c).float()
    approx = compressed.unmerge().float()
    if normalize:
        mean = target.mean(dim=(0, 1))
        std = target.std(dim=(0, 1)).clamp_min(1e-6)
        target, approx = (target - mean) / std, (approx - mean) / std
    per_image = (approx - target).pow(2).mean(dim=(1, 2))
    return per_image.mean() if reduction == "mean" else per_image


# --------------------------------------------------------------------------- methods


def _tome(
    grid: Tensor,
    num_tokens: int,
    stride: tuple[int, int] | None,
    dst: str,
    seed: int,
    metric: Tensor | None,
) -> Compressed:
    b, h, w, c = grid.shape
    plan = _check_tome_plan(h, w, num_tokens, stride)
    if dst not in DST_MODES:
        raise ValueError(f"dst must be one of {DST_MODES}; got {dst!r}")
    if plan.num_merged == 0:
        _check_grid(grid)  # nothing is matched, so check finiteness here
        return _identity(grid, method="tome")
    if metric is None:
        metric = grid
    elif metric.shape[:3] != grid.shape[:3]:
        raise ValueError(
            f"metric must have shape [B, h, w, C_m] = [{b}, {h}, {w}, ...] like the grid; "
            f"got {tuple(metric.shape)}"
        )
    generator = torch.Generator().manual_seed(seed) if dst == "random" else None
    dst_idx = plan_destinations(h, w, plan, dst == "random", generator)
    try:
        assignment = bipartite_soft_matching(metric.reshape(b, h * w, -1), dst_idx, plan.num_merged)
    except ValueError as err:
        if metric is grid:  # the grid is what the caller passed
            raise ValueError(str(err).replace("metric has", "grid has", 1)) from None
        raise
    tokens, sizes = merge_tokens(grid.reshape(b, h * w, c), assignment, num_tokens)
    return Compressed(tokens, sizes, assignment, (h, w), "tome")


def _avgpool(grid: Tensor, num_tokens: int) -> Compressed:
    b, h, w, c = grid.shape
    kh, kw = _pool_shape(h, w, num_tokens)
    rows = torch.arange(h, device=grid.device) * kh // h  # cell row of each grid row
    cols = torch.arange(w, device=grid.device) * kw // w
    cell = (rows[:, None] * kw + cols[None, :]).flatten()
    assignment = cell.expand(b, h * w)
    tokens, sizes = merge_tokens(grid.reshape(b, h * w, c), assignment, num_tokens)
    return Compressed(tokens, sizes, assignment.contiguous(), (h, w), "avgpool")


def _unshuffle(grid: Tensor, s: int) -> Compressed:
    b, h, w, c = grid.shape
    hh, ww = math.ceil(h / s), math.ceil(w / s)
    padded = torch.nn.functional.pad(grid, (0, 0, 0, ww * s - w, 0, hh * s - h))
    # [B, hh, s, ww, s, C] -> [B, hh, ww, s(dy), s(dx), C]: channel index (dy*s + dx)*C + c
    tokens = padded.reshape(b, hh, s, ww, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hh * ww, -1)
    rows = torch.arange(h, device=grid.device) // s
    cols = torch.arange(w, device=grid.device) // s
    cell = (rows[:, None] * ww + cols[None, :]).flatten()
    sizes = torch.bincount(cell, minlength=hh * ww).float().expand(b, -1).contiguous()
    return Compressed(tokens, sizes, cell.expand(b, -1).contiguous(), (h, w), "unshuffle", s)


def _identity(grid: Tensor, method: str = "none") -> Compressed:
    b, h, w, c = grid.shape
    assignment = torch.arange(h * w, device=grid.device).expand(b, -1).contiguous()
    sizes = torch.ones(b, h * w, device=grid.device)
    return Compressed(grid.reshape(b, h * w, c), sizes, assignment, (h, w), method)


def _depth_to_space(tokens: Tensor, grid_hw: tuple[int, int], s: int) -> Tensor:
    h, w = grid_hw
    b = tokens.shape[0]
    hh, ww = math.ceil(h / s), math.ceil(w / s)
    c = tokens.shape[-1] // (s * s)
    full = (
        tokens.reshape(b, hh, ww, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hh * s, ww * s, c)
    )
    return full[:, :h, :w].reshape(b, h * w, c)


# --------------------------------------------------------------------------- validation


def _check_grid(grid: Tensor, finite: bool = True) -> None:
    if not isinstance(grid, Tensor):
        raise ValueError(f"grid must be a torch.Tensor [B, h, w, C]; got {type(grid).__name__}")
    if grid.dim() != 4:
        raise ValueError(
            f"grid must have rank 4, [B, h, w, C]; got rank {grid.dim()} with shape "
            f"{tuple(grid.shape)}. A token sequence [B, N, C] must be reshaped to its grid."
        )
    if grid.numel() == 0:
        raise ValueError(f"grid is empty: shape {tuple(grid.shape)}; every dimension must be >= 1")
    if not grid.is_floating_point():
        raise ValueError(f"grid must be a floating-point tensor; got dtype {grid.dtype}")
    # A sum is one cheap pass and is non-finite whenever a value is; count only then
    # (a finite sum can also overflow, which is no error).
    if finite and not torch.isfinite(grid.sum()) and (bad := int((~torch.isfinite(grid)).sum())):
        raise ValueError(
            f"grid has {bad} non-finite values (NaN or inf); all values must be finite"
        )


def check_budget(num_tokens: int | None, h: int, w: int, method: str) -> int:
    """``num_tokens`` if it is a valid budget K for an h x w grid (1 <= K <= h*w), else a
    ValueError naming the method."""
    if num_tokens is None:
        raise ValueError(f"method {method!r} needs num_tokens (the budget K)")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int):
        raise ValueError(f"num_tokens must be an int; got {num_tokens!r}")
    if not 1 <= num_tokens <= h * w:
        raise ValueError(
            f"num_tokens must be in [1, h*w] = [1, {h * w}] for a {h}x{w} grid; got {num_tokens}"
        )
    return num_tokens


def _check_tome_plan(h: int, w: int, num_tokens: int, stride: tuple[int, int] | None) -> TomePlan:
    if stride is not None:
        ok = (
            len(stride) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in stride)
            and 1 <= stride[0] <= h
            and 1 <= stride[1] <= w
        )
        if not ok:
            raise ValueError(
                f"stride must be (sy, sx) with 1 <= sy <= h = {h} and 1 <= sx <= w = {w}; "
                f"got {stride!r}"
            )
        num_dst = (h // stride[0]) * (w // stride[1])
        if num_dst > num_tokens:
            raise ValueError(
                f"stride {tuple(stride)} makes {num_dst} destination windows on a {h}x{w} "
                f"grid, more than num_tokens = {num_tokens}; use a larger stride or "
                f"stride=None to choose one automatically"
            )
    return plan_tome(h, w, num_tokens, stride)


def _pool_shape(h: int, w: int, num_tokens: int) -> tuple[int, int]:
    """Cells (kh, kw), kh * kw = K, kh <= h, kw <= w, cell aspect closest to square."""
    options = [
        (kh, num_tokens // kh)
        for kh in range(1, min(h, num_tokens) + 1)
        if num_tokens % kh == 0 and num_tokens // kh <= w
    ]
    if not options:
        near = sorted(
            {kh * kw for kh in range(1, h + 1) for kw in range(1, w + 1)},
            key=lambda k: (abs(k - num_tokens), k),
        )[:4]
        raise ValueError(
            f"avgpool cannot split a {h}x{w} grid into exactly num_tokens = {num_tokens} cells "
            f"(no kh * kw = {num_tokens} with kh <= {h}, kw <= {w}); nearest possible: "
            f"{sorted(near)}"
        )
    return min(options, key=lambda k: (abs(math.log((h / k[0]) / (w / k[1]))), k[0]))


def resolve_unshuffle_scale(h: int, w: int, num_tokens: int | None, scale: int | None) -> int:
    """The unshuffle scale s: ``scale`` as given (checked against ``num_tokens``), else the
    smallest s whose ceil(h/s) * ceil(w/s) fits ``num_tokens``, else 2."""
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be an int >= 1; got {scale!r}")
        count = math.ceil(h / scale) * math.ceil(w / scale)
        if num_tokens is not None and num_tokens != count:
            raise ValueError(
                f"unshuffle with scale {scale} gives {count} tokens for a {h}x{w} grid, not "
                f"num_tokens = {num_tokens}; pass only one of scale and num_tokens"
            )
        return scale
    if num_tokens is None:
        return 2
    check_budget(num_tokens, h, w, "unshuffle")
    return next(
        s for s in range(1, max(h, w) + 1) if math.ceil(h / s) * math.ceil(w / s) <= num_tokens
    )

"""Encoder analysis: scale equivariance (paper A.5, Table 2) and PCA pictures (paper Figure 3).

Pure functions on feature grids; nothing here runs a model (``recipes.encoder_analysis`` does).

    >>> score = scale_equivariance([g256, g512, g1024])     # each [C, h_i, w_i]; lower = better
    >>> basis = fit_pca([f256, f512, f1024])                 # each [h_i, w_i, C]
    >>> rgb = pca_image(f512, basis)                         # [h, w, 3] in [0, 1]

Note the two layouts: ``scale_equivariance`` takes channel-first grids (as the paper's
formulas), the PCA functions take the encoder's channel-last ``EncoderOutput.grid[0]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ----------------------------------------------------------------------- scale equivariance


@dataclass
class ScaleEquivariance:
    """What ``scale_equivariance_details`` measured.

    score:          mean of ``per_channel`` (= mean of ``per_location``): the paper's number.
    per_channel:    [C] scale variance of each channel, averaged over space.
    per_location:   [h, w] scale variance at each cell of the reference grid, averaged over C.
    reference_size: (h, w) of the smallest grid, the size everything was resized to.
    sizes:          (h_i, w_i) of every input grid, in input order.
    """

    score: float
    per_channel: Tensor
    per_location: Tensor
    reference_size: tuple[int, int]
    sizes: list[tuple[int, int]]


def scale_equivariance(
    feature_grids: Sequence[Tensor],
    *,
    unbiased: bool = True,
    antialias: bool = False,
    eps: float = 1e-6,
) -> float:
    """Scale variance of one image's features at several resolutions (paper A.5); lower = more
    scale-equivariant. ``feature_grids``: >= 2 tensors [C, h_i, w_i] with the same C.

    See ``scale_equivariance_details`` for the exact recipe and the settings.
    """
    return scale_equivariance_details(
        feature_grids, unbiased=unbiased, antialias=antialias, eps=eps
    ).score


def scale_equivariance_details(
    feature_grids: Sequence[Tensor],
    *,
    unbiased: bool = True,
    antialias: bool = False,
    eps: float = 1e-6,
) -> ScaleEquivariance:
    """DESIGN.md section 5 / paper A.5, step by step:

    1. the reference grid is the one with the fewest cells h*w (the first one on a tie);
    2. its per-channel mean m [C] and variance v [C] over space;
    3. every grid is normalised as (x - m) / sqrt(v + eps);
    4. every normalised grid is resized bilinearly to the reference size;
    5. the resized grids are stacked on a new scale axis and the variance is taken along it;
    6. that variance [C, h, w] is averaged over space and channels.

    Settings (they change the numbers, so they are explicit):

    - ``unbiased=True``: both variances use Bessel's correction (divide by n - 1), as
      ``torch.var`` does by default, which is what a reference ``x.var(dim=...)`` computes.
      Along the scale axis this makes the score the mean over scale pairs (i, j) of
      ``0.5 * mean((x_i - x_j) ** 2)``, so its expected value does not depend on how many
      resolutions are compared (population variance would scale it by (N - 1) / N), and for
      unit-variance features it reads as ``1 - correlation`` between scales. In step 2 the
      correction changes the score by a factor (n - 1) / n only (n = reference cells).
    - ``antialias=False`` (default, DESIGN.md's "bilinearly resize"): plain
      ``F.interpolate(..., mode="bilinear")``. ``antialias=True`` low-pass filters when
      downsampling (PyTorch's antialiased bilinear, a triangle filter widened by the scale
      factor): a 4x smaller grid otherwise reads 4 of every 16 cells, so fine detail the
      high resolution legitimately resolves aliases into the score.
      ``align_corners=False`` always (cells are areas; the same as image resizing).
    - ``eps`` keeps constant channels finite: they normalise to 0 and add nothing. It is
      absolute, so a channel whose variance is near ``eps`` is damped (1e-6 is far below
      the unit-scale variances of normalised encoder features).

    Computed in float64 whatever the input dtype (bf16 grids would otherwise round the
    differences that the score is made of).
    """
    grids = _check_grids(feature_grids)
    sizes = [(g.shape[1], g.shape[2]) for g in grids]
    ref = min(range(len(grids)), key=lambda i: sizes[i][0] * sizes[i][1])
    ref_size = sizes[ref]
    smallest = grids[ref]
    mean = smallest.mean(dim=(1, 2), keepdim=True)  # [C, 1, 1]
    var = smallest.var(dim=(1, 2), keepdim=True, correction=int(unbiased))
    scale = torch.rsqrt(var + eps)
    resized = [_resize((g - mean) * scale, ref_size, antialias) for g in grids]
    stacked = torch.stack(resized)  # [N, C, h, w]
    scale_var = stacked.var(dim=0, correction=int(unbiased))  # [C, h, w]
    return ScaleEquivariance(
        score=float(scale_var.mean()),
        per_channel=scale_var.mean(dim=(1, 2)),
        per_location=scale_var.mean(dim=0),
        reference_size=ref_size,
        sizes=sizes,
    )


def _resize(grid: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """[C, h, w] -> [C, *size], bilinear, align_corners=False (same size: the grid itself)."""
    if tuple(grid.shape[1:]) == tuple(size):
        return grid
    # antialias only acts when shrinking; growing is plain bilinear either way.
    out = F.interpolate(
        grid[None], size=size, mode="bilinear", align_corners=False, antialias=antialias
    )
    return out[0]


def _check_grids(feature_grids: Sequence[Tensor]) -> list[Tensor]:
    grids = list(feature_grids)
    if len(grids) < 2:
        raise ValueError(
            f"scale equivariance compares >= 2 resolutions; got {len(grids)} grid(s). Encode the "
            "image at two or more resolutions (e.g. 256, 512, 1024)."
        )
    for i, g in enumerate(grids):
        if not isinstance(g, Tensor) or g.dim() != 3:
            shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(
                f"feature grid {i} must be a tensor [C, h, w]; got {shape}. An encoder grid "
                "[1, h, w, C] becomes one with grid[0].permute(2, 0, 1)."
            )
        if g.shape[1] == 0 or g.shape[2] == 0:
            raise ValueError(f"feature grid {i} is empty: shape {tuple(g.shape)}")
    channels = [g.shape[0] for g in grids]
    if len(set(channels)) != 1:
        raise ValueError(
            f"all feature grids must have the same number of channels C; got {channels} "
            "(shapes must be [C, h, w], channel first)"
        )
    return [g.detach().to(torch.float64) for g in grids]


# ----------------------------------------------------------------------- PCA pictures


@dataclass
class PCABasis:
    """Three principal directions of patch features, and how to turn them into colours.

    mean:       [C] feature mean that is subtracted before projecting.
    components: [3, C] unit principal directions, largest variance first; each one's
                largest-magnitude loading is positive (a fixed sign, so pictures are stable).
                Rows beyond the feature rank (C < 3) are zero and paint 0.5.
    low, high:  [3] projection values mapped to 0 and 1 (robust percentiles of the fit data).
    """

    mean: Tensor
    components: Tensor
    low: Tensor
    high: Tensor

    def project(self, grid: Tensor) -> Tensor:
        """[h, w, C] -> [h, w, 3] coordinates along the components (before colour scaling)."""
        _check_hwc(grid, "grid")
        if grid.shape[-1] != self.mean.shape[0]:
            raise ValueError(
                f"grid has C={grid.shape[-1]} channels but the PCA basis was fitted on "
                f"C={self.mean.shape[0]}; fit the basis on grids of the same encoder output"
            )
        x = grid.detach().to(self.mean)
        return (x - self.mean) @ self.components.T


def fit_pca(grids: Sequence[Tensor], *, percentiles: tuple[float, float] = (1.0, 99.0)) -> PCABasis:
    """One PCA basis for several grids [h_i, w_i, C] (e.g. one image at several resolutions),
    so that the same colour means the same feature direction in every picture.

    Every grid weighs the same in the mean and covariance (a 64x64 grid does not outvote a
    16x16 one 16:1). ``low``/``high`` are the lowest per-grid ``percentiles[0]`` and highest
    per-grid ``percentiles[1]`` of each component, so every picture clips at most that tail.
    """
    grids = list(grids)
    if not grids:
        raise ValueError("fit_pca needs at least one grid [h, w, C]")
    lo_q, hi_q = percentiles
    if not 0 <= lo_q < hi_q <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles}")
    flats = []
    for i, g in enumerate(grids):
        _check_hwc(g, f"grid {i}")
        flats.append(g.detach().reshape(-1, g.shape[-1]).to(torch.float64))
    channels = {f.shape[1] for f in flats}
    if len(channels) != 1:
        raise ValueError(
            f"all grids must have the same C (channel-last [h, w, C]); got {sorted(channels)}"
        )
    c = flats[0].shape[1]
    mean = torch.stack([f.mean(dim=0) for f in flats]).mean(dim=0)
    cov = torch.stack([(f - mean).T @ (f - mean) / f.shape[0] for f in flats]).mean(dim=0)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues; columns are eigenvectors
    top = vectors.flip(-1)[:, : min(3, c)].T  # [k, C], largest first
    # Fix the sign: largest-magnitude loading positive (eigh's sign is arbitrary).
    pivot = top.gather(1, top.abs().argmax(dim=1, keepdim=True))
    top = top * torch.where(pivot < 0, -1.0, 1.0).to(top)
    components = torch.zeros(3, c, dtype=torch.float64)
    components[: top.shape[0]] = top
    projected = [(f - mean) @ components.T for f in flats]  # each [n_i, 3]
    low = torch.stack([p.quantile(lo_q / 100, dim=0) for p in projected]).amin(dim=0)
    high = torch.stack([p.quantile(hi_q / 100, dim=0) for p in projected]).amax(dim=0)
    return PCABasis(mean=mean, components=components, low=low, high=high)


def pca_image(grid: Tensor, basis: PCABasis | None = None) -> Tensor:
    """First three principal components of a grid [h, w, C] as RGB [h, w, 3] in [0, 1]
    (float32). ``basis``: a shared ``fit_pca`` basis; None fits one on this grid alone.

    Each component is scaled by the basis' robust range (1st..99th percentile by default)
    and clipped; a component without spread (constant features, C < 3) paints 0.5.
    """
    _check_hwc(grid, "grid")
    if basis is None:
        basis = fit_pca([grid])
    coords = basis.project(grid)
    span = basis.high - basis.low
    flat = span <= 1e-12 * (1 + basis.high.abs())  # no spread: mid-grey, not 0/0
    scaled = (coords - basis.low) / torch.where(flat, 1.0, span)
    scaled = torch.where(flat, 0.5, scaled)
    return scaled.clamp(0, 1).to(torch.float32)


def _check_hwc(grid: Tensor, name: str) -> None:
    if not isinstance(grid, Tensor) or grid.dim() != 3:
        shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise ValueError(
            f"{name} must be a tensor [h, w, C] (channel last, as EncoderOutput.grid[0]); "
            f"got {shape}"
        )
    if 0 in grid.shape:
        raise ValueError(f"{name} is empty: shape {tuple(grid.shape)}")

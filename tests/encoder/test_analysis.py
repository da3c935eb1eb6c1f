"""encoder.analysis: the scale-equivariance measure (paper A.5) and PCA pictures."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from encoder.analysis import (
    fit_pca,
    pca_image,
    scale_equivariance,
    scale_equivariance_details,
)


def _bilinear(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, h, w] -> [C, *size]: the resize the measure documents (bilinear, align_corners=False,
    no antialiasing)."""
    return F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0]


def _grids(seed: int, c: int, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, h, w, generator=g, dtype=torch.float64) for h, w in sizes]


# ----------------------------------------------------------------------- hand reference


def _resize_1d(values: list[float], out_n: int, antialias: bool) -> list[float]:
    """Bilinear, align_corners=False; antialias: the triangle filter widened by the factor."""
    n = len(values)
    scale = n / out_n
    out = []
    for i in range(out_n):
        if antialias and scale > 1:
            center = (i + 0.5) * scale
            weights = [max(0.0, 1 - abs(j + 0.5 - center) / scale) for j in range(n)]
            out.append(sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights))
        else:
            src = max(0.0, (i + 0.5) * scale - 0.5)
            i0 = min(math.floor(src), n - 1)
            i1 = min(i0 + 1, n - 1)
            frac = src - i0
            out.append((1 - frac) * values[i0] + frac * values[i1])
    return out


def _resize_2d(plane: list[list[float]], size: tuple[int, int], antialias: bool):
    rows = [_resize_1d(row, size[1], antialias) for row in plane]  # along w
    cols = [_resize_1d([r[x] for r in rows], size[0], antialias) for x in range(size[1])]
    return [[cols[x][y] for x in range(size[1])] for y in range(size[0])]


def _variance(values: list[float], unbiased: bool) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - int(unbiased))


def _reference(grids, unbiased: bool, antialias: bool, eps: float) -> float:
    """Paper A.5 with plain Python loops."""
    planes = [g.tolist() for g in grids]  # [C][h][w]
    areas = [len(p[0]) * len(p[0][0]) for p in planes]
    ref = areas.index(min(areas))
    h, w = len(planes[ref][0]), len(planes[ref][0][0])
    total, count = 0.0, 0
    for c in range(len(planes[0])):
        cells = [v for row in planes[ref][c] for v in row]
        mean = sum(cells) / len(cells)
        std = math.sqrt(_variance(cells, unbiased) + eps)
        resized = []
        for p in planes:
            normed = [[(v - mean) / std for v in row] for row in p[c]]
            resized.append(_resize_2d(normed, (h, w), antialias))
        for y, x in itertools.product(range(h), range(w)):
            total += _variance([r[y][x] for r in resized], unbiased)
            count += 1
    return total / count


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("unbiased", [True, False])
def test_matches_a_hand_computation(unbiased, antialias):
    # the smallest grid is not first, and the factors are not integers
    grids = _grids(0, 3, [(7, 9), (3, 4), (5, 6), (12, 17)])
    got = scale_equivariance(grids, unbiased=unbiased, antialias=antialias, eps=1e-6)
    want = _reference(grids, unbiased, antialias, 1e-6)
    assert got == pytest.approx(want, rel=1e-12)


def test_is_zero_for_scale_consistent_grids():
    # constant per channel, at any sizes: normalises to exactly 0
    const = [torch.arange(4.0)[:, None, None].expand(4, h, w) for h, w in [(4, 6), (8, 12), (3, 5)]]
    assert scale_equivariance(const) == 0.0
    # a fine grid and its coarse version made with the measure's documented resize
    fine = _grids(1, 8, [(24, 32)])[0]
    coarse = _bilinear(fine, (6, 8))
    assert scale_equivariance([fine, coarse]) < 1e-25
    # a linear ramp is consistent at every scale for plain bilinear (no antialiasing)
    ramps = []
    for h, w in [(6, 8), (12, 16), (24, 32)]:
        y = (torch.arange(h, dtype=torch.float64) + 0.5) / h
        x = (torch.arange(w, dtype=torch.float64) + 0.5) / w
        ramps.append(torch.stack([y[:, None] + 0 * x, 2 * x[None] - y[:, None]]))
    assert scale_equivariance(ramps, antialias=False) < 1e-25
    # ... while the same grids differing by real content are not
    assert scale_equivariance([fine, coarse + 0.1 * torch.randn_like(coarse)]) > 1e-4


def test_grows_monotonically_with_noise():
    fine = _grids(2, 16, [(32, 32)])[0]
    # two scales: antialiased resizes do not compose (32->16->8 != 32->8), so a third
    # resized grid would not be exactly consistent
    base = [fine, _bilinear(fine, (8, 8))]
    noise = _grids(3, 16, [(32, 32), (8, 8)])
    scores = [
        scale_equivariance([b + s * n for b, n in zip(base, noise, strict=True)])
        for s in (0.0, 0.05, 0.1, 0.3, 1.0, 3.0)
    ]
    assert scores[0] < 1e-20
    assert all(a < b for a, b in itertools.pairwise(scores)), scores
    # unrelated unit-variance grids: unbiased scale variance reads as 1 - correlation ~ 1
    assert 0.85 < scale_equivariance(_grids(9, 16, [(8, 8), (8, 8)])) < 1.15


def test_invariant_to_per_channel_affine_maps_but_not_to_rescaling_one_scale():
    grids = _grids(4, 5, [(6, 8), (9, 12), (12, 16)])
    a = torch.tensor([3.0, -0.5, 20.0, 1e-2, -7.0], dtype=torch.float64)[:, None, None]
    b = torch.tensor([100.0, -3.0, 0.5, 2.0, 0.0], dtype=torch.float64)[:, None, None]
    plain = scale_equivariance(grids, eps=0)
    assert scale_equivariance([a * g + b for g in grids], eps=0) == pytest.approx(plain, rel=1e-10)
    # eps (1e-6) is absolute: negligible once channel variances are well above it
    assert scale_equivariance([10 * a * g + b for g in grids]) == pytest.approx(plain, rel=1e-4)
    # the normalisation comes from the smallest grid only: rescaling one other grid shows
    one_off = [grids[0], 2 * grids[1], grids[2]]
    assert scale_equivariance(one_off, eps=0) > 1.2 * plain


def test_reference_is_the_smallest_grid_whatever_the_order():
    grids = _grids(5, 4, [(10, 14), (5, 7), (8, 11)])
    details = scale_equivariance_details(grids)
    assert details.reference_size == (5, 7)
    assert details.sizes == [(10, 14), (5, 7), (8, 11)]
    assert details.per_channel.shape == (4,)
    assert details.per_location.shape == (5, 7)
    assert details.score == pytest.approx(float(details.per_channel.mean()), rel=1e-12)
    assert details.score == pytest.approx(float(details.per_location.mean()), rel=1e-12)
    for perm in itertools.permutations(grids):
        assert scale_equivariance(list(perm)) == pytest.approx(details.score, rel=1e-12)


def test_unbiased_flag_is_bessel_on_both_variances():
    grids = _grids(6, 3, [(4, 5), (8, 10), (6, 7)])
    n_cells, n_scales = 4 * 5, 3
    unbiased = scale_equivariance(grids, unbiased=True, eps=0)
    population = scale_equivariance(grids, unbiased=False, eps=0)
    ratio = n_cells / (n_cells - 1) * (n_scales - 1) / n_scales
    assert population == pytest.approx(unbiased * ratio, rel=1e-12)


def test_low_precision_grids_are_measured_in_float64():
    grids = [g.to(torch.bfloat16) for g in _grids(7, 4, [(4, 4), (8, 8)])]
    want = scale_equivariance([g.double() for g in grids])
    assert isinstance(scale_equivariance(grids), float)
    assert scale_equivariance(grids) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        ([torch.zeros(4, 3, 3)], r">= 2 resolutions; got 1"),
        (
            [torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 6, 6)],
            r"grid 0 must be a tensor \[C, h, w\]",
        ),
        ([torch.zeros(4, 3, 3), torch.zeros(5, 6, 6)], r"same number of channels C; got \[4, 5\]"),
        ([torch.zeros(4, 3, 3), torch.zeros(4, 0, 6)], r"grid 1 is empty"),
    ],
)
def test_bad_input_is_named(grids, message):
    with pytest.raises(ValueError, match=message):
        scale_equivariance(grids)


# ----------------------------------------------------------------------- PCA pictures


def _planted(seed: int = 0, h: int = 12, w: int = 10, c: int = 16):
    """Features with one dominant direction v, driven by a smooth signal t over the grid."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(c, generator=g, dtype=torch.float64)
    v /= v.norm()
    t = torch.linspace(-3, 3, h * w, dtype=torch.float64).reshape(h, w)
    noise = 0.05 * torch.randn(h, w, c, generator=g, dtype=torch.float64)
    return t[..., None] * v + noise + 4.0, v, t


def test_pca_picture_shape_range_and_dtype():
    grid, v, _ = _planted()
    picture = pca_image(grid.float())
    assert picture.shape == (12, 10, 3)
    assert picture.dtype == torch.float32
    assert picture.min() >= 0 and picture.max() <= 1
    # robust 1st..99th percentile scaling: a few cells clip, the rest spread over [0, 1]
    red = picture[..., 0].flatten()
    assert 1 <= int((red == 0).sum()) <= 3 and 1 <= int((red == 1).sum()) <= 3
    # one wild cell clips instead of squashing every other cell into one colour
    grid[0, 0] += 100 * v
    red = pca_image(grid)[..., 0].flatten()
    assert red[1:].std() > 0.2


def test_first_component_follows_a_planted_direction():
    grid, v, t = _planted()
    basis = fit_pca([grid])
    assert abs(float(basis.components[0] @ v)) > 0.999
    red = pca_image(grid, basis)[..., 0].double().flatten()
    corr = torch.corrcoef(torch.stack([red, t.flatten()]))[0, 1]
    assert abs(float(corr)) > 0.99


def test_pca_is_deterministic_with_a_fixed_sign():
    grid, _, _ = _planted(seed=3)
    basis = fit_pca([grid])
    pivots = basis.components.gather(1, basis.components.abs().argmax(1, keepdim=True))
    assert (pivots > 0).all()
    assert torch.equal(pca_image(grid), pca_image(grid.clone()))
    # the basis does not depend on the order of the cells
    shuffled = grid.reshape(-1, 16)[torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    other = fit_pca([shuffled.reshape(12, 10, 16)])
    torch.testing.assert_close(other.components, basis.components, rtol=0, atol=1e-10)


def test_shared_basis_weighs_grids_equally_and_keeps_colours_comparable():
    small, _, _ = _planted(seed=1, h=4, w=4)
    big = small.repeat_interleave(4, 0).repeat_interleave(4, 1)  # same content, 16x the cells
    shifted = small + 1.0
    basis = fit_pca([shifted, big])
    torch.testing.assert_close(basis.mean, (shifted.mean((0, 1)) + big.mean((0, 1))) / 2)
    # the same features get the same colour in both pictures
    torch.testing.assert_close(
        pca_image(big, basis)[::4, ::4], pca_image(small, basis), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError, match="fitted on C=16"):
        pca_image(torch.zeros(4, 4, 8), basis)


def test_degenerate_features_paint_mid_grey():
    assert torch.equal(pca_image(torch.full((3, 5, 8), 2.0)), torch.full((3, 5, 3), 0.5))
    two = pca_image(torch.randn(6, 6, 2, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(two[..., 2], torch.full((6, 6), 0.5))
    assert two[..., 0].std() > 0.1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: pca_image(torch.zeros(1, 4, 4, 8)), r"\[h, w, C\]"),
        (lambda: fit_pca([]), "at least one grid"),
        (lambda: fit_pca([torch.zeros(4, 4, 8), torch.zeros(4, 4, 9)]), "same C"),
        (lambda: fit_pca([torch.zeros(4, 4, 8)], percentiles=(50, 10)), "percentiles"),
    ],
)
def test_pca_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()

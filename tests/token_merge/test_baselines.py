"""unshuffle, avgpool, none; the module wrapper; reconstruction error; bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from token_merge import TokenCompressor, compress, reconstruction_error, unmerge


def arange_grid(b: int, h: int, w: int, c: int) -> torch.Tensor:
    return torch.arange(b * h * w * c, dtype=torch.float32).reshape(b, h, w, c)


# --------------------------------------------------------------------------- unshuffle


def test_unshuffle_hand_computed_with_zero_padding():
    # 3x3 grid, 1 channel, values 0..8, s = 2 -> 2x2 tokens of 4 channels (dy*2 + dx order)
    grid = torch.arange(9.0).reshape(1, 3, 3, 1)
    out = compress(grid, "unshuffle", scale=2)
    expected = torch.tensor([[0, 1, 3, 4], [2, 0, 5, 0], [6, 7, 0, 0], [8, 0, 0, 0]]).float()
    assert torch.equal(out.tokens[0], expected)
    assert torch.equal(out.sizes[0], torch.tensor([4.0, 2.0, 2.0, 1.0]))
    assert torch.equal(out.assignment[0], torch.tensor([0, 0, 1, 0, 0, 1, 2, 2, 3]))


@pytest.mark.parametrize("h,w,s", [(4, 6, 2), (5, 7, 2), (9, 9, 3), (1, 5, 2), (7, 3, 4)])
def test_unshuffle_counts_channels_and_inverts_exactly(h, w, s):
    grid = torch.randn(2, h, w, 3)
    out = compress(grid, "unshuffle", scale=s)
    assert out.tokens.shape == (2, math.ceil(h / s) * math.ceil(w / s), s * s * 3)
    assert torch.equal(unmerge(out), grid.reshape(2, h * w, 3))
    assert reconstruction_error(grid, out) == 0
    assert out.sizes.sum() == 2 * h * w


def test_unshuffle_matches_pixel_unshuffle_up_to_channel_order():
    grid = torch.randn(2, 8, 6, 5)
    out = compress(grid, "unshuffle", scale=2)
    ref = F.pixel_unshuffle(grid.permute(0, 3, 1, 2), 2)  # [B, C*4, 4, 3], channel c*4 + dy*2 + dx
    ref = ref.reshape(2, 5, 4, 12).permute(0, 3, 2, 1).reshape(2, 12, 20)  # -> (dy*2+dx)*C + c
    assert torch.equal(out.tokens, ref)


def test_unshuffle_scale_from_budget():
    grid = torch.randn(1, 32, 32, 4)
    assert compress(grid, "unshuffle", num_tokens=256).tokens.shape == (1, 256, 16)
    assert compress(grid, "unshuffle", num_tokens=100).scale == 4  # 8x8 = 64 <= 100 < 11x11
    with pytest.raises(ValueError, match=r"scale 2 gives 256 tokens.*not num_tokens = 200"):
        compress(grid, "unshuffle", num_tokens=200, scale=2)


# --------------------------------------------------------------------------- avgpool


@pytest.mark.parametrize("h,w,k", [(8, 8, 16), (48, 48, 256), (12, 6, 8), (6, 9, 6)])
def test_avgpool_equals_adaptive_avg_pool_when_divisible(h, w, k):
    grid = torch.randn(2, h, w, 7)
    out = compress(grid, "avgpool", num_tokens=k)
    kh = next(
        a
        for a in range(1, k + 1)
        if k % a == 0
        and h % a == 0
        and w % (k // a) == 0
        and abs(math.log((h / a) / (w / (k // a)))) < 1e-9
    )
    ref = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), (kh, k // kh))
    torch.testing.assert_close(out.tokens, ref.flatten(2).transpose(1, 2))


def test_avgpool_hand_computed_partition_on_an_uneven_grid():
    # 3x3 -> 2x2 cells: rows {0,1},{2}; cols {0,1},{2}
    grid = torch.arange(9.0).reshape(1, 3, 3, 1)
    out = compress(grid, "avgpool", num_tokens=4)
    expected = torch.tensor([(0 + 1 + 3 + 4) / 4, (2 + 5) / 2, (6 + 7) / 2, 8.0])
    torch.testing.assert_close(out.tokens[0, :, 0], expected)
    assert torch.equal(out.sizes[0], torch.tensor([4.0, 2.0, 2.0, 1.0]))


def test_avgpool_impossible_budget_names_the_alternatives():
    with pytest.raises(
        ValueError, match=r"exactly num_tokens = 5 .*nearest possible: \[2, 3, 4, 6\]"
    ):
        compress(torch.randn(1, 2, 3, 1), "avgpool", num_tokens=5)


# --------------------------------------------------------------------------- none, module


def test_none_is_the_flattened_grid():
    grid = torch.randn(2, 3, 4, 5)
    out = compress(grid, "none")
    assert torch.equal(out.tokens, grid.reshape(2, 12, 5))
    with pytest.raises(ValueError, match="keeps all h\\*w = 12 tokens"):
        compress(grid, "none", num_tokens=6)


@pytest.mark.parametrize(
    "kwargs,h,w,tokens,dim",
    [
        ({"method": "tome", "num_tokens": 20}, 9, 7, 20, 8),
        ({"method": "avgpool", "num_tokens": 12}, 9, 8, 12, 8),
        ({"method": "unshuffle"}, 9, 7, 20, 32),
        ({"method": "unshuffle", "num_tokens": 16}, 9, 7, 9, 72),
        ({"method": "none"}, 9, 7, 63, 8),
    ],
)
def test_module_reports_what_it_produces(kwargs, h, w, tokens, dim):
    module = TokenCompressor(**kwargs)
    assert module.num_output_tokens(h, w) == tokens
    assert module.output_dim(8, (h, w)) == dim
    out = module(torch.randn(2, h, w, 8))
    assert out.tokens.shape == (2, tokens, dim)
    assert kwargs["method"] in repr(module)
    assert list(module.parameters()) == []


# --------------------------------------------------------------------------- reconstruction


def test_reconstruction_error_orders_methods_and_normalizes():
    gen = torch.Generator().manual_seed(0)
    # a "page": blank background and two lines of "text" drawn from three glyph prototypes
    glyphs = torch.randn(3, 8, generator=gen) * 3
    grid = torch.zeros(1, 16, 16, 8)
    grid[0, 3:5, 2:14] = glyphs[torch.randint(0, 3, (2, 12), generator=gen)]
    grid[0, 8:10, 1:12] = glyphs[torch.randint(0, 3, (2, 11), generator=gen)]
    grid += 0.01 * torch.randn(grid.shape, generator=gen)
    tome = reconstruction_error(grid, compress(grid, "tome", num_tokens=32))
    pool = reconstruction_error(grid, compress(grid, "avgpool", num_tokens=32))
    assert tome < 0.5 * pool  # ToMe keeps the informative patches, pooling smears them
    scaled = grid * 100  # cosine matching is scale-free, so the same tokens merge
    raw = reconstruction_error(scaled, compress(scaled, "tome", num_tokens=32))
    torch.testing.assert_close(raw, tome * 1e4, rtol=1e-4, atol=0)
    torch.testing.assert_close(
        reconstruction_error(scaled, compress(scaled, "tome", num_tokens=32), normalize=True),
        reconstruction_error(grid, compress(grid, "tome", num_tokens=32), normalize=True),
        rtol=1e-3,
        atol=1e-6,
    )
    per_image = reconstruction_error(grid, compress(grid, "tome", num_tokens=32), reduction="none")
    assert per_image.shape == (1,)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "grid,kwargs,message",
    [
        (torch.randn(2, 9, 4), {"num_tokens": 4}, r"rank 4, \[B, h, w, C\]; got rank 3"),
        (torch.randn(1, 0, 4, 3), {"num_tokens": 1}, r"grid is empty: shape \(1, 0, 4, 3\)"),
        (
            torch.randn(1, 3, 4, 2),
            {"num_tokens": 0},
            r"num_tokens must be in \[1, h\*w\] = \[1, 12\].*got 0",
        ),
        (torch.randn(1, 3, 4, 2), {"num_tokens": 13}, r"\[1, 12\] for a 3x4 grid; got 13"),
        (torch.randn(1, 3, 4, 2), {"num_tokens": 2.5}, r"num_tokens must be an int; got 2.5"),
        (torch.randn(1, 3, 4, 2), {}, r"method 'tome' needs num_tokens"),
        (
            torch.ones(1, 3, 4, 2).index_fill_(1, torch.tensor([1]), float("nan")),
            {"num_tokens": 3},
            r"8 non-finite values",
        ),
        (torch.randn(1, 3, 4, 2), {"method": "pool", "num_tokens": 3}, r"method must be one of"),
        (
            torch.randn(1, 6, 6, 2),
            {"num_tokens": 3, "stride": (2, 2)},
            r"stride \(2, 2\) makes 9 destination windows .* more than num_tokens = 3",
        ),
        (torch.randn(1, 6, 6, 2), {"num_tokens": 3, "stride": (7, 1)}, r"1 <= sy <= h = 6"),
        (torch.randn(1, 6, 6, 2), {"num_tokens": 3, "dst": "centre"}, r"dst must be one of"),
        (torch.randint(0, 3, (1, 3, 3, 2)), {"num_tokens": 3}, r"floating-point"),
    ],
)
def test_bad_input_raises_a_value_error_that_names_it(grid, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compress(grid, **kwargs)


def test_reconstruction_error_rejects_a_mismatched_grid():
    out = compress(torch.randn(1, 4, 4, 2), "tome", num_tokens=4)
    with pytest.raises(ValueError, match=r"grid of batch 1 and size \(4, 4\)"):
        reconstruction_error(torch.randn(1, 4, 5, 2), out)


@pytest.mark.parametrize(
    "method,k", [("tome", 12), ("tome", 3), ("avgpool", 4), ("none", None), ("unshuffle", None)]
)
def test_non_finite_values_are_rejected_by_every_method(method, k):
    grid = torch.randn(1, 3, 4, 2)
    grid[0, 1, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="grid has 1 non-finite values"):
        compress(grid, method, num_tokens=k)


def test_non_finite_metric_is_rejected():
    metric = torch.randn(1, 3, 4, 2)
    metric[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="metric has 1 non-finite values"):
        compress(torch.randn(1, 3, 4, 2), "tome", num_tokens=3, metric=metric)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize("position", [(0, 0, 0), (1, 1, 1), (3, 2, 0)], ids=["dst", "src", "src2"])
def test_non_finite_values_are_caught_when_every_source_merges(value, position):
    # 4x4 at K = 4: whole 2x2 windows, D = K, so every source merges and matching skips the
    # source norms (the path that finds non-finite values through the similarities instead).
    grid = torch.randn(2, 4, 4, 3)
    grid[(1, *position)] = value
    with pytest.raises(ValueError, match="grid has 1 non-finite values"):
        compress(grid, "tome", num_tokens=4)

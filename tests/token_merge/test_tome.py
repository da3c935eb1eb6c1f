"""ToMe at the encoder output: budget, conservation, the paper's arithmetic, ToMeSD semantics."""

from __future__ import annotations

import pytest
import torch

from token_merge import (
    bipartite_soft_matching,
    compose,
    compress,
    exact_stride,
    merge_tokens,
    plan_destinations,
    plan_tome,
    reconstruction_error,
    strided_destinations,
    unmerge,
)


def structured_grid(b: int, h: int, w: int, c: int, seed: int = 0, noise: float = 0.05):
    """Piecewise-constant blobs (what encoder features of documents look like) plus noise."""
    gen = torch.Generator().manual_seed(seed)
    palette = torch.randn(6, c, generator=gen)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grids = []
    for _ in range(b):
        cy, cx = torch.randint(0, max(h, 1), (2,), generator=gen)
        region = ((ys - cy).abs() // 3 + (xs - cx).abs() // 4) % 6
        grids.append(palette[region] + noise * torch.randn(h, w, c, generator=gen))
    return torch.stack(grids)


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize("h,w", [(h, w) for h in range(1, 10) for w in range(1, 10)])
def test_exact_budget_for_every_k_on_small_grids(h, w):
    grid = structured_grid(2, h, w, 5, seed=h * 10 + w)
    for k in range(1, h * w + 1):
        out = compress(grid, "tome", num_tokens=k)
        assert out.tokens.shape == (2, k, 5)
        assert out.assignment.shape == (2, h * w)
        # every output slot has at least one member and sizes count them
        counts = torch.stack([torch.bincount(a, minlength=k) for a in out.assignment])
        assert (counts >= 1).all()
        assert torch.equal(out.sizes, counts.float())


@pytest.mark.parametrize("h,w", [(1, 50), (50, 1), (48, 48), (37, 23)])
def test_exact_budget_on_long_and_large_grids(h, w):
    grid = structured_grid(1, h, w, 8)
    n = h * w
    for k in sorted({1, 2, 3, n // 7 + 1, n // 2, n - 1, n, 196 % n + 1, 256 % n + 1}):
        out = compress(grid, "tome", num_tokens=k)
        assert out.tokens.shape[1] == k
        assert torch.bincount(out.assignment[0], minlength=k).min() >= 1


def test_k_equal_n_is_exact_identity():
    grid = structured_grid(2, 7, 9, 6)
    out = compress(grid, "tome", num_tokens=63)
    assert torch.equal(out.tokens, grid.reshape(2, 63, 6))
    assert torch.equal(out.assignment, torch.arange(63).expand(2, -1))
    assert torch.equal(out.sizes, torch.ones(2, 63))


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (7, 9), (48, 48)])
def test_k_one_is_the_global_mean(h, w):
    grid = structured_grid(3, h, w, 4)
    out = compress(grid, "tome", num_tokens=1)
    torch.testing.assert_close(out.tokens[:, 0], grid.mean(dim=(1, 2)))
    assert torch.equal(out.sizes, torch.full((3, 1), float(h * w)))


@pytest.mark.parametrize("h,w,k", [(7, 9, 10), (48, 48, 256), (48, 48, 196), (13, 5, 30)])
def test_conservation_of_mass(h, w, k):
    grid = structured_grid(2, h, w, 6)
    out = compress(grid, "tome", num_tokens=k)
    total = (out.sizes[..., None] * out.tokens).sum(dim=1)
    torch.testing.assert_close(total, grid.sum(dim=(1, 2)), rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------- the paper


@pytest.mark.parametrize(
    "h,w,k,lattice,num_merged,stride",
    [
        (48, 48, 256, (16, 16), 2048, (3, 3)),  # RADIOv2.5-H at 768 px: "ToMe r=2048"
        (48, 48, 196, (14, 14), 2108, None),  # "ToMe r=2108": even windows, D = K
        (32, 32, 256, (16, 16), 768, (2, 2)),  # 512 px: "ToMe r=768"
        (64, 64, 256, (16, 16), 3840, (4, 4)),  # 1024 px: "ToMe r=3840"
        (64, 64, 512, (32, 16), 3584, (2, 4)),  # "ToMe r=3584" at 512 tokens
        (27, 27, 9, (3, 3), 720, (9, 9)),  # Figure A3: 27x27 -> 9 tokens
        (48, 36, 256, (16, 16), 1472, None),  # a 4:3 page at 768 px: no more 1x7 strips
    ],
)
def test_the_papers_arithmetic(h, w, k, lattice, num_merged, stride):
    assert plan_tome(h, w, k) == (lattice, lattice[0] * lattice[1], num_merged, stride)


GRIDS = [(48, 36, 256), (36, 48, 256), (64, 48, 256), (50, 37, 256), (32, 24, 256)]
GRIDS += [(64, 64, 196), (32, 32, 196), (24, 32, 16)]


@pytest.mark.parametrize(("h", "w", "k"), GRIDS)
def test_even_windows_are_never_strips_and_nearly_fill_the_budget(h, w, k):
    plan = plan_tome(h, w, k)
    ky, kx = plan.lattice
    aspect = (h / ky) / (w / kx)
    assert max(aspect, 1 / aspect) <= 2 and 0.8 * k <= plan.num_dst <= k
    dst = plan_destinations(h, w, plan)
    assert len(dst) == plan.num_dst and len(set(dst.tolist())) == plan.num_dst
    # one destination in every window: window sizes differ by at most one cell each way
    rows, cols = sorted({int(d) // w for d in dst}), sorted({int(d) % w for d in dst})
    assert len(rows) == ky and len(cols) == kx
    for edges, size in ((rows, h), (cols, w)):
        sizes = [b - a for a, b in zip([*edges, size][:-1], [*edges, size][1:], strict=True)]
        assert max(sizes) - min(sizes) <= 1 and edges[0] == 0


def test_whole_windows_are_used_only_where_they_fit_k_exactly():
    assert exact_stride(48, 48, 256) == (3, 3) and exact_stride(64, 64, 256) == (4, 4)
    assert exact_stride(48, 36, 256) is None and exact_stride(48, 48, 196) is None
    assert exact_stride(10, 1, 5) == (2, 1)  # a 2:1 window is still a window
    assert exact_stride(12, 1, 4) is None  # 3:1 would be a strip


# --------------------------------------------------------------------------- ToMeSD semantics


def reference_tome(x: torch.Tensor, h: int, w: int, stride, r: int):
    """ToMeSD single round (no_rand, mode "mean"), written plainly from its description.

    x [N, C] float64. Destinations: top-left cell of every full sy x sx window; everything else
    (leftover rows/columns included) is a source. Each source's best destination by cosine
    similarity; the r sources with the highest scores merge (mean) into it.
    Returns the unmerged reconstruction [N, C] and {source: destination} of merged sources.
    """
    sy, sx = stride
    dst = [wy * sy * w + wx * sx for wy in range(h // sy) for wx in range(w // sx)]
    src = [i for i in range(h * w) if i not in set(dst)]
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best, score = [], []
    for s in src:
        sims = [float(unit[s] @ unit[d]) for d in dst]
        j = max(range(len(dst)), key=lambda i: sims[i])  # first maximum
        best.append(dst[j])
        score.append(sims[j])
    order = sorted(range(len(src)), key=lambda i: -score[i])  # stable: earlier source first
    merged = {src[i]: best[i] for i in order[:r]}
    recon = x.clone()
    for d in dst:
        members = [d] + [s for s, t in merged.items() if t == d]
        recon[members] = x[members].mean(dim=0)
    return recon, merged


@pytest.mark.parametrize(
    "h,w,k,noise,stride",
    [
        (6, 6, 9, 0.05, (2, 2)),
        (7, 9, 12, 0.05, (2, 3)),
        (10, 13, 20, 0.1, (2, 3)),
        (11, 7, 5, 0.0, (5, 3)),
        (16, 16, 30, 0.02, (3, 3)),
    ],
)
def test_single_round_equals_tomesd_reference(h, w, k, noise, stride):
    grid = structured_grid(2, h, w, 8, seed=h + w, noise=noise).double()
    out = compress(grid, "tome", num_tokens=k, stride=stride)  # ToMeSD's whole windows
    plan = plan_tome(h, w, k, stride)
    for b in range(2):
        recon, merged = reference_tome(grid[b].reshape(h * w, 8), h, w, stride, plan.num_merged)
        torch.testing.assert_close(out.unmerge()[b], recon, rtol=1e-12, atol=1e-12)
        if noise > 0:  # without ties the merged pairs themselves must agree
            slot = out.assignment[b]
            ours = {
                s: d
                for s in range(h * w)
                for d in [int(x) for x in strided_destinations(h, w, stride)]
                if s != d and slot[s] == slot[d]
            }
            assert ours == merged


def test_output_order_follows_raster_position_of_representatives():
    h, w, k = 11, 9, 31  # D = 30 < K (31 is prime): a source stays unmerged among the destinations
    grid = structured_grid(1, h, w, 4)
    out = compress(grid, "tome", num_tokens=k)
    slot = out.assignment[0]
    dst = set(plan_destinations(h, w, plan_tome(h, w, k)).tolist())
    representative = []
    for j in range(k):
        members = (slot == j).nonzero().flatten().tolist()
        heads = [m for m in members if m in dst] or members  # a kept source is alone
        assert len(heads) == 1
        representative.append(heads[0])
    assert representative == sorted(representative)
    assert len(dst) < k


# --------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_in_same_dtype_out_float32_inside(dtype):
    grid = structured_grid(2, 12, 12, 16).to(dtype)
    out = compress(grid, "tome", num_tokens=20)
    ref = compress(grid.float(), "tome", num_tokens=20)
    assert out.tokens.dtype == dtype
    assert torch.equal(out.assignment, ref.assignment)
    assert torch.equal(out.tokens, ref.tokens.to(dtype))


def test_zero_vectors_make_no_nan():
    grid = torch.zeros(2, 6, 6, 4)
    grid[1, :3] = structured_grid(1, 3, 6, 4)[0]
    for k in (1, 5, 36):
        out = compress(grid, "tome", num_tokens=k)
        assert torch.isfinite(out.tokens).all()
        assert reconstruction_error(grid, out).isfinite()


def test_deterministic_and_batch_equals_one_by_one():
    grid = structured_grid(4, 16, 16, 32, noise=0.2)
    batch = compress(grid, "tome", num_tokens=40)
    again = compress(grid, "tome", num_tokens=40)
    assert torch.equal(batch.tokens, again.tokens)
    for b in range(4):
        alone = compress(grid[b : b + 1], "tome", num_tokens=40)
        assert torch.equal(alone.assignment[0], batch.assignment[b])
        torch.testing.assert_close(alone.tokens[0], batch.tokens[b], rtol=0, atol=1e-6)


def test_random_destinations_are_seeded_and_stay_in_their_window():
    h, w, stride = 9, 8, (3, 4)
    a = strided_destinations(h, w, stride, True, torch.Generator().manual_seed(1))
    b = strided_destinations(h, w, stride, True, torch.Generator().manual_seed(1))
    c = strided_destinations(h, w, stride, True, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    windows = sorted(((int(p) // w) // 3, (int(p) % w) // 4) for p in a)
    assert windows == [(y, x) for y in range(3) for x in range(2)]
    grid = structured_grid(1, h, w, 4)
    out1 = compress(grid, "tome", num_tokens=10, dst="random", seed=3)
    out2 = compress(grid, "tome", num_tokens=10, dst="random", seed=3)
    assert torch.equal(out1.assignment, out2.assignment) and out1.num_tokens == 10


def test_explicit_stride_and_metric():
    grid = structured_grid(1, 12, 12, 6)
    out = compress(grid, "tome", num_tokens=30, stride=(3, 3))  # D = 16 <= 30
    assert out.num_tokens == 30
    # matching on another metric changes who merges, not the budget
    metric = torch.randn(1, 12, 12, 3, generator=torch.Generator().manual_seed(0))
    other = compress(grid, "tome", num_tokens=30, metric=metric)
    assert other.num_tokens == 30 and not torch.equal(other.assignment, out.assignment)


# --------------------------------------------------------------------------- primitives


def test_running_sizes_weight_the_mean_and_rounds_compose():
    """Two rounds of merging with running sizes equal one direct size-weighted mean."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 5, generator=gen)
    first = bipartite_soft_matching(x, torch.arange(1, 12, 2), num_merged=4)  # 12 -> 8
    y, sizes = merge_tokens(x, first, 8)
    second = bipartite_soft_matching(y, torch.arange(1, 8, 2), num_merged=3)  # 8 -> 5
    z, sizes2 = merge_tokens(y, second, 5, sizes)
    total = compose(first, second)
    direct, direct_sizes = merge_tokens(x, total, 5)
    torch.testing.assert_close(z, direct)
    assert torch.equal(sizes2, direct_sizes)


def test_unmerge_copies_each_token_to_its_members():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assignment = torch.tensor([[1, 0, 1]])
    assert torch.equal(
        unmerge(tokens, assignment), torch.tensor([[[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]])
    )


def test_protected_tokens_are_never_merged():
    x = torch.ones(1, 7, 3)  # everything identical: any source would merge if allowed
    slot = bipartite_soft_matching(
        x, torch.tensor([2, 4, 6]), num_merged=2, protected=torch.tensor([0])
    )
    assert int((slot[0] == slot[0, 0]).sum()) == 1  # token 0 alone in its slot
    with pytest.raises(ValueError, match=r"num_merged must be in \[0, 3\]"):
        bipartite_soft_matching(
            x, torch.tensor([2, 4, 6]), num_merged=4, protected=torch.tensor([0])
        )


def test_merging_every_source_matches_the_ranking_path_for_any_destination_order():
    # D = K: every source merges, so bipartite_soft_matching skips the ranking; an empty
    # `protected` forces the general path, which must give the same slots.
    x = structured_grid(3, 8, 12, 16, noise=0.2).reshape(3, 96, 16)
    dst = plan_destinations(8, 12, plan_tome(8, 12, 24))
    assert plan_tome(8, 12, 24).num_dst == 24
    fast = bipartite_soft_matching(x, dst, num_merged=72)
    ranked = bipartite_soft_matching(x, dst, 72, protected=torch.tensor([], dtype=torch.long))
    assert torch.equal(fast, ranked)
    shuffled = dst[torch.randperm(dst.numel(), generator=torch.Generator().manual_seed(0))]
    assert torch.equal(bipartite_soft_matching(x, shuffled, num_merged=72), fast)
    assert torch.equal(fast[:, dst], torch.arange(24).expand(3, -1))  # slots in raster order
    repeated = torch.cat([dst, dst[:5]])
    assert torch.equal(bipartite_soft_matching(x, repeated, num_merged=72), fast)


def test_a_tie_goes_to_the_earliest_destination_in_raster_order_whatever_the_given_order():
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # 1 ties (zero vector)
    for dst in ([2, 0], [0, 2]):
        for protected in (None, torch.tensor([], dtype=torch.long)):  # short and ranking path
            slot = bipartite_soft_matching(x, torch.tensor(dst), 2, protected)
            assert slot.tolist() == [[0, 0, 1, 0]]

"""Block-wise ToMe inside a tiny random ``RadioModel`` (paper Table A4, "block-wise" row)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from transformers import RadioModel

from encoder.blockwise_tome import (
    BlockParts,
    BlockwiseToMeOutput,
    blockwise_forward,
    blockwise_tome_forward,
    check_schedule,
    max_merges,
    merge_schedule,
    min_reachable,
    proportional_attention,
    radio_adapter,
)
from encoder.tiny import tiny_radio_model
from token_merge import alternating_destinations, bipartite_soft_matching, merge_tokens

PATCH = 16
PREFIX = 4  # 2 cls + 2 registers
TOL = {"rtol": 0, "atol": 1e-5}


def pixels(batch: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, h * PATCH, w * PATCH, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> RadioModel:
    return tiny_radio_model()


# --------------------------------------------------------------------------- no merging


@pytest.mark.parametrize(("h", "w"), [(8, 8), (6, 10)])
def test_no_merging_is_the_plain_model(model, h, w):
    x = pixels(2, h, w)
    with torch.no_grad():
        ref = model(x)
        out = blockwise_tome_forward(model, x, num_tokens=h * w)
    assert out.schedule == [0, 0, 0, 0]
    torch.testing.assert_close(out.summary, ref.summary, **TOL)
    torch.testing.assert_close(out.features, ref.features, **TOL)
    torch.testing.assert_close(out.last_hidden_state, ref.last_hidden_state, **TOL)
    torch.testing.assert_close(out.prefix_tokens, ref.last_hidden_state[:, :PREFIX], **TOL)
    assert torch.equal(out.compressed.assignment, torch.arange(h * w).expand(2, -1))
    assert torch.equal(out.compressed.sizes, torch.ones(2, h * w))
    assert out.compressed.method == "blockwise-tome" and out.compressed.grid_hw == (h, w)


# --------------------------------------------------------------------------- attention


def test_proportional_attention_equals_duplicated_tokens():
    """One key/value with log(s) added == s identical copies of it, for every query."""
    g = torch.Generator().manual_seed(0)
    b, heads, t, d, j, s = 2, 3, 6, 8, 2, 4
    q, k, v = (torch.randn(b, heads, t, d, generator=g) for _ in range(3))
    dup = torch.cat([torch.arange(t), torch.full((s - 1,), j)])  # token j appears s times
    q_dup = torch.cat([q, torch.randn(b, heads, s - 1, d, generator=g)], dim=2)
    full = proportional_attention(q_dup, k[:, :, dup], v[:, :, dup], None, d**-0.5)
    log_sizes = torch.zeros(b, t)
    log_sizes[:, j] = math.log(s)
    merged = proportional_attention(q, k, v, log_sizes, d**-0.5)
    torch.testing.assert_close(merged, full[:, :, :t], **TOL)
    # and it is the textbook formula, not something that merely agrees on duplicates
    logits = q @ k.transpose(-1, -2) * d**-0.5 + log_sizes[:, None, None]
    torch.testing.assert_close(merged, logits.softmax(-1) @ v, **TOL)
    plain = proportional_attention(q, k, v, None, d**-0.5)
    assert not torch.allclose(merged, plain, atol=1e-3)
    torch.testing.assert_close(proportional_attention(q, k, v, torch.zeros(b, t), d**-0.5), plain)


def test_merging_identical_patches_keeps_every_other_output(model):
    """Two exactly identical tokens merged into one of size 2: with proportional attention
    nothing else changes (the invariant it exists for); without it, the others move."""
    plain = copy.deepcopy(model)
    with torch.no_grad():
        plain.embeddings.position_embedding.zero_()  # identical patches -> identical tokens
    x = pixels(2, 8, 8)
    x[..., :PATCH, PATCH : 2 * PATCH] = x[..., :PATCH, :PATCH]  # patch 1 := patch 0
    with torch.no_grad():
        ref = plain(x)
        out = blockwise_tome_forward(plain, x, num_tokens=63)
        unprop = blockwise_tome_forward(plain, x, num_tokens=63, proportional=False)
    assert out.schedule == [1, 0, 0, 0]
    a = out.compressed.assignment
    assert torch.equal(a[:, 0], a[:, 1])  # the planted pair, and nothing else, merged
    assert torch.equal(out.compressed.sizes[:, 0], torch.full((2,), 2.0))
    torch.testing.assert_close(out.compressed.unmerge(), ref.features, **TOL)
    torch.testing.assert_close(out.summary, ref.summary, **TOL)
    torch.testing.assert_close(out.prefix_tokens, ref.last_hidden_state[:, :PREFIX], **TOL)
    assert torch.equal(unprop.compressed.assignment, a)
    assert (unprop.compressed.unmerge() - ref.features).abs().max() > 1e-4


def reference(model: RadioModel, x: torch.Tensor, schedule: list[int]) -> torch.Tensor:
    """ToMe spelled out in eager math: attention with log(size) on the key logits, then
    bipartite matching on the keys averaged over heads, merge, then the MLP. -> [B, K, C]."""
    t = model.embeddings(model.input_conditioner(x))
    sizes = torch.ones(t.shape[:2])
    for layer, r in zip(model.encoder.layer, schedule, strict=True):
        att = layer.attention
        b, n, _ = t.shape
        q, k, v = (
            proj(layer.norm1(t)).view(b, n, 4, -1).transpose(1, 2)
            for proj in (att.q_proj, att.k_proj, att.v_proj)
        )
        weights = (q @ k.transpose(-1, -2) * att.scaling + sizes.log()[:, None, None]).softmax(-1)
        t = t + layer.layer_scale1(att.o_proj((weights @ v).transpose(1, 2).reshape(b, n, -1)))
        if r:
            dst = alternating_destinations(n, start=PREFIX)
            a = bipartite_soft_matching(k.mean(1), dst, r, torch.arange(PREFIX))
            t, sizes = merge_tokens(t, a, n - r, sizes)
        t = t + layer.layer_scale2(layer.mlp(layer.norm2(t)))
    return t[:, PREFIX:]


def test_matches_an_eager_reference():
    net = tiny_radio_model(num_layers=3, seed=5)
    x = pixels(2, 6, 10, seed=6)
    schedule = [20, 15, 10]
    with torch.no_grad():
        out = blockwise_tome_forward(net, x, num_tokens=15, schedule=schedule)
        torch.testing.assert_close(out.features, reference(net, x, schedule), **TOL)
        # The reference has teeth: matching on the residual stream instead of the keys
        # would already pick other pairs in block 0.
        emb = net.embeddings(net.input_conditioner(x))
        layer = net.encoder.layer[0]
        keys = layer.attention.k_proj(layer.norm1(emb)).view(2, emb.shape[1], 4, -1).mean(2)
        dst, kept = alternating_destinations(emb.shape[1], start=PREFIX), torch.arange(PREFIX)
        on_keys = bipartite_soft_matching(keys, dst, 20, kept)
        on_x = bipartite_soft_matching(emb, dst, 20, kept)
    assert not torch.equal(on_keys, on_x)
    assert isinstance(out, BlockwiseToMeOutput)


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    ("h", "w", "k", "layers"),
    [
        (8, 8, 4, 4),
        (8, 8, 7, 4),
        (8, 8, 16, 4),
        (8, 8, 32, 4),
        (8, 8, 63, 4),
        (6, 10, 13, 4),
        (3, 3, 2, 4),
        (8, 8, 1, 6),  # K = 1 needs 6 blocks: 4 blocks of halving reach 64 -> 4
        (5, 7, 1, 6),
    ],
)
def test_exactly_k_tokens_sizes_and_assignment(model, h, w, k, layers):
    net = model if layers == 4 else tiny_radio_model(layers)
    b, n = 2, h * w
    with torch.no_grad():
        out = blockwise_tome_forward(net, pixels(b, h, w, seed=k), num_tokens=k)
    c = out.compressed
    assert out.schedule == merge_schedule(n, k, layers)
    assert c.tokens.shape == (b, k, 32) and c.sizes.shape == (b, k)
    assert c.assignment.shape == (b, n) and c.assignment.dtype == torch.int64
    assert out.prefix_tokens.shape == (b, PREFIX, 32)
    assert out.last_hidden_state.shape == (b, PREFIX + k, 32)
    assert out.summary.shape == (b, 2 * 32)
    assert torch.equal(out.last_hidden_state[:, PREFIX:], c.tokens)
    assert int(c.assignment.min()) >= 0 and int(c.assignment.max()) < k
    for row in range(b):  # every output token has members, and its size counts them
        counts = torch.bincount(c.assignment[row], minlength=k).float()
        assert bool((counts > 0).all())
        assert torch.equal(c.sizes[row], counts)
    torch.testing.assert_close(c.sizes.sum(1), torch.full((b,), float(n)))
    assert c.unmerge().shape == (b, n, 32)
    assert torch.isfinite(c.tokens).all()


def test_batch_rows_match_single_images(model):
    x = torch.cat([pixels(1, 6, 10, seed=3), pixels(1, 6, 10, seed=4)])
    with torch.no_grad():
        both = blockwise_tome_forward(model, x, num_tokens=13)
        rows = [blockwise_tome_forward(model, x[i : i + 1], num_tokens=13) for i in range(2)]
    assert not torch.equal(both.compressed.assignment[0], both.compressed.assignment[1])
    for i, one in enumerate(rows):
        assert torch.equal(both.compressed.assignment[i], one.compressed.assignment[0])
        torch.testing.assert_close(both.compressed.tokens[i], one.compressed.tokens[0], **TOL)
        torch.testing.assert_close(both.summary[i], one.summary[0], **TOL)


def test_bfloat16_and_gradients(model):
    net = copy.deepcopy(model).to(torch.bfloat16)
    x = pixels(2, 8, 8).to(torch.bfloat16)
    with torch.no_grad():
        ref = net(x)
        same = blockwise_tome_forward(net, x, num_tokens=64)
        out = blockwise_tome_forward(net, x, num_tokens=16)
    torch.testing.assert_close(same.features, ref.features, rtol=0, atol=1e-2)
    assert out.compressed.tokens.dtype == torch.bfloat16
    assert out.compressed.sizes.dtype == torch.float32
    assert torch.isfinite(out.compressed.tokens.float()).all()

    x32 = pixels(2, 8, 8).requires_grad_(True)
    blockwise_tome_forward(model, x32, num_tokens=16).compressed.tokens.square().sum().backward()
    assert x32.grad is not None and torch.isfinite(x32.grad).all() and x32.grad.abs().sum() > 0
    weight = model.encoder.layer[0].attention.q_proj.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.cuda
def test_cuda_matches_cpu(model):
    x = pixels(2, 8, 8)
    with torch.no_grad():
        cpu = blockwise_tome_forward(model, x, num_tokens=16)
        gpu = blockwise_tome_forward(copy.deepcopy(model).cuda(), x.cuda(), num_tokens=16)
    assert torch.equal(gpu.compressed.assignment.cpu(), cpu.compressed.assignment)
    torch.testing.assert_close(gpu.compressed.tokens.cpu(), cpu.compressed.tokens, **TOL)


# --------------------------------------------------------------------------- schedule


def test_merge_schedule_sums_and_limits_everywhere():
    for n in range(1, 70):
        for layers in range(1, 7):
            floor = min_reachable(n, layers)
            for k in range(1, n + 1):
                if k < floor:
                    with pytest.raises(ValueError, match="minimum is"):
                        merge_schedule(n, k, layers)
                    continue
                r = merge_schedule(n, k, layers)
                assert len(r) == layers and sum(r) == n - k and min(r) >= 0
                left = n
                for merged in r:
                    assert merged <= max_merges(left)
                    left -= merged
                assert check_schedule(r, n, k) == r


def test_merge_schedule_is_constant_r_where_the_limit_does_not_bind():
    r = merge_schedule(2304, 196, 32)  # RADIO-H at 768 px, 196 tokens
    assert r == [66] * 28 + [65] * 4
    assert merge_schedule(4096, 512, 32) == [112] * 32
    assert merge_schedule(64, 7, 4) == [15, 18, 16, 8]  # the limit moves merges earlier
    assert min_reachable(64, 4) == 4 and min_reachable(64, 6) == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("k", "match"),
    [(0, r"\[1, 64\]"), (65, r"\[1, 64\]"), (1, "minimum is 4"), (2.0, "must be an int")],
)
def test_bad_num_tokens(model, k, match):
    with pytest.raises(ValueError, match=match):
        blockwise_tome_forward(model, pixels(1, 8, 8), num_tokens=k)


@pytest.mark.parametrize(
    ("schedule", "match"),
    [([10, 10, 10], "one r per block"), ([20, 20, 10, 5], "summing to"), ([0, 0, 30, 26], "only")],
)
def test_bad_schedule(model, schedule, match):
    with pytest.raises(ValueError, match=match):
        blockwise_tome_forward(model, pixels(1, 8, 8), num_tokens=8, schedule=schedule)


def test_explicit_schedule_is_used(model):
    with torch.no_grad():
        out = blockwise_tome_forward(model, pixels(1, 8, 8), num_tokens=8, schedule=[32, 16, 8, 0])
    assert out.schedule == [32, 16, 8, 0] and out.compressed.num_tokens == 8


def test_bad_pixels(model):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        blockwise_tome_forward(model, torch.rand(1, 3, 120, 128), num_tokens=8)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        blockwise_tome_forward(model, torch.rand(3, 128, 128), num_tokens=8)


# --------------------------------------------------------------------------- adapters


def test_the_adapter_loop_is_the_radio_entry_point(model):
    """``blockwise_tome_forward`` is ``blockwise_forward`` on ``radio_adapter``, bit for bit."""
    x = pixels(2, 6, 10, seed=8)
    with torch.no_grad():
        a = blockwise_tome_forward(model, x, num_tokens=13)
        b = blockwise_forward(radio_adapter(model), x, num_tokens=13)
    assert a.schedule == b.schedule
    for name in ("summary", "prefix_tokens", "last_hidden_state"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.compressed.tokens, b.compressed.tokens)
    assert torch.equal(a.compressed.assignment, b.compressed.assignment)


def test_finish_sees_log_sizes_only_once_something_merged(model):
    """The adapter's ``finish`` (final norm / pooling head) gets log sizes [B, P + K] after a
    merge with proportional attention, and None otherwise (the plain model's path)."""
    seen = []
    base = radio_adapter(model)

    def finish(x, log_sizes):
        seen.append(log_sizes)
        return base.finish(x, log_sizes)

    adapter = dataclasses.replace(base, finish=finish)
    x = pixels(2, 8, 8)
    with torch.no_grad():
        blockwise_forward(adapter, x, num_tokens=64)
        blockwise_forward(adapter, x, num_tokens=16)
        blockwise_forward(adapter, x, num_tokens=16, proportional=False)
    assert seen[0] is None and seen[2] is None
    assert seen[1].shape == (2, PREFIX + 16)
    torch.testing.assert_close(seen[1].exp().sum(1), torch.full((2,), float(PREFIX + 64)))


def test_block_parts_without_layer_scale_or_drop_path_are_identities(model):
    """A family without layer scale / drop path (CLIP, SigLIP) leaves them at their identity
    defaults: RADIO with its layer scales at 1 gives the same through such parts."""
    ones = copy.deepcopy(model)
    with torch.no_grad():
        for layer in ones.encoder.layer:
            layer.layer_scale1.lambda1.fill_(1.0)
            layer.layer_scale2.lambda1.fill_(1.0)
    full = radio_adapter(ones)
    drop = ("layer_scale1", "layer_scale2", "drop_path")
    bare = [
        BlockParts(
            **{
                f.name: getattr(parts, f.name)
                for f in dataclasses.fields(parts)
                if f.name not in drop
            }
        )
        for parts in full.blocks
    ]
    t = torch.randn(3, 5)
    assert all(getattr(bare[0], name)(t) is t for name in drop)
    x = pixels(2, 4, 4)
    with torch.no_grad():
        want = blockwise_forward(full, x, num_tokens=8)
        got = blockwise_forward(dataclasses.replace(full, blocks=bare), x, num_tokens=8)
    torch.testing.assert_close(got.compressed.tokens, want.compressed.tokens, **TOL)
    assert torch.equal(got.compressed.assignment, want.compressed.assignment)

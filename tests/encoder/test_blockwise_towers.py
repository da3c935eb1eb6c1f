"""Block-wise ToMe inside the transformers towers (CLIP, SigLIP, SigLIP2 NaFlex, DINOv2 with and
without registers), against the transformers models themselves. Tiny random checkpoints."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from tower_helpers import PREFIX, as_grid, images, normalised, reference

from encoder import HFVisionTower, build_encoder, load_tower
from encoder.blockwise_tome import merge_schedule
from encoder.blockwise_towers import attention_pool, blockwise_tower_forward, tower_adapter
from encoder.tiny import (
    DEPTH,
    FAMILIES,
    PATCH,
    WIDTH,
    tiny_tower_checkpoint,
)
from token_merge import alternating_destinations, bipartite_soft_matching

FIRST_KEYS = {  # the first block's key projection in each transformers model
    "clip": "encoder.layers.0.self_attn.k_proj",
    "siglip": "encoder.layers.0.self_attn.k_proj",
    "siglip2": "encoder.layers.0.self_attn.k_proj",
    "dinov2": "encoder.layer.0.attention.k_proj",
    "dinov2_reg": "encoder.layer.0.attention.k_proj",
}
POSITIONS = {  # position tables (zeroed so that identical patches give identical tokens)
    "clip": "embeddings.position_embedding.weight",
    "siglip": "embeddings.position_embedding.weight",
    "siglip2": "embeddings.position_embedding.weight",
    "dinov2": "embeddings.position_embeddings",
    "dinov2_reg": "embeddings.position_embeddings",
}
TOL = {"rtol": 0, "atol": 1e-5}
H, W = 6, 5  # the grid of the merging tests: 30 patches, 3 blocks reach 3 at least


# --------------------------------------------------------------------------- no merging


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", [(40, 24), (32, 32)])  # non-square; native
def test_no_merging_is_the_transformers_model(family, size, folders, raws):
    h, w = size[0] // PATCH, size[1] // PATCH
    pixels = images(2, 3, *size, seed=h)
    tower = load_tower(folders[family], blockwise_tome=h * w)
    with torch.no_grad():
        ref = reference(family, raws[family], normalised(pixels))
        out = tower(pixels)
        direct = blockwise_tower_forward(raws[family], normalised(pixels), h * w)
    torch.testing.assert_close(
        out.grid, as_grid(ref.last_hidden_state, PREFIX[family], h, w), **TOL
    )
    torch.testing.assert_close(out.summary, ref.pooler_output, **TOL)
    torch.testing.assert_close(direct.last_hidden_state, ref.last_hidden_state, **TOL)
    torch.testing.assert_close(direct.summary, ref.pooler_output, **TOL)
    assert direct.schedule == [0] * DEPTH
    c = out.compressed
    assert c.method == "blockwise-tome" and c.grid_hw == (h, w)
    assert torch.equal(c.assignment, torch.arange(h * w).expand(2, -1))
    assert torch.equal(c.sizes, torch.ones(2, h * w))


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("k", [3, 8, 16, 29])
def test_exactly_k_tokens_sizes_and_assignment(family, k, raws):
    b, n, p = 2, H * W, PREFIX[family]
    with torch.no_grad():
        out = blockwise_tower_forward(raws[family], images(b, 3, H * PATCH, W * PATCH, seed=k), k)
    c = out.compressed
    assert out.schedule == merge_schedule(n, k, DEPTH)
    assert c.tokens.shape == (b, k, WIDTH) and c.sizes.shape == (b, k)
    assert c.assignment.shape == (b, n) and c.assignment.dtype == torch.int64
    assert out.prefix_tokens.shape == (b, p, WIDTH)
    assert out.last_hidden_state.shape == (b, p + k, WIDTH)
    assert torch.equal(out.last_hidden_state[:, p:], c.tokens)
    assert out.summary.shape == (b, WIDTH)
    for row in range(b):  # every output token has members, and its size counts them
        counts = torch.bincount(c.assignment[row], minlength=k).float()
        assert bool((counts > 0).all()) and torch.equal(c.sizes[row], counts)
    assert torch.isfinite(c.tokens).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_first_round_matches_on_the_models_own_keys(family, raws):
    """Merging only in block 0: the assignment is bipartite matching on the keys that the
    transformers model's own k_proj computes there (caught with a hook), averaged over heads,
    with the prefix protected."""
    raw, p, r = raws[family], PREFIX[family], 12
    x = images(2, 3, H * PATCH, W * PATCH, seed=7)
    keys = []
    hook = raw.get_submodule(FIRST_KEYS[family]).register_forward_hook(
        lambda module, args, output: keys.append(output)
    )
    try:
        with torch.no_grad():
            reference(family, raw, x)
            out = blockwise_tower_forward(raw, x, H * W - r, schedule=[r, 0, 0])
    finally:
        hook.remove()
    metric = keys[0].view(2, p + H * W, 4, -1).mean(2)
    protected = torch.arange(p) if p else None
    expected = bipartite_soft_matching(metric, alternating_destinations(p + H * W, p), r, protected)
    assert torch.equal(out.compressed.assignment, expected[:, p:] - p)


@pytest.mark.parametrize("family", FAMILIES)
def test_proportional_attention_with_duplicate_patches(family, raws):
    """Two identical patches merged into one of size 2: with proportional attention (and the
    size-weighted SigLIP pooling head) every output equals the unmerged model's; without it,
    the others move."""
    raw = copy.deepcopy(raws[family])
    with torch.no_grad():
        raw.get_parameter(POSITIONS[family]).zero_()  # identical patches -> identical tokens
    x = images(2, 3, H * PATCH, W * PATCH, seed=3) * 2 - 1
    x[..., :PATCH, PATCH : 2 * PATCH] = x[..., :PATCH, :PATCH]  # patch 1 := patch 0
    p = PREFIX[family]
    with torch.no_grad():
        ref = reference(family, raw, x)
        out = blockwise_tower_forward(raw, x, H * W - 1)
        unprop = blockwise_tower_forward(raw, x, H * W - 1, proportional=False)
    assert out.schedule == [1, 0, 0]
    a = out.compressed.assignment
    assert torch.equal(a[:, 0], a[:, 1])  # the planted pair, and nothing else, merged
    assert torch.equal(out.compressed.sizes[:, 0], torch.full((2,), 2.0))
    features = ref.last_hidden_state[:, p:]
    torch.testing.assert_close(out.compressed.unmerge(), features, **TOL)
    torch.testing.assert_close(out.summary, ref.pooler_output, **TOL)
    torch.testing.assert_close(out.prefix_tokens, ref.last_hidden_state[:, :p], **TOL)
    assert torch.equal(unprop.compressed.assignment, a)
    assert (unprop.compressed.unmerge() - features).abs().max() > 1e-4
    assert (unprop.summary - ref.pooler_output).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["siglip", "siglip2"])
def test_pooling_head_weighs_tokens_by_size(family, raws):
    """attention_pool with log sizes == the model's head on the tokens repeated size times;
    without sizes it is the model's head."""
    head = raws[family].head
    tokens = torch.randn(2, 6, WIDTH, generator=torch.Generator().manual_seed(0))
    log_sizes = torch.zeros(2, 6)
    log_sizes[:, 2] = math.log(3)
    with torch.no_grad():
        torch.testing.assert_close(attention_pool(head, tokens, None), head(tokens), **TOL)
        weighted = attention_pool(head, tokens, log_sizes)
        repeated = head(tokens[:, [0, 1, 2, 3, 4, 5, 2, 2]])
    torch.testing.assert_close(weighted, repeated, **TOL)
    assert (weighted - head(tokens)).abs().max() > 1e-4


# --------------------------------------------------------------------------- the towers


@pytest.mark.parametrize("family", FAMILIES)
def test_tower_output_is_the_unmerge_of_k_tokens(family, folders, raws):
    tower = load_tower(folders[family], blockwise_tome=10)
    pixels = images(2, 3, H * PATCH, W * PATCH, seed=1)
    with torch.no_grad():
        out = tower(pixels)
        ref = blockwise_tower_forward(raws[family], normalised(pixels), 10)
    c = out.compressed
    assert out.grid.shape == (2, H, W, WIDTH) and c.tokens.shape == (2, 10, WIDTH)
    torch.testing.assert_close(c.tokens, ref.compressed.tokens, **TOL)
    torch.testing.assert_close(out.summary, ref.summary, **TOL)
    gathered = c.tokens.gather(1, c.assignment.unsqueeze(-1).expand(-1, -1, WIDTH))
    assert torch.equal(out.grid.flatten(1, 2), gathered)
    assert out.hidden_states is None


@pytest.mark.parametrize("family", ["siglip2", "dinov2_reg"])
def test_encode_runs_each_size_as_one_batch(family, folders):
    tower = load_tower(folders[family], blockwise_tome=6)
    batch = [images(3, 40, 24, seed=2), images(3, 32, 32, seed=3), images(3, 40, 24, seed=4)]
    with torch.no_grad():
        outs = tower.encode(batch)
        for image, out in zip(batch, outs, strict=True):
            alone = tower(image[None])
            assert out.compressed.tokens.shape == (1, 6, WIDTH)
            torch.testing.assert_close(out.compressed.tokens, alone.compressed.tokens, **TOL)
            assert torch.equal(out.compressed.assignment, alone.compressed.assignment)
            torch.testing.assert_close(out.summary, alone.summary, **TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_get_config_and_build_encoder_carry_the_option(family, folders):
    tower = build_encoder(folders[family], blockwise_tome=7)
    assert tower.blockwise_tome == 7
    config = json.loads(json.dumps(tower.get_config()))
    assert config["blockwise_tome"] == 7
    rebuilt = HFVisionTower.from_config(config)
    assert rebuilt.blockwise_tome == 7 and type(rebuilt) is type(tower)
    rebuilt.load_state_dict(tower.state_dict())
    pixels = images(1, 3, 24, 40)
    with torch.no_grad():
        assert torch.equal(rebuilt(pixels).compressed.tokens, tower(pixels).compressed.tokens)
    legacy = {k: v for k, v in config.items() if k != "blockwise_tome"}  # configs from before
    with torch.device("meta"):  # modules only, no weight init
        assert HFVisionTower.from_config({**config, "blockwise_tome": None}).blockwise_tome is None
        assert HFVisionTower.from_config(legacy).blockwise_tome is None


def test_siglip_without_head_has_no_summary(tmp_path):
    folder = tiny_tower_checkpoint(tmp_path / "s", "siglip", vision_use_head=False)
    with torch.no_grad():
        out = load_tower(folder, blockwise_tome=5)(images(1, 3, 24, 40))
    assert out.summary is None and out.compressed.num_tokens == 5


def test_bfloat16_and_gradients(folders):
    half = load_tower(folders["dinov2_reg"], dtype=torch.bfloat16, blockwise_tome=8)
    with torch.no_grad():
        out = half(images(2, 3, 48, 40))
    assert out.compressed.tokens.dtype == torch.bfloat16
    assert out.compressed.sizes.dtype == torch.float32
    assert torch.isfinite(out.compressed.tokens.float()).all()

    tower = load_tower(folders["siglip"], blockwise_tome=8)
    pixels = images(2, 3, 48, 40).requires_grad_(True)
    out = tower(pixels)
    (out.compressed.tokens.square().sum() + out.summary.square().sum()).backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()
    assert pixels.grad.abs().sum() > 0
    assert tower.model.head.probe.grad.abs().sum() > 0  # the pooling head is in the graph


def test_errors(folders):
    with pytest.raises(ValueError, match="feature_layers are not available"):
        load_tower(folders["clip"], blockwise_tome=8, feature_layers=[-2])
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="blockwise_tome must be an int >= 1"):
            load_tower(folders["clip"], blockwise_tome=bad)
    tower = load_tower(folders["clip"], blockwise_tome=8)
    with pytest.raises(ValueError, match="no per-block hidden states"):
        tower(images(1, 3, 32, 32), output_hidden_states=True)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):  # K above the 2x2 grid's 4 patches
        tower(images(1, 3, 16, 16))
    with pytest.raises(ValueError, match="minimum is"):  # 3 blocks cannot halve 30 to 2
        load_tower(folders["dinov2"], blockwise_tome=2)(images(1, 3, 48, 40))
    with pytest.raises(ValueError, match="no adapter for model_type 'vit'"):
        tower_adapter(SimpleNamespace(config=SimpleNamespace(model_type="vit")))

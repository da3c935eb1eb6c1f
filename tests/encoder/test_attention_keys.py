"""encoder.attention_keys: a block's keys on the patch grid, against a reference computed from
the transformers model's own hidden states (input of block L -> norm1 -> k_proj -> head mean)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder import attention_keys, load_radio, load_tower
from encoder.base import EncoderOutput, VisionEncoder
from encoder.tiny import tiny_tower_checkpoint
from token_merge import compress

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"


def _reference(hidden_in, norm, k_proj, num_prefix, heads, grid_hw):
    keys = k_proj(norm(hidden_in))[:, num_prefix:]
    b = keys.shape[0]
    return keys.reshape(b, keys.shape[1], heads, -1).mean(2).reshape(b, *grid_hw, -1)


@pytest.mark.parametrize("layer", [-1, 0, 2])
def test_radio_keys_equal_the_models_own_projection(layer):
    enc = load_radio(FIXTURE)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    keys = attention_keys(enc, x, layer=layer)
    model = enc.model
    block = model.encoder.layer[layer]
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True).hidden_states
        ref = _reference(
            hidden[layer - 1 if layer < 0 else layer],  # hidden_states[i] is block i's input
            block.norm1,
            block.attention.k_proj,
            model.config.num_summary_tokens,
            model.config.num_attention_heads,
            (4, 6),
        )
    assert keys.shape == (2, 4, 6, block.attention.head_dim)
    torch.testing.assert_close(keys, ref, rtol=0, atol=1e-6)


def test_clip_tower_keys_equal_the_models_own_projection(tmp_path):
    tower = load_tower(tiny_tower_checkpoint(tmp_path / "clip", "clip"))
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    keys = attention_keys(tower, x)
    block = tower.model.encoder.layers[-1]
    with torch.no_grad():
        hidden = tower.model(
            tower.normalize(x), interpolate_pos_encoding=True, output_hidden_states=True
        ).hidden_states
        ref = _reference(
            hidden[-2],
            block.layer_norm1,
            block.self_attn.k_proj,
            1,
            tower.model.config.num_attention_heads,
            (4, 6),
        )
    torch.testing.assert_close(keys, ref, rtol=0, atol=1e-6)


def test_keys_drive_tome_matching_on_the_feature_grid():
    enc = load_radio(FIXTURE)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        grid = enc(x).grid
    keys = attention_keys(enc, x)
    on_keys = compress(grid, "tome", 6, metric=keys)
    on_features = compress(grid, "tome", 6)
    assert on_keys.tokens.shape == on_features.tokens.shape == (2, 6, grid.shape[-1])
    assert not torch.equal(on_keys.assignment, on_features.assignment)


def test_bad_requests_name_the_problem():
    enc = load_radio(FIXTURE)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="layer 4 is out of range for an encoder with 4 blocks"):
        attention_keys(enc, x, layer=4)
    with pytest.raises(ValueError, match="without blockwise_tome"):
        attention_keys(load_radio(FIXTURE, blockwise_tome=2), x)

    class Other(VisionEncoder):
        def forward(self, pixel_values):
            return EncoderOutput(summary=None, grid=pixel_values.permute(0, 2, 3, 1))

    with pytest.raises(TypeError, match="got Other"):
        attention_keys(Other(), x)

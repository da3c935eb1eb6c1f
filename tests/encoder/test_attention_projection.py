"""encoder.attention_projection: a block's keys or values on the patch grid, against a
reference computed from the transformers model's own hidden states (input of block L -> norm1
-> k_proj / v_proj -> head mean)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder import attention_keys, attention_projection, load_radio, load_tower
from encoder.base import EncoderOutput, VisionEncoder
from encoder.tiny import tiny_tower_checkpoint
from token_merge import compress

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"
PROJECTION = {"keys": "k_proj", "values": "v_proj"}


def _reference(hidden_in, norm, projection, num_prefix, heads, grid_hw):
    out = projection(norm(hidden_in))[:, num_prefix:]
    b = out.shape[0]
    return out.reshape(b, out.shape[1], heads, -1).mean(2).reshape(b, *grid_hw, -1)


@pytest.mark.parametrize("kind", ["keys", "values"])
@pytest.mark.parametrize("layer", [-1, 0, 2])
def test_radio_projection_equals_the_models_own(layer, kind):
    enc = load_radio(FIXTURE)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    out = attention_projection(enc, x, layer=layer, kind=kind)
    model = enc.model
    block = model.encoder.layer[layer]
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True).hidden_states
        ref = _reference(
            hidden[layer - 1 if layer < 0 else layer],  # hidden_states[i] is block i's input
            block.norm1,
            getattr(block.attention, PROJECTION[kind]),
            model.config.num_summary_tokens,
            model.config.num_attention_heads,
            (4, 6),
        )
    assert out.shape == (2, 4, 6, block.attention.head_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_keys_and_values_differ_and_attention_keys_is_the_keys_case():
    enc = load_radio(FIXTURE)
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    keys = attention_projection(enc, x, layer=1, kind="keys")
    assert torch.equal(attention_keys(enc, x, layer=1), keys)
    assert not torch.allclose(attention_projection(enc, x, layer=1, kind="values"), keys)


@pytest.mark.parametrize("kind", ["keys", "values"])
def test_clip_tower_projection_equals_the_models_own(tmp_path, kind):
    tower = load_tower(tiny_tower_checkpoint(tmp_path / "clip", "clip"))
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    out = attention_projection(tower, x, kind=kind)
    block = tower.model.encoder.layers[-1]
    with torch.no_grad():
        hidden = tower.model(
            tower.normalize(x), interpolate_pos_encoding=True, output_hidden_states=True
        ).hidden_states
        ref = _reference(
            hidden[-2],
            block.layer_norm1,
            getattr(block.self_attn, PROJECTION[kind]),
            1,
            tower.model.config.num_attention_heads,
            (4, 6),
        )
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


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
    with pytest.raises(ValueError, match="layer -5 is out of range"):
        attention_projection(enc, x, layer=-5, kind="values")
    with pytest.raises(
        ValueError, match=r"kind must be one of \['keys', 'values'\]; got 'queries'"
    ):
        attention_projection(enc, x, kind="queries")
    with pytest.raises(ValueError, match="without blockwise_tome"):
        attention_keys(load_radio(FIXTURE, blockwise_tome=2), x)

    class Other(VisionEncoder):
        def forward(self, pixel_values):
            return EncoderOutput(summary=None, grid=pixel_values.permute(0, 2, 3, 1))

    with pytest.raises(TypeError, match="got Other"):
        attention_keys(Other(), x)

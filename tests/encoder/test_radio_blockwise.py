"""Block-wise ToMe wired into RadioEncoder (the merging itself: test_blockwise_tome.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoder import load_radio
from encoder.blockwise_tome import blockwise_tome_forward

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"


def test_no_merging_equals_the_plain_encoder_adaptors_included():
    plain = load_radio(FIXTURE, adaptor_names=["clip", "dino_v2"])
    merged = load_radio(FIXTURE, adaptor_names=["clip", "dino_v2"], blockwise_tome=8 * 6)
    x = torch.rand(2, 3, 128, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = plain(x), merged(x)
    torch.testing.assert_close(b.summary, a.summary, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.grid, a.grid, rtol=0, atol=1e-5)
    assert b.compressed.num_tokens == 48 and a.compressed is None
    for name in ("clip", "dino_v2"):
        torch.testing.assert_close(b.adaptors[name].grid, a.adaptors[name].grid, rtol=0, atol=1e-5)


def test_merged_output_carries_k_tokens_and_their_unmerge():
    enc = load_radio(FIXTURE, blockwise_tome=10)
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = enc(x)
        ref = blockwise_tome_forward(enc.model, x, 10)
    c = out.compressed
    assert c.tokens.shape == (2, 10, 64) and c.method == "blockwise-tome"
    torch.testing.assert_close(c.tokens, ref.compressed.tokens)
    torch.testing.assert_close(out.summary, ref.summary)
    assert torch.equal(c.sizes.sum(1), torch.full((2,), 24.0))
    torch.testing.assert_close(
        out.grid.flatten(1, 2), c.tokens.gather(1, c.assignment.unsqueeze(-1).expand(-1, -1, 64))
    )
    # encode(): mixed sizes run per size and keep each image's compressed tokens
    images = [x[0], torch.rand(3, 64, 64), x[1]]
    with torch.no_grad():
        outs = enc.encode(images)
    assert [o.compressed.tokens.shape for o in outs] == [(1, 10, 64)] * 3
    torch.testing.assert_close(outs[2].compressed.tokens, c.tokens[1:2])
    torch.testing.assert_close(outs[2].compressed.assignment, c.assignment[1:2])


def test_round_trips_through_get_config():
    enc = load_radio(FIXTURE, blockwise_tome=12)
    rebuilt = type(enc).from_config(enc.get_config())
    assert rebuilt.blockwise_tome == 12


def test_blockwise_excludes_per_block_outputs():
    with pytest.raises(ValueError, match="feature_layers are not available"):
        load_radio(FIXTURE, blockwise_tome=12, feature_layers=[-1])
    enc = load_radio(FIXTURE, blockwise_tome=12)
    with pytest.raises(ValueError, match="no per-block hidden states"):
        enc(torch.rand(1, 3, 64, 64), output_hidden_states=True)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "12"])
def test_a_bad_budget_is_refused_when_the_tower_is_built(bad):
    with pytest.raises(ValueError, match=r"blockwise_tome must be an int >= 1 .*got"):
        load_radio(FIXTURE, blockwise_tome=bad)

"""TokenCompressor.settings() / from_settings(): JSON-safe round trip and unknown keys."""

from __future__ import annotations

import json

import pytest
import torch

from token_merge import METHODS, TokenCompressor

CASES = [
    TokenCompressor("tome", 16),
    TokenCompressor("tome", 16, stride=(2, 3), dst="random", seed=7),
    TokenCompressor("unshuffle", scale=3),
    TokenCompressor("unshuffle", 9),
    TokenCompressor("unshuffle"),
    TokenCompressor("avgpool", 12),
    TokenCompressor("none"),
]


def test_cases_cover_every_method():
    assert {c.method for c in CASES} == set(METHODS)


@pytest.mark.parametrize("compressor", CASES, ids=lambda c: c.extra_repr())
def test_settings_round_trip_through_json(compressor):
    settings = compressor.settings()
    assert list(settings) == ["method", "num_tokens", "stride", "dst", "seed", "scale"]
    assert settings["stride"] is None or isinstance(settings["stride"], list)
    restored = TokenCompressor.from_settings(json.loads(json.dumps(settings)))
    assert restored.settings() == settings
    assert restored.stride == compressor.stride  # a tuple again
    assert type(restored.stride) is type(compressor.stride)
    grid = torch.randn(2, 6, 6, 4)
    a, b = compressor(grid), restored(grid)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.assignment, b.assignment)
    assert restored.num_output_tokens(6, 6) == compressor.num_output_tokens(6, 6)


def test_from_settings_uses_constructor_defaults():
    compressor = TokenCompressor.from_settings({"method": "tome", "num_tokens": 8})
    assert compressor.settings() == TokenCompressor("tome", 8).settings()


def test_from_settings_unknown_key_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown compressor settings \['ratio'\]") as err:
        TokenCompressor.from_settings({"method": "tome", "num_tokens": 8, "ratio": 0.5})
    for key in ("method", "num_tokens", "stride", "dst", "seed", "scale"):
        assert key in str(err.value)


def test_from_settings_still_validates_the_values():
    with pytest.raises(ValueError, match="method must be one of"):
        TokenCompressor.from_settings({"method": "pool"})
    # dst too, when the model is built rather than at its first forward
    with pytest.raises(
        ValueError, match=r"dst must be one of \['top-left', 'random'\]; got 'centre'"
    ):
        TokenCompressor.from_settings({"method": "tome", "num_tokens": 4, "dst": "centre"})


def test_the_defaults_name_every_setting_and_build_a_compressor():
    from token_merge import DEFAULT_SETTINGS, SETTINGS

    assert tuple(DEFAULT_SETTINGS) == SETTINGS
    assert TokenCompressor.from_settings(DEFAULT_SETTINGS).settings() == DEFAULT_SETTINGS


@pytest.mark.parametrize(
    ("h", "w", "k", "scale"),
    [(8, 8, 16, 2), (8, 8, 4, 4), (6, 4, 6, 2), (5, 5, 9, 2), (8, 8, 64, 1)],
)
def test_unshuffle_scale_gives_exactly_k_tokens(h, w, k, scale):
    from token_merge import unshuffle_scale

    assert unshuffle_scale(h, w, k) == scale
    assert TokenCompressor("unshuffle", scale=scale).num_output_tokens(h, w) == k


def test_unshuffle_scale_refuses_a_budget_no_scale_meets():
    from token_merge import unshuffle_scale

    with pytest.raises(ValueError, match=r"cannot give exactly K=10 tokens from a 8x8 grid"):
        unshuffle_scale(8, 8, 10)


def test_fixed_width_settings_for_a_model():
    budget_free = {"method": "none", "num_tokens": 256}  # a saved default K, unused
    assert TokenCompressor.from_settings(budget_free, fixed_width=True).num_tokens is None
    with pytest.raises(ValueError, match=r"'unshuffle' in a VLM needs scale=s"):
        TokenCompressor.from_settings({"method": "unshuffle", "num_tokens": 16}, fixed_width=True)
    assert (
        TokenCompressor("tome", 16).min_patches == TokenCompressor("avgpool", 16).min_patches == 16
    )
    assert TokenCompressor("unshuffle", scale=2).min_patches is None
    assert TokenCompressor("none").min_patches is None

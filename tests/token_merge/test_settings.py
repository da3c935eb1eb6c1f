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

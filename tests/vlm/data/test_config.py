"""DataConfig: read from the YAML recipes' dicts, strictly (unknown keys name their section)."""

from __future__ import annotations

import pytest

from vlm.data import DataConfig


def test_data_config_from_yaml_like_dicts():
    config = DataConfig.from_dict(
        {"kind": "synthdoc", "num_samples": 5, "seed": 7, "synthdoc": {"image_size": 64}}
    )
    assert config.synthdoc.seed == 7 and config.synthdoc.image_size == 64
    assert config.to_dict()["synthdoc"]["image_size"] == 64
    with pytest.raises(ValueError, match=r"unknown key 'num_sample' in section 'data' \(did you"):
        DataConfig.from_dict({"kind": "synthdoc", "num_sample": 5})
    with pytest.raises(ValueError, match=r"unknown key 'size' in section 'data.synthdoc'"):
        DataConfig.from_dict({"kind": "synthdoc", "num_samples": 5, "synthdoc": {"size": 64}})
    with pytest.raises(ValueError, match=r"unknown key 'img' in section 'data.columns'"):
        DataConfig.from_dict({"kind": "hf", "path": "x", "columns": {"img": "image"}})
    with pytest.raises(ValueError, match=r"set data\.seed, not data\.synthdoc\.seed"):
        DataConfig.from_dict({"kind": "synthdoc", "num_samples": 5, "synthdoc": {"seed": 1}})
    with pytest.raises(ValueError, match=r"needs data\.path"):
        DataConfig(kind="llava")

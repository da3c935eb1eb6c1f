"""Fixtures shared by the tower tests: one tiny checkpoint per family (with an unusual
preprocessor_config.json) and the raw transformers models loaded from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoder.tiny import FAMILIES, ODD_PREPROCESSOR, RAW_CLASSES, tiny_tower_checkpoint


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("towers")
    return {
        family: tiny_tower_checkpoint(root / family, family, preprocessor=ODD_PREPROCESSOR, seed=i)
        for i, family in enumerate(FAMILIES)
    }


@pytest.fixture(scope="module")
def raws(folders) -> dict:
    """The raw transformers models, loaded here without the code under test."""
    return {family: RAW_CLASSES[family].from_pretrained(f).eval() for family, f in folders.items()}

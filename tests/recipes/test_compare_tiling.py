"""Tiling cells in compare grids (paper Table A5): keys, checked settings, and a CI-sized run
of recipes/compare/tiling_toy.yaml."""

from __future__ import annotations

import json

import pytest

from recipes.cli import main
from recipes.compare.grid import Cell, CompareGrid, load_grid
from vlm.schema import RecipeError, from_dict

TOY_KEYS = [
    "tiny-tome-k16",
    "tiny-tome-k16-r128",
    "tiny-tome-k16-tiles4-min4",
    "tiny-tome-k4-tiles4-t32",
]


def test_tiling_cell_keys():
    assert [c.key for c in load_grid("recipes/compare/tiling_toy.yaml").expand()] == TOY_KEYS
    cell = from_dict(Cell, {"num_tokens": 4, "tiling": {"max_tiles": 6}}, "cells[0]")
    assert cell.key == "tiny-tome-k4-tiles6"
    assert cell.tiling == {"tile_size": None, "min_tiles": 1, "max_tiles": 6, "thumbnail": True}
    no_thumb = {"tile_size": 32, "max_tiles": 2, "thumbnail": False}
    assert Cell(tiling=no_thumb).key == "tiny-tome-k16-tiles2-t32-nothumb"
    assert Cell().key == "tiny-tome-k16" and Cell().tiling is None
    grid = CompareGrid(cells=[{"tiling": {"max_tiles": 4}}, {"tiling": None}])
    assert [c.key for c in grid.expand()] == ["tiny-tome-k16-tiles4", "tiny-tome-k16"]


@pytest.mark.parametrize(
    ("tiling", "message"),
    [
        ({"tiles": 4}, r"cells\[0\]: unknown tiling keys \['tiles'\]; allowed: "),
        ({"max_tiles": 0}, r"cells\[0\]: max_tiles must be a positive integer; got 0"),
        ("4x32", r"cells\[0\].tiling must be a mapping; got '4x32'"),
    ],
)
def test_bad_tiling_in_a_cell_is_an_error_naming_the_allowed_values(tiling, message):
    with pytest.raises(RecipeError, match=message):
        CompareGrid(cells=[{"tiling": tiling}]).expand()


def test_ci_sized_tiling_grid_runs(tmp_path):
    from vlm.training import load_stage

    out = tmp_path / "tiling"
    argv = ["compare", "recipes/compare/tiling_toy.yaml", "--ci", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    cells = {r["key"]: r for r in results["cells"]}
    assert list(cells) == TOY_KEYS
    # 16 tokens untiled; 2x2 tiles + thumbnail at 16 per tile; the same at 4 per 32 px tile
    assert [r["visual_tokens"] for r in cells.values()] == [16, 16, 5 * 16, 5 * 4]
    for record in cells.values():
        assert set(record["metrics"]) == {"textvqa_val_local", "docvqa_val_local", "ocrbench_local"}
    model, processor = load_stage(cells["tiny-tome-k4-tiles4-t32"]["model_dir"])
    tiling = {"tile_size": 32, "min_tiles": 1, "max_tiles": 4, "thumbnail": True}
    assert model.config.tiling == processor.tiling.to_dict() == tiling  # through all stages
    table = (out / "table.md").read_text()
    assert "| tiny / tome tiled (<= 4 tiles of 32 px) | 20 |" in table
    assert "| tiny / tome tiled (<= 4 tiles) | 80 |" in table

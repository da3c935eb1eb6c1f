"""InternVL-style tiling: grid choice (by hand and against the rule restated), tile count,
thumbnail, exact reassembly of the resized image, and ``Tiling``, a VLM's settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from image_kit import exif_rotated_jpeg, noise
from PIL import Image

from encoder.image_loading import ImageLoadError
from encoder.image_processing import ImageProcessor, pil_to_tensor, to_rgb
from encoder.tiling import (
    TileLayout,
    Tiling,
    candidate_grids,
    choose_grid,
    cut_tiles,
    tile_image,
    tile_images,
    untile,
)


@pytest.mark.parametrize(
    ("size", "max_tiles", "expected"),
    [
        ((448, 896), 6, (1, 2)),  # 2:1 -> 2 cols x 1 row (4x2 has 8 tiles > 6)
        ((448, 896), 12, (1, 2)),  # 4x2 ties, but 401408 px <= half of 8 tiles (802816)
        ((1000, 2000), 12, (2, 4)),  # 2e6 px > 802816: the larger tie wins
        ((2000, 1000), 12, (4, 2)),  # tall: rows > cols
        ((448, 448), 12, (1, 1)),  # 200704 px <= half of 2x2 (401408)
        ((800, 800), 12, (2, 2)),  # 640000 > 401408 but <= half of 3x3 (903168)
        ((1000, 1000), 12, (3, 3)),  # 1e6 > 903168; 4x4 has 16 > 12 tiles
        ((10, 30), 12, (1, 3)),  # tiny 3:1: ties 6x2 but far too few pixels
        ((7, 1000), 12, (1, 12)),  # extreme: the widest grid allowed
        ((1000, 7), 6, (6, 1)),
        ((600, 1000), 12, (2, 3)),  # 5x3 would match exactly but has 15 tiles; 3x2 is next
        ((500, 700), 6, (2, 3)),  # 1.4: 3x2 (1.5) is closest
        ((500, 700), 5, (1, 1)),  # 3x2 not allowed: 1x1 (off by 0.4) beats 2x1 (0.6)
    ],
)
def test_grid_by_hand(size, max_tiles, expected):
    assert choose_grid(*size, tile_size=448, max_tiles=max_tiles) == expected


def test_min_tiles_forces_a_larger_grid():
    # square but at least 2 tiles: 2x2 is the only aspect-1 grid with 2..6 tiles
    assert choose_grid(100, 100, min_tiles=2, max_tiles=6) == (2, 2)
    # 2:1 with exactly 3..3 tiles: 3x1 (3.0) vs 1x3 (0.33): 3x1 is closer
    assert choose_grid(100, 200, min_tiles=3, max_tiles=3) == (1, 3)


def test_tie_between_two_aspects_follows_the_area_rule():
    # with <= 6 tiles, 5:4 is exactly halfway between 1 (1x1, 2x2) and 1.5 (3x2): all tie
    def grid(tile: int) -> tuple[int, int]:
        return choose_grid(400, 500, tile_size=tile, max_tiles=6)

    assert grid(448) == (1, 1)  # 200000 px <= half of 2x2 (401408)
    assert grid(300) == (2, 2)  # > half of 4 tiles (180000), <= half of 6 (270000)
    assert grid(220) == (2, 3)  # > half of 6 tiles (145200): the 1.5 grid wins the tie
    assert choose_grid(400, 500, tile_size=448, max_tiles=12) == (3, 4)  # 4:3 is closer


def reference_grid(h: int, w: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """The rule restated: the grids closest in aspect; among them the largest whose tile
    area is under twice the image's pixels, if it is not the smallest, else the smallest."""
    grids = [(c, r) for c in range(1, max_tiles + 1) for r in range(1, max_tiles + 1)]
    grids = [g for g in grids if g[0] * g[1] <= max_tiles]
    best = min(abs(w / h - c / r) for c, r in grids)
    tied = sorted((g for g in grids if abs(w / h - g[0] / g[1]) == best), key=lambda g: g[0] * g[1])
    fits = [g for g in tied[1:] if w * h > 0.5 * tile * tile * g[0] * g[1]]
    cols, rows = fits[-1] if fits else tied[0]
    return rows, cols


@pytest.mark.parametrize("max_tiles", [6, 12])
def test_grid_matches_the_rule_on_many_sizes(max_tiles):
    rng = np.random.default_rng(0)
    sizes = [(int(a), int(b)) for a, b in rng.integers(1, 3000, (400, 2))]
    sizes += [(h, w) for h in (32, 224, 448, 896, 1344) for w in (32, 224, 448, 896, 1344)]
    for h, w in sizes:
        assert choose_grid(h, w, tile_size=448, max_tiles=max_tiles) == reference_grid(
            h, w, 448, max_tiles
        ), (h, w)


def test_candidates_sorted_by_count_within_bounds():
    grids = candidate_grids(2, 6)
    counts = [c * r for c, r in grids]
    assert counts == sorted(counts) and min(counts) == 2 and max(counts) == 6
    assert len(grids) == len(set(grids)) == 13  # 2:2, 3:2, 4:3, 5:2, 6:4 grids
    with pytest.raises(ValueError, match="min_tiles 7 is above max_tiles 6"):
        candidate_grids(7, 6)


def test_tiles_reassemble_into_the_resized_image():
    image = noise(50, 130)  # 2.6:1, tile 32, max 12 -> closest grid 5x2 (2.5)
    tiles, layout = tile_image(image, tile_size=32, max_tiles=12)
    assert layout == TileLayout(rows=2, cols=5, has_thumbnail=True)
    assert tiles.shape == (11, 3, 32, 32) and tiles.dtype == torch.float32
    resized = pil_to_tensor(to_rgb(image).resize((160, 64), Image.Resampling.BICUBIC))
    assert torch.equal(untile(tiles, layout), resized)
    # raster order, spelled out: tile 1 is right of tile 0, tile 5 starts the second row
    assert torch.equal(tiles[1], resized[:, :32, 32:64])
    assert torch.equal(tiles[5], resized[:, 32:64, :32])
    thumb = pil_to_tensor(image.resize((32, 32), Image.Resampling.BICUBIC))
    assert torch.equal(tiles[-1], thumb)
    assert tiles.min() >= 0.0 and tiles.max() <= 1.0


def test_tile_count_and_thumbnail():
    tiles, layout = tile_image(noise(40, 40), tile_size=32)  # 1x1: no thumbnail
    assert layout == TileLayout(1, 1, False) and tiles.shape == (1, 3, 32, 32)
    tiles, layout = tile_image(noise(64, 128), tile_size=32, max_tiles=6)
    assert layout == TileLayout(1, 2, True) and tiles.shape == (3, 3, 32, 32)
    tiles, layout = tile_image(noise(64, 128), tile_size=32, max_tiles=6, thumbnail=False)
    assert layout.num_tiles == 2 and tiles.shape == (2, 3, 32, 32)
    tiles, layout = tile_image(noise(1, 1), tile_size=16)  # tiny images still tile
    assert tiles.shape == (1, 3, 16, 16)


def test_tile_image_accepts_other_inputs():
    rgba = Image.new("RGBA", (64, 32), (0, 0, 0, 0))  # transparent -> white tiles
    tiles, layout = tile_image(rgba, tile_size=16, max_tiles=4)
    assert layout == TileLayout(1, 2, True) and torch.all(tiles == 1.0)
    tiles, _ = tile_image(torch.zeros(3, 32, 64), tile_size=16, max_tiles=4)
    assert tiles.shape == (3, 3, 16, 16)


def test_untile_works_on_feature_maps_and_checks_shapes():
    layout = TileLayout(2, 3, True)
    feats = torch.arange(7 * 5 * 2 * 2, dtype=torch.float32).view(7, 5, 2, 2)
    grid = untile(feats, layout)
    assert grid.shape == (5, 4, 6)
    assert torch.equal(grid[:, 2:4, 4:6], feats[5])  # row 1, col 2
    with pytest.raises(ValueError, match=r"expected tiles \[7, C, h, w\]"):
        untile(feats[:6], layout)


def test_bad_arguments():
    with pytest.raises(ValueError, match="tile_size must be a positive integer"):
        choose_grid(10, 10, tile_size=0)
    with pytest.raises(ValueError, match="max_tiles must be a positive integer"):
        tile_image(noise(8, 8), max_tiles=0)


# ---------------------------------------------------------------- Tiling: a VLM's settings


def test_tiling_settings_round_trip_and_defaults():
    assert Tiling.from_value(None) is None
    tiling = Tiling.from_value({"max_tiles": 6})
    assert tiling == Tiling(tile_size=None, min_tiles=1, max_tiles=6, thumbnail=True)
    assert Tiling.from_value(tiling) is tiling
    processor = ImageProcessor(patch_size=16, resolution=448, max_resolution=1024)
    fitted = tiling.fitted(processor)  # tile_size None: the encoder's resolution
    assert fitted.to_dict() == {"tile_size": 448, "min_tiles": 1, "max_tiles": 6, "thumbnail": True}
    assert Tiling.from_value(fitted.to_dict()) == fitted
    assert Tiling(tile_size=224).fitted(processor).tile_size == 224  # given: kept
    with pytest.raises(ValueError, match="tile_size is not set"):
        tiling.layout(100, 100)


def test_tiling_layout_is_what_tile_image_cuts():
    tiling = Tiling(tile_size=32, max_tiles=6)
    for h, w in [(40, 40), (64, 128), (50, 130), (200, 30)]:
        _, layout = tile_image(noise(h, w), tile_size=32, max_tiles=6)
        assert tiling.layout(h, w) == layout
    assert Tiling(tile_size=32, max_tiles=6, thumbnail=False).layout(64, 128) == (1, 2, False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"tiles": 4}, r"unknown tiling keys \['tiles'\]; allowed: \['tile_size', 'min_tiles', "),
        ({"max_tiles": 0}, "max_tiles must be a positive integer; got 0"),
        ({"min_tiles": True}, "min_tiles must be a positive integer; got True"),
        ({"min_tiles": 4, "max_tiles": 2}, "min_tiles 4 is above max_tiles 2"),
        ({"tile_size": -32}, "tile_size must be a positive integer; got -32"),
        ({"thumbnail": 1}, "thumbnail must be true or false; got 1"),
        ([4], r"tiling must be null or a mapping with keys \['tile_size'"),
    ],
)
def test_bad_tiling_settings(value, message):
    with pytest.raises(ValueError, match=message):
        Tiling.from_value(value)


def test_a_tile_size_the_encoder_cannot_take():
    processor = ImageProcessor(patch_size=16, resolution=448, max_resolution=512)
    with pytest.raises(ValueError, match=r"tile_size 450 must be a multiple of .* patch 16.*448"):
        Tiling(tile_size=450).fitted(processor)
    with pytest.raises(ValueError, match=r"at most its max_resolution 512; use e\.g\. 512"):
        Tiling(tile_size=640).fitted(processor)


def test_tile_images_loads_as_the_processor_does():
    processor = ImageProcessor(patch_size=8, resolution=32, max_resolution=64, max_pixels=5000)
    tiling = Tiling(tile_size=32, max_tiles=4)
    rotated = exif_rotated_jpeg()  # 20x40 stored, 40x20 upright: 1 col x 2 rows + thumbnail
    tiles, layouts = tile_images([noise(64, 64), rotated], tiling, processor)
    assert layouts == [TileLayout(2, 2, True), TileLayout(2, 1, True)]
    assert len(tiles) == 5 + 3 and all(t.shape == (3, 32, 32) for t in tiles)
    expected, _ = tile_image(noise(64, 64), tile_size=32, max_tiles=4)
    assert torch.equal(torch.stack(tiles[:5]), expected)
    with pytest.raises(ImageLoadError, match="5000"):
        tile_images([noise(80, 80)], tiling, processor)  # 6400 px > max_pixels


def test_cut_tiles_on_a_grid_the_caller_chose():
    image = noise(50, 130)
    tiles, layout = cut_tiles(image, 3, 2, tile_size=16, thumbnail=False)  # not InternVL's grid
    assert layout == TileLayout(3, 2, False) and tiles.shape == (6, 3, 16, 16)
    resized = pil_to_tensor(to_rgb(image).resize((32, 48), Image.Resampling.BICUBIC))
    assert torch.equal(untile(tiles, layout), resized)
    assert cut_tiles(image, 1, 1, tile_size=16)[1] == TileLayout(1, 1, False)  # no thumbnail
    with pytest.raises(ValueError, match="rows must be a positive integer; got 0"):
        cut_tiles(image, 0, 2, tile_size=16)

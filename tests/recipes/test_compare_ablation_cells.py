"""Grid cells for the paper's other ablation axes (Tables 7 and A10, the image modes): keys,
checked values, and each setting reaching the model it builds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from recipes.compare.cells import _cell_parts
from recipes.compare.grid import Cell, CompareGrid
from recipes.quickstart.model import TinySettings, assemble, tiny_parts
from vlm.schema import RecipeError, from_dict


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    out = tmp_path_factory.mktemp("parts")
    return SimpleNamespace(parts=tiny_parts(TinySettings(), out, seed=0), out=out)


def test_keys_name_every_axis():
    cell = from_dict(Cell, {"feature_layers": [0, 2], "aggregation": "dense"}, "cells[0]")
    assert cell.key == "tiny-tome-k16-L0_2-dense" and cell.feature_layers == (0, 2)
    assert Cell(image_mode="pad", dst="random").key == "tiny-tome-k16-pad-dst-random"
    assert Cell().key == "tiny-tome-k16"  # the old keys stay: finished cells are found again


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        (
            {"image_mode": "square"},
            r"image_mode must be one of \['fixed', 'keep-aspect', 'native', 'pad'\]",
        ),
        ({"dst": "centre"}, r"dst must be one of \['top-left', 'random'\]"),
        ({"aggregation": "mean"}, r"aggregation must be one of \['sparse', 'dense'\]; got 'mean'"),
        ({"compressor": "avgpool", "dst": "random"}, r"dst .* needs compressor 'tome'"),
    ],
)
def test_bad_values_name_the_allowed_ones(cell, message):
    with pytest.raises(RecipeError, match=message):
        CompareGrid(cells=[cell]).expand()


def test_dst_and_image_mode_reach_the_model(context):
    settings = TinySettings()
    page = Image.new("RGB", (64, 32), (250, 250, 250))
    pixels = torch.rand(1, 3, 64, 64)
    default, _ = assemble(context.parts, settings, "tome")
    random_dst, _ = assemble(context.parts, settings, "tome", dst="random")
    assert random_dst.compressor.dst == "random" and random_dst.config.compressor["dst"] == "random"
    with torch.no_grad():
        a, b = default.get_image_features(pixels)[0], random_dst.get_image_features(pixels)[0]
    assert a.shape == b.shape and not torch.allclose(a, b)  # other sinks, other tokens

    _, keep = assemble(context.parts, settings, "tome")
    _, pad = assemble(context.parts, settings, "tome", image_mode="pad")
    assert keep.image_processor([page])[0].shape == (3, 32, 64)  # longest side 64, aspect kept
    padded = pad.image_processor([page])[0]
    assert padded.shape == (3, 64, 64)  # a square: the page centred on the mean colour
    assert torch.allclose(padded[:, 0, 0], torch.tensor(pad.image_processor.pad_color), atol=0.01)


def test_feature_layers_and_aggregation_rebuild_the_encoder(context):
    pixels = torch.rand(2, 3, 64, 64)
    assert _cell_parts(context, Cell()) is context.parts  # nothing asked: the shared parts
    sparse = _cell_parts(context, Cell(feature_layers=(0, 2))).encoder
    dense = _cell_parts(context, Cell(feature_layers=(0, 2), aggregation="dense")).encoder
    with torch.no_grad():
        last = context.parts.encoder(pixels).grid
        grids = sparse(pixels).grid, dense(pixels).grid
    assert grids[0].shape[-1] == 2 * last.shape[-1] == grids[1].shape[-1]  # two levels stacked
    # the same warmed weights: block 2 (the last) is the second half of the sparse features
    assert torch.allclose(grids[0][..., last.shape[-1] :], last, atol=1e-5)
    assert not torch.allclose(grids[0], grids[1])  # dense averages groups of blocks

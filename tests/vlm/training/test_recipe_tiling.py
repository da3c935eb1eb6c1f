"""The recipe key ``model.tiling`` reaches the model: more image tokens, the encoder sees tiles;
bad values are errors naming the allowed ones, at load time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from train_helpers import losses, tiny_recipe

from vlm.schema import RecipeError
from vlm.training import build_model, load_stage, recipe_from_dict, train
from vlm.training.recipe import dump_recipe

MINIMAL = {
    "stage": "align",
    "model": {"encoder": "tiny", "llm": "tiny", "num_tokens": 4},  # tiny tower: 64 px, patch 16
    "data": {"kind": "synthdoc", "num_samples": 4},
}


def page(height: int = 128, width: int = 128) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def encode(overrides: list[str]) -> tuple[int, int, int]:
    """(image tokens in input_ids, pixel rows the encoder sees, features the model makes) for
    one 128 px page under the recipe with ``overrides``."""
    model, processor = build_model(recipe_from_dict(MINIMAL, overrides).model, seed=0)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    batch = processor(images=[page()], conversations=chat, add_generation_prompt=True)
    with torch.no_grad():
        features = model.get_image_features(batch["pixel_values"])
        model(**batch)  # the model takes what the processor made
    tokens = int((batch["input_ids"] == model.config.image_token_id).sum())
    return tokens, len(batch["pixel_values"]), sum(f.shape[0] for f in features)


def test_a_tiling_override_gives_tiles_and_more_tokens():
    assert encode([]) == (4, 1, 4)  # one 64 px image, K = 4
    # 2x2 tiles of 64 px + the thumbnail, K = 4 each
    assert encode(["model.tiling={max_tiles: 4}"]) == (20, 5, 20)
    assert encode(["model.tiling.max_tiles=4", "model.tiling.thumbnail=false"]) == (16, 4, 16)
    assert encode(["model.tiling={max_tiles: 4, tile_size: 32}"]) == (20, 5, 20)  # 2x2 patches


def test_the_resolved_recipe_records_the_tiling():
    recipe = recipe_from_dict(MINIMAL, ["model.tiling={max_tiles: 6}"])
    written = yaml.safe_load(dump_recipe(recipe))["model"]["tiling"]
    assert written == {"tile_size": None, "min_tiles": 1, "max_tiles": 6, "thumbnail": True}
    assert recipe_from_dict(MINIMAL).model.tiling is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.tiling={tiles: 4}",
            r"model.tiling: unknown tiling keys \['tiles'\]; allowed: "
            r"\['tile_size', 'min_tiles', 'max_tiles', 'thumbnail'\]",
        ),
        ("model.tiling.max_tiles=0", r"model.tiling: max_tiles must be a positive integer; got 0"),
        ("model.tiling.max_tiles=yes", r"max_tiles must be a positive integer; got True"),
        ("model.tiling.tile_size=33.5", r"tile_size must be a positive integer; got 33.5"),
        ("model.tiling.thumbnail=maybe", r"thumbnail must be true or false; got 'maybe'"),
        ("model.tiling={min_tiles: 5, max_tiles: 2}", r"min_tiles 5 is above max_tiles 2"),
        ("model.tiling=4", r"tiling must be null or a mapping with keys \['tile_size'"),
    ],
)
def test_bad_tiling_values_are_errors_at_load_time(override, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(MINIMAL, [override])


def test_tiling_is_decided_by_the_saved_model_with_init_from():
    given = {**MINIMAL, "model": {"init_from": "runs/s1", "tiling": {"max_tiles": 4}}}
    with pytest.raises(RecipeError, match=r"model keys \['tiling'\] would be ignored"):
        recipe_from_dict(given)


def test_a_tile_the_encoder_cannot_take_is_an_error_when_building():
    recipe = recipe_from_dict(MINIMAL, ["model.tiling={tile_size: 40}"])
    with pytest.raises(ValueError, match=r"tile_size 40 must be a multiple of the encoder's patch"):
        build_model(recipe.model, seed=0)


def test_a_tiny_stage_trains_with_tiles_and_saves_them(tmp_path):
    """The whole training path (dataset, collator, Trainer) on 128 px pages in 64 px tiles."""
    out = tmp_path / "align"
    recipe = tiny_recipe(
        "stage1_align",
        out,
        "train.max_steps=2",
        "data.num_samples=16",
        "data.synthdoc.image_size=128",
        "model.tiling={max_tiles: 4}",
    )
    before = build_model(recipe.model, seed=recipe.train.seed)[0].projector.state_dict()
    train(recipe)
    loss = list(losses(out).values())
    assert len(loss) == 2 and all(math.isfinite(x) for x in loss)
    model, processor = load_stage(out)
    saved = {"tile_size": 64, "min_tiles": 1, "max_tiles": 4, "thumbnail": True}
    assert model.config.tiling == processor.tiling.to_dict() == saved
    assert processor.tokens_for_image(128, 128) == 5 * 8  # 2x2 + thumbnail, K = 8 each
    after = model.projector.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the projector learnt

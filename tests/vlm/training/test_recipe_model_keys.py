"""The recipe keys that reach the paper's setups (issue 12): model.image_mode, aggregation,
blockwise_tome and compressor_options.dst each change what the built model does, and a bad
value is an error naming the allowed ones."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image

from encoder.tiny import write_tiny_radio
from vlm.processing import VLMProcessor
from vlm.training import RecipeError, build_model, dump_recipe, recipe_from_dict
from vlm.training.checkpoints import write_marker

MINIMAL = {
    "stage": "align",
    "model": {"encoder": "tiny", "llm": "tiny"},  # 64 px: 4 x 4 patches at most
    "data": {"kind": "synthdoc", "num_samples": 4},
}
K4 = "model.num_tokens=4"
PAGE = Image.new("RGB", (1024, 768), (255, 255, 255))  # a 4:3 page, w x h


def build(*overrides: str, base: dict | None = None):
    """Model + processor of MINIMAL (K = 4 unless blockwise_tome sets it) with overrides."""
    if base is None and not any("blockwise_tome" in o for o in overrides):
        overrides = (K4, *overrides)
    return build_model(recipe_from_dict(base or MINIMAL, list(overrides)).model, seed=0)


@torch.no_grad()
def merged(model, processor, image) -> tuple[int, int]:
    """(N patches of the processed image, r: how many of them ToMe merged away)."""
    (pixels,) = processor.image_processor(image)
    grid = model.vision_tower(pixels[None]).grid
    out = model.compressor(grid)
    return grid.shape[1] * grid.shape[2], int((out.sizes - 1).sum())


@pytest.fixture(scope="module")
def radio_768(tmp_path_factory):
    """A tiny RADIO that takes 768 px (position table up to 1024 px)."""
    folder = tmp_path_factory.mktemp("radio768") / "radio"
    return write_tiny_radio(folder, max_resolution=1024, preferred_resolution=768)


def test_pad_at_768_merges_r_2048_for_a_4_3_page_and_keep_aspect_does_not(radio_768):
    model_keys = {"encoder": str(radio_768), "llm": "tiny", "resolution": 768, "num_tokens": 256}
    base = {**MINIMAL, "model": model_keys}
    model, processor = build("model.image_mode=pad", base=base)
    assert merged(model, processor, PAGE) == (48 * 48, 2048)  # the paper's "ToMe r=2048"
    model, processor = build("model.image_mode=keep-aspect", base=base)
    assert merged(model, processor, PAGE) == (36 * 48, 1472)  # 1728 - 256


def test_image_mode_pad_changes_the_pixels_and_pads_with_the_encoders_mean(tmp_path):
    plain_model, plain = build()
    _, processor = build("model.image_mode=pad")
    (keep,) = plain.image_processor(PAGE)
    (padded,) = processor.image_processor(PAGE)
    assert keep.shape == (3, 48, 64) and padded.shape == (3, 64, 64)
    mean = plain_model.vision_tower.config.norm_mean  # RADIO's input conditioner
    band = torch.tensor([int(c * 255) for c in mean]).div(255)
    assert torch.allclose(padded[:, :8].flatten(1).T, band.expand(64 * 8, 3))  # top band
    # saved with the model, and a saved stage may be loaded in another mode
    processor.save_pretrained(tmp_path / "pad")
    assert (
        VLMProcessor.from_pretrained(tmp_path / "pad").image_processor == processor.image_processor
    )
    plain_model.save_pretrained(tmp_path / "stage")
    plain.save_pretrained(tmp_path / "stage")
    write_marker(tmp_path / "stage", "stage", 0, recursive=False)
    init = {**MINIMAL, "model": {"init_from": str(tmp_path / "stage"), "image_mode": "fixed"}}
    _, loaded = build(base=init)
    assert loaded.image_processor.mode == "fixed"
    assert loaded.image_processor(PAGE)[0].shape == (3, 64, 64)


def test_aggregation_dense_changes_the_encoders_features():
    # the tiny encoder has 2 blocks: sparse [1] is block 1, dense [1] the mean of blocks 0, 1
    sparse, processor = build("model.feature_layers=[1]")
    dense, _ = build("model.feature_layers=[1]", "model.aggregation=dense")
    first, _ = build("model.feature_layers=[0]")
    assert (sparse.vision_tower.aggregation, dense.vision_tower.aggregation) == ("sparse", "dense")
    (pixels,) = processor.image_processor(PAGE)
    with torch.no_grad():
        block1, mean, block0 = (m.vision_tower(pixels[None]).grid for m in (sparse, dense, first))
    assert not torch.allclose(block1, mean)
    torch.testing.assert_close(mean, (block0 + block1) / 2)  # the tiny has no normaliser
    assert dense.config.vision_config["aggregation"] == "dense"  # saved with the model


def test_blockwise_tome_merges_inside_the_encoder_and_gives_k_tokens():
    model, processor = build("model.blockwise_tome=6")  # num_tokens follows it
    assert model.vision_tower.blockwise_tome == 6 and model.compressor.num_tokens == 6
    (pixels,) = processor.image_processor(PAGE)
    with torch.no_grad():
        out = model.vision_tower(pixels[None])
        (features,) = model.get_image_features(pixels[None])
    assert out.compressed is not None and out.compressed.num_tokens == 6
    assert features.shape[0] == 6
    assert processor.num_image_tokens(*pixels.shape[1:]) == 6


def test_dst_random_moves_the_tome_destinations():
    top_left, processor = build()
    random, _ = build("model.compressor_options={dst: random, seed: 3}")
    assert (top_left.compressor.dst, random.compressor.dst) == ("top-left", "random")
    assert random.config.compressor["dst"] == "random"  # saved with the model
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    (pixels,) = processor.image_processor(noise[0])  # 4 x 4 patches, K = 4: 2 x 2 windows
    with torch.no_grad():
        grid = top_left.vision_tower(pixels[None]).grid  # the same tower in both models
        a, b = top_left.compressor(grid).assignment, random.compressor(grid).assignment
        (fa,), (fb,) = (m.get_image_features(pixels[None]) for m in (top_left, random))
    assert not torch.equal(a, b)
    assert not torch.allclose(fa, fb)  # what the LLM reads changes with it


BAD = [
    (
        "model.image_mode=square",
        r"model.image_mode must be one of \['fixed', 'keep-aspect', 'native', 'pad'\]; got 'square'",
    ),
    (
        "model.aggregation=mean",
        r"model.aggregation must be one of \['sparse', 'dense'\]; got 'mean'",
    ),
    ("model.blockwise_tome=0", r"model.blockwise_tome must be >= 1; got 0"),
    (
        "model.compressor_options={dst: centre}",
        r"model.compressor_options: dst must be one of \['top-left', 'random'\]; got 'centre'",
    ),
    (
        "model.compressor_options={sink: random}",
        r"unknown options \['sink'\]; known: \['stride', 'dst', 'seed', 'scale'\]",
    ),
    ("model.aggregation=dense", r"aggregation=dense averages .* set feature_layers too"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_allowed_ones(override, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(MINIMAL, [override])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.compressor=avgpool"], r"use compressor tome and num_tokens 6 .*'avgpool'"),
        (["model.feature_layers=[1]"], r"feature_layers are not available"),
    ],
)
def test_blockwise_tome_must_agree_with_the_output_merger(overrides, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(MINIMAL, ["model.blockwise_tome=6", *overrides])


def test_the_resolved_recipe_of_blockwise_tome_loads_again():
    resolved = dump_recipe(recipe_from_dict(MINIMAL, ["model.blockwise_tome=6"]))
    again = recipe_from_dict(yaml.safe_load(resolved))  # num_tokens is written as K
    assert (again.model.blockwise_tome, again.model.num_tokens) == (6, 6)


def test_blockwise_tome_and_a_different_num_tokens_is_an_error():
    with pytest.raises(RecipeError, match=r"num_tokens 6 .* got compressor 'tome', num_tokens 4"):
        recipe_from_dict(MINIMAL, ["model.blockwise_tome=6", K4])


def test_encoder_keys_are_build_only():
    init = {**MINIMAL, "model": {"init_from": "runs/x", "aggregation": "sparse"}}
    with pytest.raises(RecipeError, match=r"model keys \['aggregation'\] would be ignored"):
        recipe_from_dict(init)

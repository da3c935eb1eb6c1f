"""Every recipe value is checked when the recipe is read, before anything is built: types,
ranges and enums, each error naming the key, the value and what is allowed (issue 15's
corpus of bad recipe values)."""

from __future__ import annotations

import pytest

from vlm.schema import RecipeError
from vlm.training import recipe_from_dict

MINIMAL = {
    "stage": "align",
    "model": {"encoder": "tiny", "llm": "tiny"},
    "data": {"kind": "synthdoc", "num_samples": 4},
}

BAD = [
    ("train.max_steps=0", r"train.max_steps: must be -1 \(run num_train_epochs\) or >= 1; got 0"),
    ("train.max_steps=-5", r"train.max_steps: must be -1 .* or >= 1; got -5"),
    ("train.max_steps=2.5", r"train.max_steps must be an integer; got 2.5"),
    ("data.max_length=2.5", r"data.max_length must be an integer; got 2.5"),
    ("data.max_length=0", r"data.max_length must be >= 1; got 0"),
    ("train.gradient_accumulation_steps=0", r"gradient_accumulation_steps must be >= 1; got 0"),
    ("train.per_device_train_batch_size=0", r"per_device_train_batch_size must be >= 1; got 0"),
    ("train.global_batch_size=-8", r"global_batch_size must be >= 1; got -8"),
    ("train.learning_rate=-1e-3", r"learning_rate must be >= 0; got -0.001"),
    ("train.learning_rate=fast", r"learning_rate must be a number; got 'fast'"),
    ("train.save_steps=0", r"train.save_steps must be > 0; got 0"),
    ("train.save_total_limit=0", r"save_total_limit must be >= 1; got 0"),
    ("train.stop_at_step=0", r"stop_at_step must be >= 1; got 0"),
    (
        "train.lr_scheduler_type=cosine_annealing",
        r"'cosine_annealing' is not a transformers scheduler; use one of \[.*'cosine'",
    ),
    ("train.lora.dropout=1.0", r"train.lora.dropout must be < 1.0; got 1.0"),
    ("train.lora.r=0", r"train.lora.r must be >= 1; got 0"),
    ("train.nonfinite=ignore", r"train.nonfinite must be one of \['error', 'skip'\]; got 'ignore'"),
    ("train.bf16=maybe", r"train.bf16 must be true or false; got 'maybe'"),
    ("model.num_tokens=0", r"model.num_tokens must be >= 1; got 0"),
    (
        "model.compressor=pool",
        r"model.compressor must be one of \['tome', 'unshuffle', 'avgpool', 'none'\]",
    ),
    ("model.dtype=float64", r"model.dtype must be one of \['float32', 'bfloat16', 'float16'\]"),
    ("data.kind=csv", r"data.kind must be one of \['synthdoc', 'llava', 'hf'\]; got 'csv'"),
    ("data.num_samples=0", r"data.num_samples must be >= 1; got 0"),
    ("data.max_aspect_ratio=0.5", r"data.max_aspect_ratio must be >= 1.0; got 0.5"),
    ("data.synthdoc.levels=[easy, tricky]", r"levels must be a non-empty subset"),
    ("model.num_tokens=true", r"model.num_tokens: must be a number, not true"),
    ("train.max_steps=yes", r"train.max_steps: must be a number, not true"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_is_a_clear_error_at_load_time(override, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(MINIMAL, [override])


def test_yaml_loose_scalars_are_read_as_their_type():
    recipe = recipe_from_dict(MINIMAL, ["train.per_device_train_batch_size='256'"])
    assert recipe.train.per_device_train_batch_size == 256  # was: '<' not supported mid-run
    assert recipe_from_dict(MINIMAL, ["train.learning_rate=1e-3"]).train.learning_rate == 1e-3
    assert recipe_from_dict(MINIMAL, ["data.subset=2023"]).data.subset == "2023"  # a name


def test_every_problem_is_reported_at_once():
    with pytest.raises(RecipeError) as err:
        recipe_from_dict(MINIMAL, ["train.max_steps=0", "train.save_steps=0", "data.seed=-1"])
    text = str(err.value)
    assert "train.max_steps" in text and "train.save_steps" in text and "data.seed" in text


def test_max_image_pixels_reaches_the_processor_and_is_saved(tmp_path):
    from vlm.processing import VLMProcessor
    from vlm.training import build_model

    recipe = recipe_from_dict(MINIMAL, ["model.max_image_pixels=5000"])
    _, processor = build_model(recipe.model, seed=0)
    assert processor.image_processor.max_pixels == 5000
    processor.save_pretrained(tmp_path)
    assert VLMProcessor.from_pretrained(tmp_path).image_processor.max_pixels == 5000
    with pytest.raises(RecipeError, match=r"model.max_image_pixels must be >= 1; got 0"):
        recipe_from_dict(MINIMAL, ["model.max_image_pixels=0"])

"""Recipes: YAML mapped 1:1 onto dataclasses, stage policies, the shipped recipes and configs."""

from __future__ import annotations

import json

import pytest
import yaml
from train_helpers import REPO, STAGES, TINY

from vlm.training import RecipeError, load_recipe, plan_modules, recipe_from_dict

MINIMAL = {
    "stage": "align",
    "model": {"encoder": "tiny", "llm": "tiny"},
    "data": {"kind": "synthdoc", "num_samples": 4},
}


def recipe(**sections):
    return recipe_from_dict({**MINIMAL, **sections})


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"trian": {}}, r"unknown key 'trian' in section \"the recipe's top level\""),
        ({"train": {"learning_rat": 1}}, r"unknown key 'learning_rat' in section 'train'"),
        (
            {"train": {"modules": {"llm": {"mode": "full", "lrr": 1}}}},
            r"unknown key 'lrr' in section 'train.modules.llm'",
        ),
        ({"train": {"lora": {"rank": 8}}}, r"unknown key 'rank' in section 'train.lora'"),
        (
            {"model": {"encoder": "tiny", "llm": "tiny", "num_token": 8}},
            r"unknown key 'num_token' in section 'model'",
        ),
        ({"data": {"kind": "synthdoc", "num_sample": 4}}, r"num_sample.*data"),
    ],
)
def test_unknown_keys_are_errors_naming_key_and_section(sections, message):
    with pytest.raises(RecipeError, match=message):
        recipe(**sections)


def test_unknown_key_in_a_yaml_file_and_in_an_override(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "train": {"max_step": 3}}))
    with pytest.raises(RecipeError, match=r"unknown key 'max_step' in section 'train'.*max_steps"):
        load_recipe(path)
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(RecipeError, match=r"unknown key 'warmup' in section 'train'"):
        load_recipe(path, ["train.warmup=0.1"])


def test_values_are_typed_and_overrides_read_as_yaml():
    r = recipe(train={"learning_rate": "1e-3", "modules": {"encoder": {"mode": "full"}}})
    assert r.train.learning_rate == pytest.approx(1e-3)  # PyYAML reads 1e-3 as a string
    r = recipe_from_dict(
        MINIMAL, ["train.max_steps=7", "train.report_to=[none]", "train.modules.llm.mode=lora"]
    )
    assert (r.train.max_steps, r.train.report_to, r.train.modules.llm.mode) == (7, ["none"], "lora")
    with pytest.raises(RecipeError, match=r"train.max_steps must be an integer; got 'ten'"):
        recipe_from_dict(MINIMAL, ["train.max_steps=ten"])
    with pytest.raises(RecipeError, match=r"mode must be one of \['full', 'frozen', 'lora'\]"):
        recipe(train={"modules": {"llm": {"mode": "partial"}}})
    with pytest.raises(RecipeError, match="is not key=value"):
        recipe_from_dict(MINIMAL, ["train.max_steps"])


def test_model_is_built_or_loaded_never_both():
    with pytest.raises(RecipeError, match=r"init_from.*model keys \['encoder', 'llm'\]"):
        recipe(model={"encoder": "tiny", "llm": "tiny", "init_from": "runs/s1"})
    with pytest.raises(RecipeError, match=r"either init_from .* or both encoder and llm"):
        recipe(model={"encoder": "tiny"})
    with pytest.raises(RecipeError, match="has no 'stage'"):
        recipe_from_dict({k: v for k, v in MINIMAL.items() if k != "stage"})


def test_stage_policies_and_learning_rates():
    def modes(stage, **train):
        plans = plan_modules(recipe(stage=stage, train={"learning_rate": 1e-3, **train}))
        return {name: (p.mode, p.lr) for name, p in plans.items()}

    assert modes("align") == {
        "encoder": ("frozen", None),
        "projector": ("full", 1e-3),
        "llm": ("frozen", None),
    }
    assert modes("pretrain")["llm"] == ("full", 1e-3)
    assert modes("sft")["encoder"] == ("full", pytest.approx(1e-4))  # a tenth by default
    lora = modes("sft", modules={"llm": {"mode": "lora", "lr": 2e-4}, "encoder": {"lr": 5e-6}})
    assert lora["llm"] == ("lora", 2e-4) and lora["encoder"] == ("full", 5e-6)
    with pytest.raises(RecipeError, match="freezes every module"):
        modes("align", modules={"projector": {"mode": "frozen"}})
    with pytest.raises(RecipeError, match="projector is new and small"):
        modes("align", modules={"projector": {"mode": "lora"}})
    with pytest.raises(RecipeError, match="QLoRA"):
        modes("pretrain", lora={"quantize": "4bit"})


@pytest.mark.parametrize("stage", STAGES)
def test_shipped_recipes_load(stage):
    real, tiny = (
        load_recipe(REPO / "recipes" / f"{stage}.yaml"),
        load_recipe(TINY / f"{stage}.yaml"),
    )
    assert real.stage == tiny.stage
    assert plan_modules(real) and plan_modules(tiny)
    if stage == "stage1_align":
        assert (real.model.encoder, real.model.llm) == ("radio_v2.5-h", "Qwen/Qwen2-7B-Instruct")
        assert (real.model.resolution, real.model.compressor, real.model.num_tokens) == (
            768,
            "tome",
            256,
        )
        assert (real.train.learning_rate, real.train.global_batch_size) == (1e-3, 256)
    else:
        previous = STAGES[STAGES.index(stage) - 1]
        assert real.model.init_from == f"runs/{previous}"
        assert tiny.model.init_from == f"runs/tiny/{previous}"
        assert real.train.global_batch_size == 128
    assert real.train.bf16 and real.train.activation_checkpointing
    assert real.train.lr_scheduler_type == "cosine" and real.train.warmup_steps == 0.03


def test_accelerate_configs_point_at_existing_deepspeed_files():
    expected = {
        "cpu": "NO",
        "single_gpu": "NO",
        "multi_gpu_ddp": "MULTI_GPU",
        "zero2": "DEEPSPEED",
        "zero3": "DEEPSPEED",
        "zero3_offload": "DEEPSPEED",
        "multi_node_example": "DEEPSPEED",
    }
    for name, kind in expected.items():
        config = yaml.safe_load((REPO / "recipes" / "accelerate" / f"{name}.yaml").read_text())
        assert config["distributed_type"] == kind, name
        if kind == "DEEPSPEED":
            ds = json.loads(
                (REPO / config["deepspeed_config"]["deepspeed_config_file"]).read_text()
            )
            # per-module LRs need the Trainer's optimizer: no DeepSpeed optimizer/scheduler
            assert "optimizer" not in ds and "scheduler" not in ds
            assert ds["bf16"]["enabled"] == "auto"

"""Training glue: YAML recipes -> transformers' Trainer, one stage at a time.

    >>> from vlm.training import load_recipe, train
    >>> train(load_recipe("recipes/stage1_align.yaml", ["train.max_steps=100"]))

- ``recipe``: the dataclasses a recipe maps onto (unknown keys are errors).
- ``modules``: stage freeze policy, per-module learning rates, the table printed at start.
- ``loading``: build a model, or load the previous stage (plain or LoRA).
- ``lora``: PEFT LoRA / QLoRA and ``merge_lora``.
- ``checkpoints``: completion markers, the latest complete checkpoint, rotation.
- ``trainer``: the Trainer subclass (per-module LR param groups) and run bookkeeping.
- ``run``: ``train(recipe)``, one stage end to end.
"""

from vlm.schema import RecipeError

from .checkpoints import is_complete, latest_checkpoint
from .loading import build_model, load_stage
from .lora import merge_lora
from .modules import STAGE_MODES, ModulePlan, plan_modules
from .recipe import (
    LoraSpec,
    ModelSpec,
    Modules,
    ModuleSpec,
    Recipe,
    TrainSpec,
    dump_recipe,
    load_recipe,
    recipe_from_dict,
)
from .run import train

__all__ = [
    "STAGE_MODES",
    "LoraSpec",
    "ModelSpec",
    "ModulePlan",
    "ModuleSpec",
    "Modules",
    "Recipe",
    "RecipeError",
    "TrainSpec",
    "build_model",
    "dump_recipe",
    "is_complete",
    "latest_checkpoint",
    "load_recipe",
    "load_stage",
    "merge_lora",
    "plan_modules",
    "recipe_from_dict",
    "train",
]

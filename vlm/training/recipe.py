"""Training recipes: YAML mapped 1:1 onto dataclasses (DESIGN.md sections 6 and 8).

    >>> recipe = load_recipe("recipes/stage1_align.yaml", ["train.max_steps=10"])

A recipe has four sections; every key is a dataclass field below and an unknown key is an
error naming the key and its section.

    stage: align | pretrain | sft      # the default freeze policy (see vlm.training.modules)
    model: ModelSpec                   # what to build, or init_from: the previous stage's dir
    data:  vlm.data.DataConfig         # the data side's own schema
    train: TrainSpec                   # TrainingArguments subset + modules, LoRA, resume

Overrides (``--override train.learning_rate=2e-5``) are applied to the parsed YAML before the
dataclasses are built, so they are checked exactly like the file's own keys; values are read
as YAML (``true``, ``[1, 2]``, ``null``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, Field
from transformers import SchedulerType

from encoder.image_processing import MODES as IMAGE_MODES
from encoder.radio import AGGREGATIONS
from encoder.tiling import Tiling
from token_merge import DST_MODES, SETTINGS
from vlm.data import DataConfig
from vlm.schema import (
    STRICT,
    Integer,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    RecipeError,
    apply_overrides,
    from_dict,
    read_yaml,
    to_dict,
)

STAGES = ("align", "pretrain", "sft")
MODULES = ("encoder", "projector", "llm")
MODES = ("full", "frozen", "lora")
# model keys that only describe a NEW model; with init_from the saved model decides them
BUILD_ONLY = frozenset(
    {
        "encoder",
        "llm",
        "compressor",
        "num_tokens",
        "compressor_options",
        "projector",
        "feature_layers",
        "aggregation",
        "blockwise_tome",
        "image_markers",
        "tiling",
    }
)


# a recipe's tiling mapping, read by Tiling's own checks (unknown keys name the allowed ones)
TilingSpec = Annotated[Tiling | None, BeforeValidator(Tiling.from_value)]


def _steps_or_minus_one(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError(f"must be -1 (run num_train_epochs) or >= 1; got {value}")
    return value


def _scheduler(value: str) -> str:
    known = [s.value for s in SchedulerType]
    if value not in known:
        raise ValueError(f"{value!r} is not a transformers scheduler; use one of {known}")
    return value


def _compressor_options(value: dict[str, Any]) -> dict[str, Any]:
    # checked here so a typo fails when the recipe is read, not after the model is built
    known = [k for k in SETTINGS if k not in ("method", "num_tokens")]
    if unknown := sorted(set(value) - set(known)):
        raise ValueError(
            f"unknown options {unknown}; known: {known} (the method and K are model.compressor "
            "and model.num_tokens)"
        )
    if "dst" in value and value["dst"] not in DST_MODES:
        raise ValueError(f"dst must be one of {list(DST_MODES)}; got {value['dst']!r}")
    return value


@dataclass
class ModelSpec:
    """What to train. Either build a new model (``encoder`` + ``llm``) or continue from the
    previous stage's saved run directory (``init_from``), never both.

    encoder: an ``encoder.build_encoder`` spec ("radio_v2.5-h", hub id, folder) or "tiny"
             (the random test RADIO of ``vlm.tiny``).
    llm:     a causal-LM hub id or folder, or "tiny" / "tiny:llama" (``vlm.tiny``).
    resolution: longest image side the processor resizes to (None: the encoder's preferred).
    image_mode: how images are resized (``encoder.image_processing``): "fixed" (a square,
             aspect lost), "keep-aspect" (longest side = resolution), "native" (own size,
             within the encoder's limits) or "pad" (centred on a square of the encoder's
             mean colour, then resolution x resolution: LLaVA / VILA's expand2square, the
             paper's setup); None keeps the encoder's default (keep-aspect). Saved with the
             model; may be given with init_from.
    max_image_pixels: larger images are refused (training: a counted image_too_large skip;
             inference and eval: an error), checked from the file header before decoding;
             None keeps the processor's limit (64 Mpx by default). Saved with the model.
    compressor / num_tokens / compressor_options: the token merger, its budget K and its
             options (``token_merge.TokenCompressor``): ``{dst: random, seed: 0}`` puts each
             ToMe window's destination ("sink") on a seeded random cell instead of the
             top-left one (paper Table A10), ``{stride: [sy, sx]}`` uses whole windows,
             ``{scale: s}`` is unshuffle's factor.
    projector: ``VLMConfig.projector`` settings (layer_norm, hidden_size, act).
    feature_layers: encoder layers whose features are used (None: the last).
    aggregation: with feature_layers, "sparse" (each chosen block) or "dense" (each group of
             blocks ending at a chosen one, averaged; RADIO only; paper Table 7); None: sparse.
    blockwise_tome: K, to merge tokens inside every encoder block (ToMe on the attention keys,
             proportional attention; paper Table A4) instead of once at the output; each
             image then gives K tokens, so num_tokens is K (or left out) and compressor tome.
    image_markers: optional [start, end] tokens around each image's placeholders.
    tiling:  null (none), or InternVL-style tiles, each compressed to its own tokens:
             {tile_size (null: the encoder's resolution), min_tiles, max_tiles, thumbnail}.
    dtype: dtype the weights are loaded in ("float32", "bfloat16"); None: float32. Mixed
           precision is ``train.bf16``; keep float32 weights unless memory forces otherwise.
    attn_implementation: attention kernels of the LLM and the vision tower ("sdpa",
           "flash_attention_2", "eager"); None: transformers' default (sdpa where supported).
    init_from: a finished earlier stage's output_dir (plain or LoRA); the model and processor
           are loaded from it, so only resolution, image_mode, max_image_pixels, dtype and
           attn_implementation may be given with it.
    """

    __pydantic_config__ = STRICT

    encoder: str | None = None
    llm: str | None = None
    resolution: PositiveInt | None = None
    image_mode: Literal[IMAGE_MODES] | None = None  # the processor's modes, one list
    max_image_pixels: PositiveInt | None = None
    compressor: Literal["tome", "unshuffle", "avgpool", "none"] = "tome"
    num_tokens: PositiveInt | None = 256
    compressor_options: Annotated[dict[str, Any], AfterValidator(_compressor_options)] = field(
        default_factory=dict
    )
    projector: dict[str, Any] = field(default_factory=dict)
    feature_layers: list[int] | None = None
    aggregation: Literal[AGGREGATIONS] | None = None
    blockwise_tome: PositiveInt | None = None
    image_markers: list[str] | None = None
    tiling: TilingSpec = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = None
    attn_implementation: str | None = None
    init_from: str | None = None


@dataclass
class ModuleSpec:
    """One module's policy. mode: "full" (train all weights), "frozen", "lora" (PEFT
    adapters; LLM and encoder only); None: the stage's default. lr: its learning rate; None:
    ``train.learning_rate`` (the encoder: a tenth of it)."""

    __pydantic_config__ = STRICT

    mode: Literal["full", "frozen", "lora"] | None = None
    lr: NonNegativeFloat | None = None


@dataclass
class Modules:
    __pydantic_config__ = STRICT

    encoder: ModuleSpec = field(default_factory=ModuleSpec)
    projector: ModuleSpec = field(default_factory=ModuleSpec)
    llm: ModuleSpec = field(default_factory=ModuleSpec)


@dataclass
class LoraSpec:
    """PEFT LoRA settings for the modules in mode "lora" (LLaVA: r=128, alpha=256).

    target_modules: leaf names of the Linear layers to adapt (None: every Linear inside the
        module except the LM head). quantize: "4bit" / "8bit" loads the LLM through
        bitsandbytes (QLoRA; CUDA only).
    """

    __pydantic_config__ = STRICT

    r: PositiveInt = 64
    alpha: PositiveFloat = 128
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: list[str] | None = None
    quantize: Literal["4bit", "8bit"] | None = None


@dataclass
class TrainSpec:
    """The loop. Fields named like ``transformers.TrainingArguments`` mean the same; the rest:

    global_batch_size: sets gradient_accumulation_steps = global / (per_device x processes)
        at launch (must divide); None: use gradient_accumulation_steps as given.
    bf16 / use_cpu: None = automatic (bf16: what ``accelerate launch`` was configured with,
        else on when the GPU supports it; use_cpu: on when there is no GPU).
    modules: per-module mode and learning rate over the stage's defaults.
    resume: false (start fresh; an output_dir holding checkpoints is then an error), "auto"
        (the latest complete checkpoint if any), true (must find one) or a checkpoint path.
    stop_at_step: save a checkpoint and stop at this step, the schedule still spanning the
        whole run (jobs under a time limit; --resume continues); the stage is not finished.
    nonfinite: what a non-finite loss or gradient norm does: "error" stops the run naming the
        step (the last checkpoint is intact); "skip" drops that optimizer step (no update),
        counts it, and reports the steps in the log and at the end. Not with DeepSpeed, whose
        engine has stepped before the norm is known.
    training_arguments: any other TrainingArguments fields, passed through as they are.
    """

    __pydantic_config__ = STRICT

    output_dir: str = "runs/train"
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    global_batch_size: PositiveInt | None = None
    num_train_epochs: PositiveFloat = 1.0
    max_steps: Annotated[Integer, AfterValidator(_steps_or_minus_one)] = -1
    learning_rate: NonNegativeFloat = 2e-5
    lr_scheduler_type: Annotated[str, AfterValidator(_scheduler)] = "cosine"
    warmup_steps: NonNegativeFloat = 0.03
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: NonNegativeFloat = 1.0
    bf16: bool | None = None
    use_cpu: bool | None = None
    activation_checkpointing: bool = False
    group_by_length: bool = False
    packing: bool = False
    pad_to_multiple_of: PositiveInt | None = None
    logging_steps: PositiveFloat = 10
    save_steps: PositiveFloat = 500
    save_total_limit: PositiveInt | None = 2
    dataloader_num_workers: NonNegativeInt = 0
    seed: NonNegativeInt = 0
    report_to: list[str] = field(default_factory=lambda: ["none"])
    modules: Modules = field(default_factory=Modules)
    lora: LoraSpec = field(default_factory=LoraSpec)
    resume: bool | str = False
    stop_at_step: PositiveInt | None = None
    nonfinite: Literal["error", "skip"] = "error"
    training_arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    __pydantic_config__ = STRICT

    stage: Literal["align", "pretrain", "sft"]
    model: ModelSpec
    data: DataConfig
    train: TrainSpec = field(default_factory=TrainSpec)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key.sub=value`` overrides, build and check the dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; pass a YAML file (see recipes/)")
    data = read_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping (stage, model, data, train)")
    return recipe_from_dict(data, overrides)


def recipe_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """``load_recipe`` on an already parsed mapping."""
    data = yaml.safe_load(yaml.safe_dump(data))  # a deep copy the overrides may change
    apply_overrides(data, overrides)
    if "stage" not in data:
        raise RecipeError(f"the recipe has no 'stage'; set stage: to one of {list(STAGES)}")
    if "model" not in data or "data" not in data:
        raise RecipeError("the recipe needs the sections 'model' and 'data' (and usually 'train')")
    recipe = from_dict(Recipe, data, section="")
    _check_model(data["model"], recipe.model)
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (every field, defaults included; with init_from, the
    build-only model keys are left out), loadable by ``load_recipe``."""
    data = to_dict(recipe)
    if recipe.model.init_from is not None:
        data["model"] = {k: v for k, v in data["model"].items() if k not in BUILD_ONLY}
    return yaml.safe_dump(data, sort_keys=False)


def _check_model(given: dict[str, Any], spec: ModelSpec) -> None:
    """On the keys the recipe GAVE (defaults cannot tell "left out" from "set to default");
    their values are read from ``spec`` (validated)."""
    given = {k: v for k, v in given.items() if v is not None}
    if "init_from" in given:
        if ignored := sorted(set(given) & BUILD_ONLY):
            raise RecipeError(
                f"model.init_from={given['init_from']!r} loads the previous stage's model and "
                f"processor, so model keys {ignored} would be ignored; remove them (or drop "
                "init_from to build a new model)"
            )
    elif not {"encoder", "llm"} <= set(given):
        raise RecipeError(
            "model needs either init_from (the previous stage's output_dir) or both encoder "
            f"and llm to build a new model; got keys {sorted(given) or 'none'}"
        )
    if spec.aggregation == "dense" and spec.feature_layers is None:
        raise RecipeError(
            "model.aggregation=dense averages groups of encoder blocks ending at each of "
            "model.feature_layers; set feature_layers too (the paper's Table 7: [9, 19, 30, 31] "
            "on a 32-block encoder)"
        )
    if spec.blockwise_tome is not None:
        _check_blockwise(spec, num_tokens_given="num_tokens" in given)
        spec.num_tokens = spec.blockwise_tome  # what the model will hold (and dump_recipe write)


def _check_blockwise(spec: ModelSpec, num_tokens_given: bool) -> None:
    """blockwise_tome: K merges inside the encoder, so the output merger must agree with it."""
    k = spec.blockwise_tome
    if spec.feature_layers is not None:
        raise RecipeError(
            f"model.blockwise_tome={k} merges tokens inside the encoder's blocks, so per-block "
            "model.feature_layers are not available; remove one of them"
        )
    if spec.compressor != "tome" or (num_tokens_given and spec.num_tokens != k):
        raise RecipeError(
            f"model.blockwise_tome={k} gives K={k} tokens per image from the encoder itself; "
            f"use compressor tome and num_tokens {k} (or leave them out); got compressor "
            f"{spec.compressor!r}, num_tokens {spec.num_tokens}"
        )

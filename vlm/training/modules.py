"""Freeze policy and per-module learning rates (DESIGN.md section 6).

| stage    | encoder | projector | llm    |
|----------|---------|-----------|--------|
| align    | frozen  | full      | frozen |
| pretrain | frozen  | full      | full   |
| sft      | full    | full      | full   |   (encoder LR a tenth of the others by default)

``plan_modules`` resolves the stage's defaults and the recipe's ``train.modules`` into one
``ModulePlan`` per module; ``apply_freeze`` sets ``requires_grad``; ``param_groups`` gives the
optimizer one group per (module, weight decay or not), each with its module's LR;
``modules_table`` is the Markdown table printed at start and saved in the run directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from vlm.schema import RecipeError

from .recipe import MODULES, Recipe

STAGE_MODES: dict[str, dict[str, str]] = {
    "align": {"encoder": "frozen", "projector": "full", "llm": "frozen"},
    "pretrain": {"encoder": "frozen", "projector": "full", "llm": "full"},
    "sft": {"encoder": "full", "projector": "full", "llm": "full"},
}
# Our choice: the paper gives no learning rates (it only says the encoder unfreezes in SFT);
# LLaVA-NeXT / OneVision's scripts likewise give the tower a lower LR (2e-6 vs 1e-5).
ENCODER_LR_SCALE = 0.1

# VisionLanguageModel attribute of each recipe module name
ATTRIBUTES = {"encoder": "vision_tower", "projector": "projector", "llm": "language_model"}
_PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the wrapped model's names


@dataclass(frozen=True)
class ModulePlan:
    name: str  # "encoder" | "projector" | "llm"
    mode: str  # "full" | "frozen" | "lora"
    lr: float | None  # None when frozen

    @property
    def trainable(self) -> bool:
        return self.mode != "frozen"


def plan_modules(recipe: Recipe) -> dict[str, ModulePlan]:
    """The stage's default modes overridden by ``train.modules``; checked for sense."""
    train = recipe.train
    plans = {}
    for name in MODULES:
        spec = getattr(train.modules, name)
        mode = spec.mode or STAGE_MODES[recipe.stage][name]
        if mode == "lora" and name == "projector":
            raise RecipeError(
                "train.modules.projector.mode='lora': the projector is new and small, LoRA "
                "does not fit it; use 'full' (or 'frozen')"
            )
        default = train.learning_rate * (ENCODER_LR_SCALE if name == "encoder" else 1.0)
        lr = None if mode == "frozen" else (spec.lr if spec.lr is not None else default)
        plans[name] = ModulePlan(name, mode, lr)
    if not any(p.trainable for p in plans.values()):
        raise RecipeError(
            f"stage {recipe.stage!r} with train.modules as given freezes every module; set "
            "train.modules.<name>.mode to 'full' or 'lora' for at least one"
        )
    if train.lora.quantize and plans["llm"].mode != "lora":
        raise RecipeError(
            f"train.lora.quantize={train.lora.quantize!r} (QLoRA) quantizes the LLM, which then "
            "cannot train in full; set train.modules.llm.mode to 'lora' or quantize to null"
        )
    return plans


def module_of(param_name: str) -> str:
    """Recipe module name ("encoder" | "projector" | "llm") of a parameter of the model
    (plain or wrapped by PEFT)."""
    name = param_name.removeprefix(_PEFT_PREFIX)
    for module, attribute in ATTRIBUTES.items():
        if name.startswith(attribute + "."):
            return module
    raise ValueError(
        f"parameter {param_name!r} belongs to none of {sorted(ATTRIBUTES.values())}; the "
        "freeze policy does not know it (a module added to VisionLanguageModel needs an entry "
        "in vlm.training.modules.ATTRIBUTES)"
    )


def apply_freeze(model: nn.Module, plans: dict[str, ModulePlan]) -> None:
    """requires_grad per plan for full / frozen modules. LoRA modules are frozen here; PEFT
    adds the trainable adapters afterwards (``vlm.training.lora.apply_lora``)."""
    for name, param in model.named_parameters():
        param.requires_grad_(plans[module_of(name)].mode == "full")


def param_groups(
    model: nn.Module, plans: dict[str, ModulePlan], decay_names: Iterable[str], weight_decay: float
) -> list[dict]:
    """Optimizer groups: per module, the weights with weight decay and those without
    (``decay_names`` from ``Trainer.get_decay_parameter_names``); empty groups are left out
    (DeepSpeed's ZeRO optimizers do not accept them)."""
    decay = set(decay_names)
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((module_of(name), name in decay), []).append(param)
    out = []
    for module in ("projector", "llm", "encoder"):  # the projector first: its LR is logged
        for decayed in (True, False):
            params = groups.get((module, decayed))
            if params:
                out.append(
                    {
                        "params": params,
                        "lr": plans[module].lr,
                        "weight_decay": weight_decay if decayed else 0.0,
                        "name": f"{module}{'' if decayed else '.no_decay'}",
                    }
                )
    return out


def modules_table(model: nn.Module, plans: dict[str, ModulePlan], stage: str) -> str:
    """Markdown table: module, mode, learning rate, parameters, trainable parameters."""
    total: dict[str, int] = dict.fromkeys(ATTRIBUTES, 0)
    trainable: dict[str, int] = dict.fromkeys(ATTRIBUTES, 0)
    for name, param in model.named_parameters():
        if ".original_module." in name:  # PEFT keeps the untrained copy of modules_to_save
            continue
        module = module_of(name)
        count = getattr(param, "ds_numel", param.numel())  # ZeRO-3 partitions: full size
        total[module] += count
        trainable[module] += count if param.requires_grad else 0
    rows = [
        f"Stage {stage!r}: freeze policy and learning rates",
        "",
        "| module | mode | learning rate | parameters | trainable |",
        "|---|---|---|---|---|",
    ]
    for name in ("encoder", "projector", "llm"):
        plan = plans[name]
        lr = "-" if plan.lr is None else f"{plan.lr:.3g}"
        rows.append(
            f"| {name} ({ATTRIBUTES[name]}) | {plan.mode} | {lr} | {total[name]:,} | "
            f"{trainable[name]:,} |"
        )
    rows.append("| compressor | no parameters | - | 0 | 0 |")
    return "\n".join(rows) + "\n"

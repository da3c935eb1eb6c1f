"""LoRA / QLoRA through PEFT, and merging an adapter back into a plain model.

A stage with a module in mode "lora" trains a ``peft.PeftModel`` around the VLM: LoRA adapters
on every Linear of the LLM (and/or the encoder; not the LM head), and the modules in mode
"full" (the projector, maybe the encoder) as PEFT ``modules_to_save``, so that the adapter
folder holds everything the stage changed. Its output_dir is a PEFT adapter folder
(adapter_config.json + adapter_model.safetensors + the processor) whose
``base_model_name_or_path`` is an ABSOLUTE path to the base model: the previous stage's
directory, or ``<output_dir>/base`` (written at start) when the base exists only in memory.

    radio-vlm merge-lora runs/stage2_lora runs/stage2_merged   # -> a plain from_pretrained dir

QLoRA (``lora.quantize``) loads the LLM through bitsandbytes (CUDA only) and needs
``model.init_from``: the full-precision base the adapter is merged into later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm.modeling import VisionLanguageModel
from vlm.processing import VLMProcessor
from vlm.schema import RecipeError

from .checkpoints import write_marker
from .modules import ATTRIBUTES, ModulePlan
from .recipe import LoraSpec

BASE_DIR = "base"


def is_peft_model(model: Any) -> bool:
    """The model is wrapped by PEFT (a LoRA stage)."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def uses_lora(plans: dict[str, ModulePlan]) -> bool:
    return any(plan.mode == "lora" for plan in plans.values())


def quantization_kwargs(spec: LoraSpec, compute_dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained`` kwargs that load the LLM quantized for QLoRA ({} without)."""
    if spec.quantize is None:
        return {}
    if not torch.cuda.is_available():
        raise RecipeError(
            f"train.lora.quantize={spec.quantize!r} (QLoRA) needs bitsandbytes on a CUDA GPU and "
            "none is available; set quantize: null for plain LoRA"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise RecipeError(
            f"train.lora.quantize={spec.quantize!r} needs bitsandbytes: pip install bitsandbytes"
        ) from None
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(
        load_in_4bit=spec.quantize == "4bit",
        load_in_8bit=spec.quantize == "8bit",
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_type="nf4",
        # only the LLM's body is quantized; the tower, projector and LM head stay as they are
        llm_int8_skip_modules=["vision_tower", "projector", "lm_head"],
    )
    return {"quantization_config": config}


def target_modules(model: VisionLanguageModel, plans: dict[str, ModulePlan], spec: LoraSpec) -> str:
    """A PEFT ``target_modules`` regex (matched against full module names): the Linear layers
    (leaf names ``spec.target_modules``, or all) inside every module in mode "lora", the
    LLM's output head excluded."""
    head = model.get_output_embeddings()
    patterns = []
    for name, plan in plans.items():
        if plan.mode != "lora":
            continue
        root = getattr(model, ATTRIBUTES[name])
        leaves = sorted(
            {
                sub.rsplit(".", 1)[-1]
                for sub, module in root.named_modules()
                if sub and _is_linear(module) and module is not head
            }
        )
        if spec.target_modules is not None:
            missing = sorted(set(spec.target_modules) - set(leaves))
            if missing:
                raise RecipeError(
                    f"train.lora.target_modules {missing} are not Linear layers of the {name} "
                    f"({ATTRIBUTES[name]}); its Linear layers are named {leaves}"
                )
            leaves = sorted(spec.target_modules)
        if not leaves:
            raise RecipeError(f"the {name} has no Linear layers for LoRA; set its mode to full")
        # the head sits right below the LLM's root ("language_model.lm_head"): the pattern
        # wants at least one level between root and leaf, so it never matches the head
        patterns.append(rf"{ATTRIBUTES[name]}\..*\.({'|'.join(leaves)})")
    return "|".join(f"(?:{p})" for p in patterns)


def apply_lora(
    model: VisionLanguageModel,
    plans: dict[str, ModulePlan],
    spec: LoraSpec,
    base_path: Path,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """Wrap ``model`` (frozen by ``apply_freeze`` already) in a PeftModel; returns it."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    full = [ATTRIBUTES[name] for name, plan in plans.items() if plan.mode == "full"]
    if spec.quantize:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing
        )
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=target_modules(model, plans, spec),
        modules_to_save=full or None,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_path.resolve())
    wrapped = sorted(
        name.removeprefix("base_model.model.")
        for name, module in peft_model.named_modules()
        if type(module).__name__ == "ModulesToSaveWrapper"
    )
    if wrapped != sorted(full):  # PEFT matches modules_to_save by name suffix: check it hit
        raise RuntimeError(
            f"PEFT wrapped {wrapped} as fully trained modules, expected exactly {sorted(full)}"
        )
    return peft_model


def lora_base(init_from: str | None, output_dir: Path) -> tuple[Path, bool]:
    """(the base model's path, whether it must be written there at start). The previous
    stage serves as base when it is a plain model; otherwise the base lives only in memory
    (new model, or a LoRA stage merged on load) and is saved to ``output_dir/base``."""
    if init_from is not None and not (Path(init_from) / "adapter_config.json").is_file():
        return Path(init_from).resolve(), False
    return (output_dir / BASE_DIR).resolve(), True


def save_base(model: VisionLanguageModel, processor: VLMProcessor, folder: Path) -> None:
    """The model before LoRA, as a finished stage (so ``load_stage`` / merge accept it)."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_marker(folder, "stage", 0, recursive=False)


def merge_lora(
    adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None
) -> Path:
    """Merge a LoRA stage (or one of its checkpoints) into a plain model in ``out_dir``:
    config.json + weights + processor, loadable with ``from_pretrained``. The base is loaded
    in full precision even after QLoRA. ``base`` overrides the adapter's recorded base path."""
    from peft import PeftModel

    from vlm.saved import is_adapter, lora_base_of

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if not is_adapter(adapter_dir):
        raise FileNotFoundError(
            f"{adapter_dir} has no adapter_config.json: not a LoRA stage output or checkpoint "
            "(a plain model needs no merging; load it with from_pretrained)"
        )
    base_dir = Path(base) if base is not None else lora_base_of(adapter_dir)
    model = VisionLanguageModel.from_pretrained(base_dir)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    source = adapter_dir if (adapter_dir / "processor_config.json").is_file() else base_dir
    processor = VLMProcessor.from_pretrained(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    write_marker(out_dir, "stage", 0, recursive=False)
    return out_dir


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")

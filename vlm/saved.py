"""A saved model folder, whichever kind a run wrote: a plain model (``save_pretrained``:
config.json + weights) or, after a LoRA stage, a PEFT adapter (adapter_config.json) over the
base model it names, merged in memory on load.

    >>> model, processor = load_saved("runs/stage3_sft")          # plain or LoRA, same call

Training (``vlm.training.load_stage``: a finished stage), evaluation (the lmms-eval model)
and chat all load through here, so a LoRA stage can be evaluated and chatted with as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vlm.modeling import VisionLanguageModel
from vlm.processing import VLMProcessor

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(folder: str | Path) -> bool:
    """The folder holds a PEFT adapter (a LoRA stage), not a whole model."""
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def load_saved(
    folder: str | Path, *, dtype: torch.dtype | str | None = None, **kwargs: Any
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """Model + processor of a saved folder (or a hub id): plain, or a LoRA adapter merged
    into its base. kwargs go to ``VisionLanguageModel.from_pretrained`` of the (base) model."""
    processor = VLMProcessor.from_pretrained(folder)
    if not is_adapter(folder):
        return VisionLanguageModel.from_pretrained(folder, dtype=dtype, **kwargs), processor
    from peft import PeftModel  # only LoRA stages need peft

    if "quantization_config" in kwargs:
        raise ValueError(
            f"{folder} is a LoRA adapter; merging it into a quantized base would lose "
            "precision. Merge it first (radio-vlm merge-lora IN OUT) and use OUT as init_from"
        )
    base = VisionLanguageModel.from_pretrained(lora_base_of(folder), dtype=dtype, **kwargs)
    model = PeftModel.from_pretrained(base, folder).merge_and_unload()
    model.config._name_or_path = str(folder)  # what it is (evaluation logs name it), not its base
    return model, processor


def lora_base_of(folder: str | Path) -> Path:
    """The base model a LoRA stage's adapter applies to (written by ``vlm.training.lora``)."""
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base = Path(config.get("base_model_name_or_path") or "")
    if not base.is_absolute():
        base = folder / base
    if not (base / "config.json").is_file():
        raise FileNotFoundError(
            f"the LoRA adapter in {folder} applies to base model {base}, which is not there "
            "(moved or deleted?); pass its new place with `radio-vlm merge-lora --base DIR`"
        )
    return base

"""Where a stage's model comes from: built anew (stage 1) or loaded from the previous stage.

    >>> model, processor = build_model(recipe.model, seed=0)      # encoder + llm specs
    >>> model, processor = load_stage("runs/stage1_align")        # a finished stage

A finished stage directory holds either a plain model (``save_pretrained``: config.json +
weights) or, after a LoRA stage, a PEFT adapter (adapter_config.json) over a base model;
``load_stage`` loads both kinds (merging the adapter in memory) so stages chain either way.
The "tiny" specs build the random test parts of ``vlm.tiny`` (no files, no network).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from vlm.build import build_vlm
from vlm.modeling import VisionLanguageModel
from vlm.processing import VLMProcessor
from vlm.saved import load_saved
from vlm.schema import RecipeError

from .checkpoints import require_complete_stage
from .recipe import ModelSpec


def build_model(
    spec: ModelSpec, *, seed: int = 0, llm_loader_kwargs: dict[str, Any] | None = None
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """The model and processor a recipe's ``model`` section describes.

    llm_loader_kwargs: extra ``from_pretrained`` arguments when loading ``init_from`` (QLoRA's
        ``quantization_config``).
    """
    dtype = _dtype(spec.dtype)
    if spec.init_from is not None:
        kwargs = dict(llm_loader_kwargs or {})
        if spec.attn_implementation is not None:
            kwargs["attn_implementation"] = spec.attn_implementation
        model, processor = load_stage(spec.init_from, dtype=dtype, **kwargs)
    elif llm_loader_kwargs:
        raise RecipeError("loader options (QLoRA) need model.init_from: a saved stage to load")
    else:
        model, processor = _build(spec, seed, dtype)
    settings = {
        "resolution": spec.resolution,
        "mode": spec.image_mode,
        "max_pixels": spec.max_image_pixels,
    }
    if changes := {k: v for k, v in settings.items() if v is not None}:  # saved with the model
        processor.image_processor = dataclasses.replace(processor.image_processor, **changes)
    return model, processor


def load_stage(
    folder: str | Path, *, dtype: torch.dtype | None = None, **kwargs: Any
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """Model + processor of a finished stage (plain, or a LoRA adapter merged in memory:
    ``vlm.saved.load_saved``). kwargs go to ``VisionLanguageModel.from_pretrained`` of the
    (base) model."""
    require_complete_stage(folder)
    return load_saved(folder, dtype=dtype, **kwargs)


def _build(
    spec: ModelSpec, seed: int, dtype: torch.dtype | None, llm: tuple[Any, Any] | None = None
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """llm: (model, tokenizer) instead of ``spec.llm``'s (``vlm.training.composite``)."""
    # encoder settings go to build_encoder only when given, so each loader keeps its defaults
    encoder_settings = {
        "feature_layers": spec.feature_layers,
        "aggregation": spec.aggregation,
        "blockwise_tome": spec.blockwise_tome,
    }
    options = {k: v for k, v in encoder_settings.items() if v is not None}
    markers = tuple(spec.image_markers) if spec.image_markers else None
    if markers is not None and len(markers) != 2:
        raise RecipeError(f"model.image_markers must be [start, end]; got {spec.image_markers}")
    llm, tokenizer = llm or _llm(spec.llm, dtype)
    with tempfile.TemporaryDirectory(prefix="radio-vlm-tiny-") as tmp:
        encoder = spec.encoder
        if encoder == "tiny":
            from encoder.tiny import write_tiny_radio

            encoder = write_tiny_radio(Path(tmp) / "radio")
        return build_vlm(
            encoder,
            llm,
            tokenizer=tokenizer,
            compressor=spec.compressor,
            num_tokens=spec.num_tokens,  # = blockwise_tome when set (load_recipe)
            compressor_options=spec.compressor_options,
            projector=spec.projector,
            image_markers=markers,
            tiling=spec.tiling,
            dtype=dtype,
            attn_implementation=spec.attn_implementation,
            seed=seed,
            **options,
        )


def _llm(name: str, dtype: torch.dtype | None) -> tuple[PreTrainedModel | str, Any]:
    """ "tiny" / "tiny:<arch>" -> (model, tokenizer) from vlm.tiny; anything else -> (hub
    id or folder, None) for build_vlm to load with its tokenizer."""
    if not (name == "tiny" or name.startswith("tiny:")):
        return name, None
    from vlm.tiny import ARCH_TEMPLATE, tiny_llm, tiny_tokenizer

    arch = name.partition(":")[2] or "qwen2"
    if arch not in ARCH_TEMPLATE:
        raise RecipeError(f"model.llm={name!r}: tiny archs are {sorted(ARCH_TEMPLATE)}")
    tokenizer = tiny_tokenizer(ARCH_TEMPLATE[arch])
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    model = tiny_llm(arch, vocab_size=len(tokenizer) + 8, **ids)  # + room for image tokens
    return (model.to(dtype) if dtype else model), tokenizer


def _dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise RecipeError(f"model.dtype={name!r} is not a torch dtype; use float32 or bfloat16")
    return value

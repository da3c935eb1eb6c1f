"""``build_vlm``: a fresh vision-language model from an encoder and a causal LM.

    >>> model, processor = build_vlm("radio_v2.5-h", "Qwen/Qwen2-7B-Instruct", num_tokens=256)

The encoder and the LLM keep their pretrained weights; the projector is new (seeded). The
image placeholder (and optional start/end markers) are added to the tokenizer as special
tokens and the LLM's embeddings grow to match; the tokenizer's ``model_max_length`` is capped
at the LLM's ``max_position_embeddings`` (``VLMProcessor.context_length``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from encoder import VisionEncoder, build_encoder
from encoder.tiling import Tiling
from token_merge import TokenCompressor

from .configuration import VLMConfig, resolve_compressor
from .modeling import (
    VisionLanguageModel,
    build_projector,
    set_tower_attention,
)
from .processing import VLMProcessor


def build_vlm(
    encoder: str | Path | VisionEncoder,
    llm: str | Path | PreTrainedModel,
    *,
    tokenizer: Any | None = None,
    compressor: str = "tome",
    num_tokens: int | None = 256,
    compressor_options: dict[str, Any] | None = None,
    projector: dict[str, Any] | None = None,
    image_markers: tuple[str, str] | None = None,
    image_token: str = "<image>",
    tiling: Tiling | dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    seed: int = 0,
    **encoder_overrides: Any,
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """Build a VLM and its processor.

    encoder:  a ``build_encoder`` spec (registry name, hub id, folder, torch.hub file) or a
              ``VisionEncoder``; ``encoder_overrides`` go to ``build_encoder``
              (e.g. ``feature_layers=[-2]``).
    llm:      a causal-LM hub id / folder (its tokenizer is loaded from the same place) or a
              model (then pass ``tokenizer``).
    compressor / num_tokens / compressor_options: ``token_merge`` method ("tome", "avgpool",
              "unshuffle" with ``compressor_options={"scale": 2}``, "none"), its budget K and
              options (stride, dst, seed).
    projector: ``VLMConfig.projector`` settings (layer_norm, hidden_size, act).
    image_markers: optional (start, end) tokens around each image's placeholders.
    tiling:   None, or ``encoder.tiling.Tiling`` settings (or their dict): each image becomes
              tiles (tile_size default: the encoder's resolution), each compressed to its own
              tokens; recorded in the processor and the config.
    attn_implementation: attention kernels for the LLM and the vision tower ("sdpa",
              "flash_attention_2", "eager"); None keeps what each was loaded with.
    """
    if not isinstance(encoder, VisionEncoder):
        encoder = build_encoder(encoder, dtype=dtype, **encoder_overrides)
    encoder.drop_adaptors()  # teacher heads (RADIO) are not part of a VLM: free them
    blockwise = encoder.blockwise_tome
    if blockwise is not None:
        # Tokens arrive merged (EncoderOutput.compressed) and skip the output-level merger;
        # its settings then only tell the processor that every image costs K tokens.
        if compressor != "tome" or num_tokens not in (None, blockwise):
            raise ValueError(
                f"the encoder merges inside its blocks to blockwise_tome={blockwise} tokens; use "
                f"compressor='tome' with num_tokens={blockwise} (got {compressor!r}, {num_tokens})"
            )
        num_tokens = blockwise
    if not isinstance(llm, PreTrainedModel):
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(llm)
        llm = AutoModelForCausalLM.from_pretrained(
            llm, dtype=dtype, attn_implementation=attn_implementation
        )
    elif attn_implementation is not None:
        llm.set_attn_implementation(attn_implementation)
    set_tower_attention(encoder, attn_implementation)  # after the LLM, which checks the name
    if tokenizer is None:
        raise ValueError("pass the LLM's tokenizer (tokenizer=...) when llm is a model object")

    start, end = image_markers or (None, None)
    compressor_settings = {
        "method": compressor,
        "num_tokens": num_tokens,
        **(compressor_options or {}),
    }
    token_compressor = TokenCompressor.from_settings(
        resolve_compressor(compressor_settings), fixed_width=True
    )
    image_processor = encoder.image_processor
    if token_compressor.min_patches is not None:
        # exactly K tokens per image, however elongated: never fewer than K patches
        image_processor = dataclasses.replace(
            image_processor, min_patches=token_compressor.min_patches
        )
    # The processor adds the image tokens to the tokenizer; the LLM's embeddings grow to match.
    processor = VLMProcessor(
        tokenizer=tokenizer,
        image_processor=image_processor,
        compressor=token_compressor,
        image_token=image_token,
        image_start_token=start,
        image_end_token=end,
        tiling=tiling,
    )
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        # the new rows are drawn at random: seeded, so that every process (and
        # vlm.training.composite, which resizes outside this function) gets the same rows
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            llm.resize_token_embeddings(len(tokenizer))
    # the LLM's context, where the training data's max_length defaults to (VLMProcessor)
    context = getattr(llm.config.get_text_config(), "max_position_embeddings", None)
    if isinstance(context, int) and context < tokenizer.model_max_length:
        tokenizer.model_max_length = context

    # VLMConfig shares the LLM's config and resets its attention implementation (transformers
    # sets it recursively on sub-configs), so the one the LLM was loaded with is put back.
    attention = llm.config._attn_implementation
    config = VLMConfig(
        vision_config=encoder.get_config(),
        encoder_spec=encoder.source,
        compressor=compressor_settings,
        projector=projector,
        tiling=None if processor.tiling is None else processor.tiling.to_dict(),
        text_config=llm.config,
        image_token=image_token,
        image_token_id=processor.image_token_id,
        image_start_token=start,
        image_start_token_id=processor.image_start_token_id,
        image_end_token=end,
        image_end_token_id=processor.image_end_token_id,
    )
    # A skeleton on the meta device (no memory, no init); the real parts are put in below.
    with torch.device("meta"):
        model = VisionLanguageModel(config)
    if attention is not None:
        llm.config._attn_implementation = attention
    model.vision_tower = encoder
    model.language_model = llm
    with torch.random.fork_rng():  # a reproducible projector that leaves the caller's RNG alone
        torch.manual_seed(seed)
        model.projector = build_projector(config, encoder.hidden_size, model.compressor)
    if dtype is not None:
        model = model.to(dtype)
    else:  # one dtype for the projector and the LLM it feeds
        model.projector.to(llm.get_input_embeddings().weight.dtype)
    model.generation_config = llm.generation_config
    return model.eval(), processor

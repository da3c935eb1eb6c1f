"""``build_vlm``: a fresh vision-language model from an encoder and a causal LM.

    >>> model, processor = build_vlm("radio_v2.5-h", "Qwen/Qwen2-7B-Instruct", num_tokens=256)

The encoder and the LLM keep their pretrained weights; the projector is new (seeded). The
image placeholder (and optional start/end markers) are added to the tokenizer as special
tokens and the LLM's embeddings grow to match.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AddedToken, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from encoder import VisionEncoder, build_encoder

from .configuration import VLMConfig
from .modeling import VisionLanguageModel, compressor_from_config
from .processing import VLMProcessor
from .projector import Projector


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
    dtype: torch.dtype | None = None,
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
    """
    if not isinstance(encoder, VisionEncoder):
        encoder = build_encoder(encoder, dtype=dtype, **encoder_overrides)
    _drop_adaptors(encoder)
    if not isinstance(llm, PreTrainedModel):
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(llm)
        llm = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype)
    if tokenizer is None:
        raise ValueError("pass the LLM's tokenizer (tokenizer=...) when llm is a model object")

    start, end = image_markers or (None, None)
    new_tokens = [t for t in (image_token, start, end) if t is not None]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new_tokens])
    if len(tokenizer) > llm.get_input_embeddings().num_embeddings:
        llm.resize_token_embeddings(len(tokenizer))

    def token_id(token: str | None) -> int | None:
        return None if token is None else tokenizer.convert_tokens_to_ids(token)

    config = VLMConfig(
        vision_config=encoder.get_config(),
        encoder_spec=getattr(encoder, "version", None),
        compressor={"method": compressor, "num_tokens": num_tokens, **(compressor_options or {})},
        projector=projector,
        text_config=llm.config,
        image_token=image_token,
        image_token_id=token_id(image_token),
        image_start_token=start,
        image_start_token_id=token_id(start),
        image_end_token=end,
        image_end_token_id=token_id(end),
    )
    with torch.device("meta"):  # a skeleton: the real parts are put in below
        model = VisionLanguageModel(config)
    model.vision_tower = encoder
    model.language_model = llm
    torch.manual_seed(seed)  # reproducible projector initialisation
    model.projector = Projector(
        model.compressor.output_dim(encoder.hidden_size),
        llm.config.hidden_size,
        config.projector["hidden_size"],
        layer_norm=config.projector["layer_norm"],
        act=config.projector["act"],
    ).to(dtype=dtype or torch.float32)
    model.generation_config = llm.generation_config
    processor = VLMProcessor(
        tokenizer=tokenizer,
        image_processor=encoder.image_processor,
        compressor=compressor_from_config(config.compressor),
        image_token=image_token,
        image_start_token=start,
        image_end_token=end,
    )
    return model.eval(), processor


def _drop_adaptors(encoder: VisionEncoder) -> None:
    """Teacher adaptors are not part of a VLM: free them."""
    if getattr(encoder, "adaptors", None):
        encoder.adaptors = torch.nn.ModuleDict()
        encoder.adaptor_names = []

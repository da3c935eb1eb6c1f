"""The quickstart's tiny model and its stage-0 warm-up (shared by the demo, compare and tests).

    >>> settings = TinySettings()
    >>> parts = tiny_parts(settings, tmp_dir, seed=0)        # encoder, llm, tokenizer
    >>> model, processor = assemble(parts, settings, "tome")  # build_vlm around the parts

Stage 0 (the encoder's warm-up before the VLM stages) is ``recipes.quickstart.stage0``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from encoder import VisionEncoder, build_encoder
from token_merge import BUDGETED_METHODS, METHODS, TokenCompressor, unshuffle_scale
from vlm.build import build_vlm
from vlm.modeling import VisionLanguageModel
from vlm.processing import VLMProcessor
from vlm.schema import STRICT

# 20 synthdoc words that the tiny BPE tokenizer (vlm.tiny.tiny_tokenizer) spells in one or
# two tokens, so an answer is at most two generated tokens + end of turn.
VOCABULARY = (
    "table", "cat", "pen", "car", "hat", "tree", "rain", "apple", "stone", "green",
    "house", "paper", "water", "bird", "door", "road", "star", "moon", "book", "fish",
)  # fmt: skip


@dataclass
class TinySettings:
    """Sizes of the quickstart model and its data (calibrated: benchmarks/
    quickstart_calibration.py and the report's calibration section).

    image_size: synthdoc side = encoder resolution (px); patch_size: encoder patch (px).
    font_scale / colors: synthdoc's text size (fraction of image_size) and colour switch.
    num_tokens: visual tokens per image (K) for every compressor of the comparison
        (unshuffle's scale is derived: grid side / sqrt(K)).
    """

    __pydantic_config__ = STRICT

    image_size: int = 64
    patch_size: int = 8
    encoder_hidden: int = 96
    encoder_depth: int = 3
    encoder_heads: int = 4
    llm_hidden: int = 96
    llm_layers: int = 2
    llm_heads: int = 4
    num_tokens: int = 16
    vocabulary: tuple[str, ...] | None = VOCABULARY  # None: synthdoc's built-in WORDS (~100)
    levels: tuple[str, ...] = ("easy",)  # synthdoc levels; ("dense",): the dense world
    styles: tuple[str, ...] = ("textvqa", "docvqa", "ocrbench")  # synthdoc's question styles
    form_values: str = "any"  # docvqa fields asked: "any", "words" or "numbers" (synthdoc)
    # large dark-on-light text: the tiny ViT leaves its plateau ~2x sooner than with colours
    # and synthdoc's default easy sizes (calibration: benchmarks/quickstart_calibration.py)
    font_scale: tuple[float, float] = (0.28, 0.36)
    colors: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def compressor(self, method: str, num_tokens: int | None = None) -> dict[str, Any]:
        """``build_vlm`` keyword arguments for ``method`` at budget K (default num_tokens)."""
        k = num_tokens or self.num_tokens
        if method not in METHODS:
            raise ValueError(f"unknown compressor {method!r}; use one of {METHODS}")
        if method in BUDGETED_METHODS:
            return {"compressor": method, "num_tokens": k}
        if method == "unshuffle":  # the scale that gives exactly K tokens
            scale = unshuffle_scale(self.grid, self.grid, k)
            return {
                "compressor": method,
                "num_tokens": None,
                "compressor_options": {"scale": scale},
            }
        return {"compressor": method, "num_tokens": None}

    def visual_tokens(self, method: str, num_tokens: int | None = None) -> int:
        settings = self.compressor(method, num_tokens)
        options = settings.get("compressor_options", {})
        compressor = TokenCompressor(method, settings["num_tokens"], **options)
        return compressor.num_output_tokens(self.grid, self.grid)


@dataclass
class TinyParts:
    """The pretrained-free parts a tiny VLM is assembled from."""

    encoder: VisionEncoder
    llm: Any
    tokenizer: Any


def tiny_parts(settings: TinySettings, folder: str | Path, *, seed: int = 0) -> TinyParts:
    """A tiny RADIO-architecture encoder (written in NVIDIA's hub format under ``folder`` and
    loaded by ``encoder.build_encoder``, as a real one would be), a tiny Qwen2 LLM and the
    locally trained tokenizer (``vlm.tiny``)."""
    from encoder.tiny import write_tiny_radio
    from vlm.tiny import tiny_llm, tiny_tokenizer

    radio = write_tiny_radio(
        Path(folder) / "tiny_radio",
        hidden_size=settings.encoder_hidden,
        depth=settings.encoder_depth,
        heads=settings.encoder_heads,
        patch_size=settings.patch_size,
        max_resolution=max(128, 2 * settings.image_size),  # room for a 2x resolution cell
        preferred_resolution=settings.image_size,
        seed=seed,
    )
    encoder = build_encoder(radio)
    tokenizer = tiny_tokenizer("chatml")
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    llm = tiny_llm(
        "qwen2",
        vocab_size=len(tokenizer) + 8,  # room for the image tokens the processor adds
        seed=seed,
        hidden_size=settings.llm_hidden,
        num_hidden_layers=settings.llm_layers,
        num_attention_heads=settings.llm_heads,
        num_key_value_heads=settings.llm_heads // 2,
        intermediate_size=2 * settings.llm_hidden,
        **ids,
    )
    return TinyParts(encoder, llm, tokenizer)


def assemble(
    parts: TinyParts,
    settings: TinySettings,
    method: str,
    *,
    num_tokens: int | None = None,
    resolution: int | None = None,
    tiling: dict[str, Any] | None = None,
    image_mode: str | None = None,
    dst: str | None = None,
    seed: int = 0,
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """``build_vlm`` around copies of ``parts`` (so each comparison cell starts equal).

    resolution: the encoder's input side in px (default ``settings.image_size``): pages are
        resized to it, so a larger one gives a finer patch grid for the same budget K.
    tiling: ``encoder.tiling.Tiling`` settings (tile_size None: the encoder's resolution,
        ``settings.image_size``); K is then per tile.
    image_mode: the image processor's mode (None: the encoder's, keep-aspect); dst: ToMe's
        sink layout (None: top-left)."""
    import copy

    kwargs = settings.compressor(method, num_tokens)
    if dst is not None:
        kwargs["compressor_options"] = {**kwargs.get("compressor_options", {}), "dst": dst}
    model, processor = build_vlm(
        copy.deepcopy(parts.encoder),
        copy.deepcopy(parts.llm),
        tokenizer=copy.deepcopy(parts.tokenizer),
        seed=seed,
        tiling=tiling,
        **kwargs,
    )
    image = {"resolution": resolution or settings.image_size, "mode": image_mode}
    processor.image_processor = dataclasses.replace(
        processor.image_processor, **{k: v for k, v in image.items() if v is not None}
    )
    return model, processor


def to_pixels(images: Sequence[Any], size: int) -> Tensor:
    """PIL images of size x size -> [N, 3, size, size] in [0, 1] (what the processor makes of
    them at resolution = size)."""
    arrays = []
    for image in images:
        if image.size != (size, size):
            image = image.convert("RGB").resize((size, size))
        arrays.append(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

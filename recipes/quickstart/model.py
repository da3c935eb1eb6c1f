"""The quickstart's tiny model and its stage-0 warm-up (shared by the demo, compare and tests).

    >>> settings = TinySettings()
    >>> parts = tiny_parts(settings, tmp_dir, seed=0)        # encoder, llm, tokenizer
    >>> stats = warm_up_encoder(parts.encoder, records, settings.vocabulary, steps=300)
    >>> model, processor = assemble(parts, settings, "tome")  # build_vlm around the parts

Why a stage 0 (recipes/quickstart/calibration.md): trained jointly from scratch, a tiny
random encoder never starts to carry the word on the page, so the LLM learns to ignore the
image. A short supervised warm-up of the encoder alone (classify the page's answer word from
its mean-pooled patch features) gives every patch token the word's identity; the three VLM
stages then learn to read in minutes. The warm-up head is thrown away afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from encoder import VisionEncoder, build_encoder
from token_merge import BUDGETED_METHODS, METHODS, TokenCompressor, unshuffle_scale
from vlm.build import build_vlm
from vlm.modeling import VisionLanguageModel
from vlm.processing import VLMProcessor

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

    image_size: int = 64
    patch_size: int = 8
    encoder_hidden: int = 96
    encoder_depth: int = 3
    encoder_heads: int = 4
    llm_hidden: int = 96
    llm_layers: int = 2
    llm_heads: int = 4
    num_tokens: int = 16
    vocabulary: tuple[str, ...] = VOCABULARY
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
        max_resolution=max(128, settings.image_size),
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
    seed: int = 0,
) -> tuple[VisionLanguageModel, VLMProcessor]:
    """``build_vlm`` around copies of ``parts`` (so each comparison cell starts equal).

    resolution: the encoder's input side in px (default ``settings.image_size``): pages are
        resized to it, so a larger one gives a finer patch grid for the same budget K."""
    import copy

    model, processor = build_vlm(
        copy.deepcopy(parts.encoder),
        copy.deepcopy(parts.llm),
        tokenizer=copy.deepcopy(parts.tokenizer),
        seed=seed,
        **settings.compressor(method, num_tokens),
    )
    processor.image_processor = dataclasses.replace(
        processor.image_processor, resolution=resolution or settings.image_size
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


def warm_up_encoder(
    encoder: VisionEncoder,
    records: Sequence[Any],
    vocabulary: Sequence[str],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    image_size: int | Sequence[int] = 64,
    progress: bool = True,
) -> dict[str, float]:
    """Stage 0: train ``encoder`` (in place) to classify each record's answer word from the
    mean of its patch features, with a throw-away linear head. Returns loss/accuracy/time.

    image_size: the input side in px, or several that the steps take in turn (multi-resolution
    training, so that the features mean the same at every size the cells use)."""
    index = {w: i for i, w in enumerate(vocabulary)}
    usable = [r for r in records if r.answers[0] in index]
    if not usable:
        raise ValueError(
            f"no record answers with a word of the vocabulary {list(vocabulary)[:5]}...; "
            "generate synthdoc with vocabulary=settings.vocabulary and levels=('easy',)"
        )
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    if not sizes:
        raise ValueError("image_size needs at least one size")
    pixels = [to_pixels([r.image for r in usable], size) for size in sizes]
    labels = torch.tensor([index[r.answers[0]] for r in usable])
    gen = torch.Generator().manual_seed(seed)
    head = nn.Sequential(
        nn.LayerNorm(encoder.hidden_size), nn.Linear(encoder.hidden_size, len(vocabulary))
    )
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # short linear warm-up, constant, cosine over the last quarter: the tiny ViT sits on a
    # plateau for a few hundred steps before it starts to read, so the LR stays high until then
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: _lr_factor(i, steps))
    encoder.train()
    start, losses, hits = time.perf_counter(), [], []
    bar = tqdm(range(steps), desc="stage 0: encoder warm-up", disable=not progress, leave=False)
    for step in bar:
        pick = torch.randint(len(usable), (batch_size,), generator=gen)
        grid = encoder(pixels[step % len(sizes)][pick]).grid  # [B, h, w, C]
        logits = head(grid.mean(dim=(1, 2)))
        loss = nn.functional.cross_entropy(logits, labels[pick])
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
        hits.append((logits.argmax(-1) == labels[pick]).float().mean().item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.2f}", acc=f"{np.mean(hits[-20:]):.2f}")
    encoder.eval()
    tail = max(1, steps // 10)
    return {
        "steps": steps,
        "loss": float(np.mean(losses[-tail:])),
        "train_accuracy": float(np.mean(hits[-tail:])),
        "seconds": time.perf_counter() - start,
    }


def _lr_factor(step: int, steps: int) -> float:
    warm, tail = max(1, steps // 16), max(1, steps // 4)
    if step < warm:
        return (step + 1) / warm
    if step < steps - tail:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - (steps - tail)) / tail))

"""Stage 0: the tiny encoder's supervised warm-up, before the three VLM stages.

    >>> stats = run_stage0(parts.encoder, data.train_records, settings, schedule, seed=0)

Why (recipes/quickstart/calibration.md): trained jointly from scratch, a tiny random encoder
never starts to carry the text on the page, so the LLM learns to ignore the image. A short
supervised warm-up of the encoder alone fixes that; its head is thrown away afterwards.
Two objectives (``Schedule.warmup_objective``):

- ``mean``: classify the page's answer word from the MEAN of its patch features (the one-word
  quickstart). It rewards features that survive average pooling: the encoder learns to spread
  the answer over every patch, which is what makes avg-pool as good as ToMe there.
- ``dense``: classify every patch as the character drawn over its centre, or background
  (``vlm.data.synthdoc_dense.dense_targets``, from the renderer's own layout). Features stay
  local, as RADIO's are (distilled from DINOv2/SAM feature maps): the agglomerative spirit at
  toy scale. With several input sizes (RADIO trains multi-resolution) a larger input means
  more detail, not a shifted feature distribution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from encoder import VisionEncoder
from recipes.quickstart.model import to_pixels
from vlm.data.synthdoc_dense import BACKGROUND, CHAR_CLASSES, dense_targets

OBJECTIVES = ("mean", "dense")
BACKGROUND_WEIGHT = 0.2  # most patches are blank: they must not drown the characters


def run_stage0(
    encoder: VisionEncoder,
    records: Sequence[Any],
    settings: Any,
    schedule: Any,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Stage 0 as ``schedule`` says (objective, steps, batch, LR, input sizes); trains
    ``encoder`` in place and returns its loss / accuracy / time."""
    common = {
        "steps": schedule.warmup_steps,
        "batch_size": schedule.batch_size,
        "lr": schedule.warmup_lr,
        "seed": seed,
        "image_size": schedule.warmup_sizes or settings.image_size,
        "progress": progress,
    }
    if schedule.warmup_objective == "dense":
        return warm_up_dense(encoder, records, **common)
    if schedule.warmup_objective == "mean":
        return warm_up_encoder(encoder, records, settings.vocabulary, **common)
    raise ValueError(
        f"schedule.warmup_objective={schedule.warmup_objective!r}; use one of {OBJECTIVES}"
    )


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
    """The ``mean`` objective: classify each record's answer word from the mean of its patch
    features, with a throw-away linear head.

    image_size: the input side in px, or several that the steps take in turn."""
    index = {w: i for i, w in enumerate(vocabulary)}
    usable = [r for r in records if r.answers[0] in index]
    if not usable:
        raise ValueError(
            f"no record answers with a word of the vocabulary {list(vocabulary)[:5]}...; "
            "generate synthdoc with vocabulary=settings.vocabulary and levels=('easy',)"
        )
    labels = torch.tensor([index[r.answers[0]] for r in usable])
    head = _seeded_head(encoder.hidden_size, len(vocabulary), seed)

    def step_loss(grid: Tensor, pick: Tensor) -> tuple[Tensor, float]:
        logits = head(grid.mean(dim=(1, 2)))
        hits = (logits.argmax(-1) == labels[pick]).float().mean().item()
        return nn.functional.cross_entropy(logits, labels[pick]), hits

    return _train(
        encoder, head, usable, step_loss, steps, batch_size, lr, seed, image_size, progress, "mean"
    )


def warm_up_dense(
    encoder: VisionEncoder,
    records: Sequence[Any],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    image_size: int | Sequence[int] = 128,
    progress: bool = True,
) -> dict[str, float]:
    """The ``dense`` objective: each patch's character class (``CHAR_CLASSES``) from its own
    feature, background weighted ``BACKGROUND_WEIGHT``. Records need ``meta["items"]``
    (synthdoc's dense level). ``train_accuracy``: on patches that carry ink."""
    usable = [r for r in records if "items" in r.meta]
    if not usable:
        raise ValueError(
            "the dense stage 0 needs synthdoc records of a dense level (meta['items'] gives "
            "the per-patch targets); generate them with levels=('dense',) or ('dense-lite',)"
        )
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    patch = encoder.patch_size
    targets = {  # per input size: [N, h, w] class ids on that size's patch grid
        size: torch.from_numpy(
            np.stack([dense_targets(r.meta["items"], r.image.width, size // patch) for r in usable])
        )
        for size in sizes
    }
    head = _seeded_head(encoder.hidden_size, len(CHAR_CLASSES), seed)
    weight = torch.ones(len(CHAR_CLASSES))
    weight[BACKGROUND] = BACKGROUND_WEIGHT

    def step_loss(grid: Tensor, pick: Tensor) -> tuple[Tensor, float]:
        labels = targets[grid.shape[1] * patch][pick]  # [B, h, w]
        logits = head(grid)  # [B, h, w, classes]
        loss = nn.functional.cross_entropy(logits.flatten(0, 2), labels.flatten(), weight=weight)
        ink = labels != BACKGROUND
        hits = (logits.argmax(-1)[ink] == labels[ink]).float().mean().item() if ink.any() else 0.0
        return loss, hits

    return _train(
        encoder, head, usable, step_loss, steps, batch_size, lr, seed, image_size, progress, "dense"
    )


def _seeded_head(width: int, classes: int, seed: int) -> nn.Module:
    """LayerNorm + Linear drawn from ``seed`` alone, not from torch's global generator: the
    same grid and seed then give the same stage 0 whatever ran before in the process (another
    seed of ``--seeds``, or a parallel job's parent)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, classes))


def _train(
    encoder: VisionEncoder,
    head: nn.Module,
    records: Sequence[Any],
    step_loss: Any,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    image_size: int | Sequence[int],
    progress: bool,
    objective: str,
) -> dict[str, float]:
    """The loop both objectives share: AdamW, warm-up / constant / cosine LR, clip 1.0, the
    input sizes taken in turn."""
    sizes = [image_size] if isinstance(image_size, int) else list(image_size)
    if not sizes:
        raise ValueError("image_size needs at least one size")
    pixels = [to_pixels([r.image for r in records], size) for size in sizes]
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(head.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # short linear warm-up, constant, cosine over the last quarter: the tiny ViT sits on a
    # plateau for a while before it starts to read, so the LR stays high until then
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: _lr_factor(i, steps))
    encoder.train()
    start, losses, hits = time.perf_counter(), [], []
    bar = tqdm(range(steps), desc=f"stage 0 ({objective})", disable=not progress, leave=False)
    for step in bar:
        pick = torch.randint(len(records), (batch_size,), generator=gen)
        grid = encoder(pixels[step % len(sizes)][pick]).grid  # [B, h, w, C]
        loss, hit = step_loss(grid, pick)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(loss.item())
        hits.append(hit)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.2f}", acc=f"{np.mean(hits[-20:]):.2f}")
    encoder.eval()
    tail = max(1, steps // 10)
    return {
        "steps": steps,
        "objective": objective,
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

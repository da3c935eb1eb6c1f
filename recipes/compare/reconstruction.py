"""The paper's Table A10 on the stage-0 features: ToMe's sink layout x matching metric.

Each compressor's K tokens are unmerged back onto the patch grid and compared with the grid
(per-channel normalised MSE, ``token_merge.reconstruction_error``). ToMe runs in every
combination of

- sink layout: each window's destination is its top-left cell, or a cell drawn at random
  (seeded by the grid's seed);
- matching metric: the output features themselves (the paper's choice), or the attention
  keys (ToMe's) or values of one encoder block (``reconstruction_block``, the last by default);

and avg-pool is the baseline with no sink and no metric. Row keys: ``tome`` (features,
top-left), ``tome_keys``, ``tome_values``, each with ``_random`` for the random sink, and
``avgpool``; on dense pages the same keys prefixed ``char_`` (ink patches a linear probe still
names after unmerging, ``probe``) and ``char_none`` (no compression). How to run it:
docs/a10_reconstruction.md.

    >>> grid, metrics = matching_metrics(encoder, pixels, block=-1)   # [N, h, w, C], ...
    >>> row = measure(grid, 16, metrics, seed=0)    # {"tome": 0.52, "tome_keys_random": ...}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from token_merge import compress, reconstruction_error

MATCHING = ("features", "keys", "values")  # what ToMe's similarities are computed on
SINKS = ("top-left", "random")  # where each window's destination sits


def method_key(matching: str, sink: str) -> str:
    """The row key of ToMe matching on ``matching`` with ``sink``: "tome" for the paper's
    (features, top-left); "tome_keys", "tome_values_random", ... otherwise."""
    key = "tome" if matching == "features" else f"tome_{matching}"
    return key if sink == "top-left" else f"{key}_random"


METHODS = (*(method_key(m, s) for s in SINKS for m in MATCHING), "avgpool")


def matching_metrics(
    encoder: torch.nn.Module, pixels: Tensor, *, block: int = -1
) -> tuple[Tensor, dict[str, Tensor | None]]:
    """The encoder's feature grid [N, h, w, C] and, per ``MATCHING``, the tensor ToMe matches
    on: None for the features themselves, [N, h, w, head_dim] for block ``block``'s attention
    keys and values (averaged over heads)."""
    from encoder import attention_projection  # (loads transformers: only when measured)

    with torch.no_grad():
        grid = encoder(pixels).grid
    metrics: dict[str, Tensor | None] = {"features": None}
    for kind in ("keys", "values"):
        metrics[kind] = attention_projection(encoder, pixels, layer=block, kind=kind)
    return grid, metrics


def compress_all(
    grid: Tensor, num_tokens: int, metrics: dict[str, Tensor | None], *, seed: int
) -> dict[str, Any]:
    """{row key: ``token_merge.Compressed``} for every ToMe variant and avg-pool at K =
    ``num_tokens``; the random sinks are drawn from ``seed`` (the same layout for every
    metric, so metrics compare on equal sinks)."""
    out = {
        method_key(matching, sink): compress(
            grid, "tome", num_tokens, metric=metrics[matching], dst=sink, seed=seed
        )
        for sink in SINKS
        for matching in MATCHING
    }
    out["avgpool"] = compress(grid, "avgpool", num_tokens)
    return out


def measure(
    grid: Tensor,
    num_tokens: int,
    metrics: dict[str, Tensor | None],
    *,
    seed: int,
    probe: torch.nn.Module | None = None,
    labels: Tensor | None = None,
) -> dict[str, float]:
    """{row key: normalised reconstruction error} for ``METHODS`` on ``grid`` [N, h, w, C];
    with a character ``probe`` and ``labels`` [N, h, w] also ``char_<key>`` and ``char_none``
    (characters read after unmerging) and ``sep_<key>`` (``probe.ink_separation``)."""
    from recipes.compare.probe import char_accuracy, ink_separation  # (loads the encoder too)

    row: dict[str, float] = {}
    for method, out in compress_all(grid, num_tokens, metrics, seed=seed).items():
        row[method] = float(reconstruction_error(grid, out, normalize=True))
        if probe is not None:
            row[f"char_{method}"] = char_accuracy(probe, out.unmerge().view_as(grid), labels)
            row[f"sep_{method}"] = ink_separation(out.tokens, out.assignment, out.sizes, labels)
    if probe is not None:
        row["char_none"] = char_accuracy(probe, grid, labels)
    return row


def block_label(block: int) -> str:
    """How tables name the block the keys and values come from."""
    return "the last block" if block == -1 else f"block {block}"

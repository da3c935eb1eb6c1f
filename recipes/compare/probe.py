"""What a compressor keeps of the text, read from the features themselves: a linear probe.

A linear head is fitted on the stage-0 encoder's UNcompressed patch features of training
pages to name each patch's character (``vlm.data.synthdoc_dense.dense_targets``); then each
compressor's tokens are unmerged back onto the grid (every patch gets its token's feature)
and the same head reads them on eval pages. The accuracy on patches that carry ink says how
much of the local text survives K tokens: what merging keeps that pooling smears.

    >>> probe = fit_char_probe(train_grids, train_labels)          # [N, h, w, C], [N, h, w]
    >>> char_accuracy(probe, unmerge(compress(grids, "avgpool", 16)).view_as(grids), labels)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recipes.quickstart.stage0 import BACKGROUND_WEIGHT
from vlm.data.synthdoc_dense import BACKGROUND, CHAR_CLASSES


@dataclass(frozen=True)
class DenseMeasure:
    """One measure of the features on dense pages, as results rows and tables name it: row
    keys ``<prefix><method>`` (e.g. ``char_avgpool``), shown times ``scale`` in ``unit``."""

    prefix: str
    name: str
    unit: str
    intro: str
    scale: float
    digits: int


DENSE_MEASURES = (
    DenseMeasure(
        "char_",
        "characters read",
        "% of ink patches",
        "Ink patches whose character a linear probe (fitted on uncompressed stage-0 features of "
        "training pages) still names after the tokens are unmerged onto the grid: what each "
        "compressor keeps of the text (none = no compression), %",
        100.0,
        1,
    ),
    DenseMeasure(
        "sep_",
        "ink-token distance from blank",
        "1 - cosine after a LayerNorm",
        "How far a token holding ink sits from the blank-paper token after a LayerNorm (the "
        "projector's first layer at initialisation; mean 1 - cosine, i.e. 1 - correlation): "
        "merging keeps ink tokens apart, pooling dilutes them",
        1.0,
        3,
    ),
)


def fit_char_probe(grids: Tensor, labels: Tensor, *, steps: int = 300, seed: int = 0) -> nn.Module:
    """LayerNorm + Linear fitted (full batch, AdamW) on features [N, h, w, C] -> labels
    [N, h, w] (class ids of ``CHAR_CLASSES``), background down-weighted as in stage 0."""
    features, targets = grids.reshape(-1, grids.shape[-1]).float(), labels.reshape(-1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = nn.Sequential(
            nn.LayerNorm(features.shape[1]), nn.Linear(features.shape[1], len(CHAR_CLASSES))
        )
    weight = torch.ones(len(CHAR_CLASSES))
    weight[BACKGROUND] = BACKGROUND_WEIGHT
    optim = torch.optim.AdamW(probe.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(probe(features), targets, weight=weight)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    return probe.eval()


@torch.no_grad()
def char_accuracy(probe: nn.Module, grids: Tensor, labels: Tensor) -> float:
    """Share of ink patches (label != background) whose character the probe names, from
    features [N, h, w, C] (a compressor's unmerged tokens, or the grid itself)."""
    ink = labels != BACKGROUND
    predicted = probe(grids.float()).argmax(-1)
    return float((predicted[ink] == labels[ink]).float().mean()) if ink.any() else float("nan")


def ink_separation(tokens: Tensor, assignment: Tensor, sizes: Tensor, labels: Tensor) -> float:
    """How far a token holding ink sits from the blank paper after a LayerNorm without scale
    and shift, which is how the projector's first layer sees tokens at initialisation (its
    learned scale may reweigh channels later): the mean of 1 - cos(token, mean blank token),
    i.e. 1 - their correlation, over the tokens with any ink patch. Pooling dilutes a word
    into mostly blank cells, so its tokens stay close to blank and a reader must resolve small
    differences; merging gives ink tokens of their own.

    tokens [N, K, C], assignment [N, h*w] (patch -> token), sizes [N, K] (patches per token),
    labels [N, h, w] (``BACKGROUND`` or a character). NaN without ink or blank tokens.
    """
    ink = (labels != BACKGROUND).flatten(1).float().to(sizes.device)  # [N, h*w]
    share = torch.zeros_like(sizes, dtype=torch.float32).scatter_add_(1, assignment.long(), ink)
    inky, blanks = share > 0, (share == 0) & (sizes > 0)  # [N, K]
    if not inky.any() or not blanks.any():
        return float("nan")
    normed = nn.functional.layer_norm(tokens.float(), tokens.shape[-1:])
    blank = normed[blanks].mean(0)
    cos = nn.functional.cosine_similarity(normed[inky], blank[None], dim=-1)
    return float((1 - cos).mean())

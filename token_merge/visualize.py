"""Pictures of what merged: each output token's member patches painted in one colour."""

from __future__ import annotations

import colorsys

import numpy as np
import torch
from PIL import Image

from .compress import Compressed

_GOLDEN = 0.618033988749895


def token_colors(num_tokens: int, seed: int = 0) -> torch.Tensor:
    """[K, 3] uint8 colours, well spread in hue (golden-ratio steps), stable for a given K."""
    gen = torch.Generator().manual_seed(seed)
    jitter = torch.rand(num_tokens, 2, generator=gen)
    colors = [
        colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, 0.55 + 0.4 * float(s), 0.6 + 0.4 * float(v))
        for i, (s, v) in enumerate(jitter)
    ]
    return (torch.tensor(colors) * 255).round().to(torch.uint8)


def visualize(
    image: Image.Image,
    compressed: Compressed,
    grid_hw: tuple[int, int] | None = None,
    *,
    index: int = 0,
    alpha: float = 0.6,
    style: str = "palette",
) -> Image.Image:
    """Paint each output token's patches over the image (paper Figures 7 and 8).

    image:      the picture the grid was computed from (any size; patch cells are mapped
                onto it proportionally).
    compressed: the result of ``compress``; ``index`` picks the image of the batch.
    grid_hw:    (h, w) of the patch grid; default ``compressed.grid_hw``.
    style:      "palette" (a distinct colour per output token, blended with ``alpha``) or
                "mean" (every region filled with its members' mean image colour: what a
                token 'sees').
    Returns an RGB image of the input's size.
    """
    if style not in ("palette", "mean"):
        raise ValueError(f"style must be 'palette' or 'mean'; got {style!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    h, w = grid_hw or compressed.grid_hw
    assignment = compressed.assignment[index].cpu()
    if assignment.numel() != h * w:
        raise ValueError(
            f"grid_hw {h}x{w} has {h * w} cells but the assignment has {assignment.numel()}"
        )
    rgb = image.convert("RGB")
    pixels = torch.from_numpy(np.array(rgb, dtype=np.uint8)).float()  # [H, W, 3]
    height, width = pixels.shape[:2]
    # Patch cell of every pixel, then the output token of every pixel.
    cell_y = (torch.arange(height) * h // height)[:, None]
    cell_x = (torch.arange(width) * w // width)[None, :]
    token = assignment[(cell_y * w + cell_x).flatten()]  # [H*W]
    num_tokens = compressed.num_tokens
    if style == "palette":
        fill = token_colors(num_tokens).float()[token]
        out = (1 - alpha) * pixels.reshape(-1, 3) + alpha * fill
    else:
        sums = torch.zeros(num_tokens, 3).index_add_(0, token, pixels.reshape(-1, 3))
        counts = torch.bincount(token, minlength=num_tokens).clamp_min(1)
        out = (sums / counts[:, None])[token]
    out = out.round().clamp(0, 255).to(torch.uint8).reshape(height, width, 3)
    return Image.fromarray(out.numpy())

"""The interface every vision tower implements: pixels in [0, 1] -> summary + patch grid."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """What a vision tower returns.

    summary:       [B, S] image-level embedding (cls tokens), or None when the tower has none.
    grid:          [B, h, w, C] patch features without cls/register tokens; C = ``hidden_size``
                   of the selected features (several layers are concatenated along C).
    hidden_states: per-block outputs [B, h, w, C_block] when asked for, else None.
    adaptors:      teacher heads' outputs by name (RADIO), each an ``EncoderOutput`` itself.
    """

    summary: Tensor | None
    grid: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    adaptors: dict[str, EncoderOutput] = field(default_factory=dict)


class VisionEncoder(nn.Module):
    """Base class: subclasses set ``patch_size``, ``hidden_size``, ``preferred_resolution``
    and implement ``forward(pixel_values [B, 3, H, W] in [0, 1]) -> EncoderOutput``.

    Pixel normalisation is the encoder's business: it receives plain RGB in [0, 1].
    """

    patch_size: int
    hidden_size: int
    preferred_resolution: tuple[int, int]
    max_resolution: int

    def check_pixels(self, pixel_values: Tensor) -> tuple[int, int]:
        """Validate [B, 3, H, W] with H, W multiples of the patch; return the grid (h, w)."""
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, Tensor) else None
            raise ValueError(f"pixel_values must be a tensor [B, 3, H, W]; got shape {shape}")
        b, c, height, width = pixel_values.shape
        p = self.patch_size
        if c != 3 or b == 0:
            raise ValueError(
                f"pixel_values must be [B >= 1, 3, H, W]; got {tuple(pixel_values.shape)}"
            )
        if height % p or width % p or height == 0 or width == 0:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {p}; resize it "
                f"with the encoder's image processor (e.g. to {_round_to(height, p)}x"
                f"{_round_to(width, p)})"
            )
        if not torch.is_floating_point(pixel_values):
            raise ValueError(
                f"pixel_values must be floats in [0, 1]; got dtype {pixel_values.dtype} "
                "(divide uint8 images by 255)"
            )
        return height // p, width // p


def _round_to(size: int, multiple: int) -> int:
    return max(multiple, round(size / multiple) * multiple)

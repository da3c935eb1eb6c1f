"""Helpers shared by the tests of the transformers towers (test_towers) and of block-wise ToMe
inside them (test_blockwise_towers): pixels, the raw transformers model as the reference, and
the patch grid of its output."""

from __future__ import annotations

import torch
from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

from encoder.tiny import NUM_REGISTERS, ODD_PREPROCESSOR, PATCH

PREFIX = {"clip": 1, "siglip": 0, "siglip2": 0, "dinov2": 1, "dinov2_reg": 1 + NUM_REGISTERS}


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    """Uniform [0, 1) pixels of ``shape`` (the same for the same seed)."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] pixels normalised with the tiny folders' (odd) mean and std."""
    mean = torch.tensor(ODD_PREPROCESSOR["image_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ODD_PREPROCESSOR["image_std"]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def reference(family: str, raw, x: torch.Tensor, **kwargs):
    """The raw transformers model on normalised pixels x [B, 3, H, W]; ``kwargs`` go to its
    forward (e.g. ``output_hidden_states=True``)."""
    if family == "siglip2":  # NaFlex: the image processor's own patch layout
        b, _, height, width = x.shape
        patches = torch.stack([convert_image_to_patches(image, PATCH) for image in x])
        return raw(
            patches,
            pixel_attention_mask=torch.ones(b, patches.shape[1], dtype=torch.long),
            spatial_shapes=torch.tensor([[height // PATCH, width // PATCH]] * b),
            **kwargs,
        )
    if family.startswith("dinov2"):
        return raw(x, **kwargs)
    return raw(x, interpolate_pos_encoding=True, **kwargs)


def as_grid(tokens: torch.Tensor, prefix: int, h: int, w: int) -> torch.Tensor:
    """Drop the prefix tokens; patch (i, j) is token prefix + i * w + j (raster order)."""
    return tokens[:, prefix:].reshape(tokens.shape[0], h, w, tokens.shape[-1])

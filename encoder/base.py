"""The interface every vision tower implements: pixels in [0, 1] -> summary + patch grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from token_merge import Compressed

from .image_processing import ImageProcessor


@dataclass
class EncoderOutput:
    """What a vision tower returns.

    summary:       [B, S] image-level embedding (cls tokens), or None when the tower has none.
    grid:          [B, h, w, C] patch features without cls/register tokens; C = ``hidden_size``
                   of the selected features (several layers are concatenated along C).
    hidden_states: per-block outputs [B, h, w, C_block] when asked for, else None.
    adaptors:      teacher heads' outputs by name (RADIO), each an ``EncoderOutput`` itself.
    compressed:    set when the tower already merged tokens inside its blocks (block-wise
                   ToMe): K tokens + sizes + assignment; ``grid`` is then their unmerge.
    """

    summary: Tensor | None
    grid: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    adaptors: dict[str, EncoderOutput] = field(default_factory=dict)
    compressed: Compressed | None = None


class VisionEncoder(nn.Module):
    """Base class: subclasses set ``patch_size``, ``hidden_size``, ``preferred_resolution``
    and implement ``forward(pixel_values [B, 3, H, W] in [0, 1]) -> EncoderOutput``.

    Pixel normalisation is the encoder's business: it receives plain RGB in [0, 1].
    ``blockwise_tome``, ``source`` and ``drop_adaptors`` have defaults that fit a tower
    without those features, so callers ask every encoder the same way.
    """

    patch_size: int
    hidden_size: int
    preferred_resolution: tuple[int, int]
    max_resolution: int
    # K when the tower merges tokens inside its blocks (block-wise ToMe): every image then
    # leaves it as exactly K tokens, in ``EncoderOutput.compressed``. None: no merging.
    blockwise_tome: int | None = None
    # Where the weights came from, for the record (registry name, hub id or folder), if known.
    source: str | None = None

    @property
    def pixel_mean(self) -> tuple[float, float, float] | None:
        """The per-channel mean (RGB in [0, 1]) the tower normalises pixels by, if it has
        one: the image processor's ``pad`` mode fills with it, so padding normalises to 0."""
        return None

    def drop_adaptors(self) -> None:
        """Free parts that only serve outputs a VLM does not use (RADIO's teacher heads);
        nothing to free by default."""

    @property
    def image_processor(self) -> ImageProcessor:
        """The default resolution policy: keep-aspect, longest side = the preferred
        resolution rounded to the patch and capped by ``max_resolution`` (SigLIP's 384 px at
        patch 14 becomes 378); ``pad`` mode's colour is ``pixel_mean`` when the tower has one."""
        p = self.patch_size
        cap = self.max_resolution // p * p
        mean = self.pixel_mean
        colour = {} if mean is None else {"pad_color": tuple(min(max(c, 0.0), 1.0) for c in mean)}
        return ImageProcessor(
            patch_size=p,
            resolution=min(_round_to(max(self.preferred_resolution), p), cap),
            max_resolution=self.max_resolution,
            **colour,
        )

    def encode(self, images: Sequence[Tensor]) -> list[EncoderOutput]:
        """Images of possibly different sizes, each [3, H_i, W_i] in [0, 1] -> one output each
        (grid [1, h_i, w_i, C]). Same-size images run as one batch; towers with a packed
        variable-size path (RADIO) override this to avoid any padding."""
        outputs: list[EncoderOutput | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
        for indices in by_size.values():
            batch = self(torch.stack([images[i] for i in indices]))
            for row, i in enumerate(indices):
                outputs[i] = _select(batch, row)
        return outputs  # type: ignore[return-value]

    def set_attn_implementation(self, implementation: str) -> None:
        """Run the tower's attention with ``implementation`` ("sdpa", "eager",
        "flash_attention_2", ...): towers built on a transformers model (``self.model``) hand it
        to that model, whose check names what is unsupported."""
        model = getattr(self, "model", None)
        if not isinstance(model, PreTrainedModel):
            raise NotImplementedError(
                f"{type(self).__name__} has no transformers model to set an attention "
                "implementation on; override set_attn_implementation"
            )
        model.set_attn_implementation(implementation)

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


def _select(out: EncoderOutput, row: int) -> EncoderOutput:
    """Row ``row`` of a batched output, keeping the batch axis (size 1)."""

    def take(x: Tensor | None) -> Tensor | None:
        return None if x is None else x[row : row + 1]

    return EncoderOutput(
        summary=take(out.summary),
        grid=out.grid[row : row + 1],
        hidden_states=None if out.hidden_states is None else tuple(map(take, out.hidden_states)),
        adaptors={name: _select(a, row) for name, a in out.adaptors.items()},
        compressed=None
        if out.compressed is None
        else dataclasses.replace(
            out.compressed,
            tokens=take(out.compressed.tokens),
            sizes=take(out.compressed.sizes),
            assignment=take(out.compressed.assignment),
        ),
    )


def resolve_layers(layers: Sequence[int], depth: int) -> list[int]:
    """Block indices (negative count from the end) -> strictly increasing indices in
    [0, depth); ValueError naming the valid range otherwise."""
    bad = [i for i in layers if not -depth <= int(i) < depth]
    if bad or not layers:
        raise ValueError(
            f"feature layers must be block indices in [-{depth}, {depth - 1}]; got {list(layers)}"
        )
    resolved = [int(i) % depth for i in layers]
    if resolved != sorted(set(resolved)):
        raise ValueError(f"feature layers must be strictly increasing blocks; got {list(layers)}")
    return resolved

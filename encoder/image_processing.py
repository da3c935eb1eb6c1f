"""The encoder's image processor: any image -> RGB -> resized by a resolution policy -> [0, 1].

    >>> proc = ImageProcessor(patch_size=16, resolution=432, max_resolution=2048)
    >>> pixels = proc([image_a, image_b])          # list of [3, H_i, W_i] float32 in [0, 1]
    >>> batch = batch_pixels(pixels)               # [B, 3, H, W] when all sizes match

Every "resolution" here is a length of the image's LONGEST side, in pixels. Sizes are
(height, width) everywhere. Resize rules (``target_size`` is the pure function behind them):

- ``fixed``:       resolution x resolution; the aspect ratio is not kept.
- ``keep-aspect``: longest side = resolution, the other side scaled by the same factor; with
  ``pad=True`` the resized image is then padded to resolution x resolution with black (0.0)
  on the bottom and the right, so its patches keep their positions from the top-left corner.
- ``native``:      the image's own size; when its longest side is outside
  [min_resolution, max_resolution] it is scaled (keeping aspect) to the nearest end.
- ``pad``:         LLaVA / VILA's ``expand2square``: the image is centred on a square of its
  longest side filled with ``pad_color`` (the encoder's normalisation mean, so the padding
  normalises to zero), then resized to resolution x resolution. Every image then has the
  same square grid (768 px, patch 16: 48 x 48 = 2304 patches, so ToMe at K = 256 merges
  r = 2048 whatever the page's shape, the paper's setup). Not ``keep-aspect`` + ``pad=True``,
  which pads with black on the bottom/right only and keeps the content's patch-rounded size.

Then (all modes but ``pad``) each side is rounded to the nearest multiple of the patch (halves round up), and never
below one patch. With ``min_patches`` (a VLM with a fixed budget of K tokens sets it to K) a
very elongated image whose grid would have fewer patches is stretched along its short side
(then both sides, if need be) until it has at least that many. A target whose longest side
would exceed ``max_resolution`` is scaled down (keeping aspect) with a ``ResolutionWarning``
naming both sizes: images are never cropped.

Before any of that, every image goes through ``image_loading.load_image`` (the loader the
training data uses too): files decoded strictly (a truncated file is an error), at most
``max_pixels`` pixels (checked from a file's header), EXIF orientation applied, every mode
converted to RGB, NaN pixels refused.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from transformers.image_utils import OPENAI_CLIP_MEAN

from .image_loading import DEFAULT_MAX_PIXELS, load_image, to_rgb

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MODES",
    "ImageProcessor",
    "ResolutionWarning",
    "batch_pixels",
    "pil_to_tensor",
    "to_rgb",
]

Resampling = Image.Resampling
MODES = ("fixed", "keep-aspect", "native", "pad")
# What LLaVA / VILA pad with (the CLIP processor's mean), also RADIO's default conditioner
# mean; encoders set their own (``VisionEncoder.pixel_mean``).
DEFAULT_PAD_COLOR: tuple[float, float, float] = tuple(float(c) for c in OPENAI_CLIP_MEAN)


class ResolutionWarning(UserWarning):
    """An image was scaled down to the encoder's maximum resolution."""


@dataclass(frozen=True)
class ImageProcessor:
    """Resolution policy of one encoder (see the module docstring for the rules).

    patch_size:     the encoder's patch; every output side is a multiple of it.
    resolution:     longest side for ``fixed`` / ``keep-aspect`` (a multiple of the patch).
    max_resolution: the encoder's largest supported side; larger targets are scaled down.
    mode:           "fixed" | "keep-aspect" | "native" | "pad".
    min_resolution: ``native`` only: smaller images are scaled up until their longest side is
                    this (default: one patch).
    pad:            ``keep-aspect`` only: pad to resolution x resolution (black, bottom/right).
    pad_color:      ``pad`` mode's fill, RGB in [0, 1] (3 floats); drawn as 0-255 RGB
                    ``int(c * 255)`` as LLaVA's ``expand2square`` does.
    min_patches:    the fewest patches an image may have (stretching its short side).
    resample:       PIL filter for resizing (enum, int or name such as "bicubic").
    max_pixels:     larger images are refused (``ImageLoadError``), from a file's header
                    before decoding; None: no limit (``image_loading``).
    """

    patch_size: int
    resolution: int
    max_resolution: int
    mode: str = "keep-aspect"
    min_resolution: int | None = None
    pad: bool = False
    pad_color: tuple[float, float, float] = DEFAULT_PAD_COLOR
    resample: Resampling = Resampling.BICUBIC
    min_patches: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        p = positive_int("patch_size", self.patch_size)
        positive_int("resolution", self.resolution)
        positive_int("max_resolution", self.max_resolution)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {self.mode!r}")
        if self.resolution % p:
            lo, hi = max(p, self.resolution // p * p), (self.resolution // p + 1) * p
            raise ValueError(
                f"resolution {self.resolution} is not a multiple of the patch size {p}; "
                f"use {lo} or {hi}"
            )
        if self.max_resolution < p:
            raise ValueError(
                f"max_resolution {self.max_resolution} is below one patch ({p}); "
                f"set max_resolution >= {p}"
            )
        if self.resolution > self.max_resolution:
            raise ValueError(
                f"resolution {self.resolution} is above max_resolution {self.max_resolution}; "
                f"use resolution <= {self._cap} or raise max_resolution"
            )
        if self.min_resolution is not None:
            if self.mode != "native":
                raise ValueError(
                    f"min_resolution={self.min_resolution} only applies to mode='native' "
                    f"(mode is {self.mode!r}); drop it or use mode='native'"
                )
            positive_int("min_resolution", self.min_resolution)
            if self.min_resolution > self._cap:
                raise ValueError(
                    f"min_resolution {self.min_resolution} is above max_resolution "
                    f"{self.max_resolution} (floored to the patch: {self._cap}); use "
                    f"min_resolution <= {self._cap}"
                )
        if not isinstance(self.pad, bool):
            raise ValueError(f"pad must be True or False; got {self.pad!r}")
        if self.pad and self.mode != "keep-aspect":
            raise ValueError(
                f"pad=True only applies to mode='keep-aspect' (mode is {self.mode!r}); "
                "drop pad or use mode='keep-aspect'"
            )
        # frozen dataclass: normalise once so equality and to_dict are canonical (JSON: a list)
        object.__setattr__(self, "pad_color", unit_rgb("pad_color", self.pad_color))
        if self.min_patches is not None:
            side = self._cap // p
            if positive_int("min_patches", self.min_patches) > side * side:
                raise ValueError(
                    f"min_patches {self.min_patches} is more than the largest grid the encoder "
                    f"takes ({side}x{side} at max_resolution {self.max_resolution}); lower it"
                )
        if self.max_pixels is not None:
            positive_int("max_pixels", self.max_pixels)
        # frozen dataclass: normalise the filter once so equality and to_dict are canonical
        object.__setattr__(self, "resample", resampling(self.resample))

    @property
    def _cap(self) -> int:
        """Largest side allowed: max_resolution floored to a multiple of the patch."""
        return self.max_resolution // self.patch_size * self.patch_size

    # ------------------------------------------------------------------ sizes

    def resize_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) the image content is resized to (before any padding); sides are multiples
        of the patch, with at least ``min_patches`` patches. Warns (``ResolutionWarning``)
        when max_resolution forces a downscale."""
        return self._at_least_min_patches(*self._scaled_size(height, width))

    def _at_least_min_patches(self, height: int, width: int) -> tuple[int, int]:
        p, need = self.patch_size, self.min_patches
        h, w = height // p, width // p
        if need is None or self.pad or h * w >= need:  # padded: the full square grid counts
            return height, width
        long = max(h, w, math.ceil(math.sqrt(need)))  # a square, if even that is too small
        short = math.ceil(need / long)
        h, w = (long, short) if h >= w else (short, long)
        return h * p, w * p

    def _scaled_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = positive_int("height", height), positive_int("width", width)
        p, long = self.patch_size, max(h, w)
        if self.mode in ("fixed", "pad"):  # pad: the square canvas is what gets resized
            return self.resolution, self.resolution
        if self.mode == "keep-aspect":
            num, den = self.resolution, long  # scale = resolution / longest side
        else:
            num, den = 1, 1
            lo = p if self.min_resolution is None else self.min_resolution
            if long < lo:
                num, den = lo, long
        if long * num > self._cap * den:  # only reachable in native mode (see __post_init__)
            num, den = self._cap, long
            new = (_round_scaled(h, num, den, p), _round_scaled(w, num, den, p))
            warnings.warn(
                f"image {h}x{w} (HxW) is larger than the encoder's max_resolution "
                f"{self.max_resolution}: resized to {new[0]}x{new[1]}, keeping its aspect "
                "ratio (not cropped)",
                ResolutionWarning,
                stacklevel=2,
            )
            return new
        return _round_scaled(h, num, den, p), _round_scaled(w, num, den, p)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the tensor ``__call__`` returns for an image of height x width."""
        size = self.resize_size(height, width)
        return (self.resolution, self.resolution) if self.pad else size

    # ------------------------------------------------------------------ pixels

    def preprocess(self, image: Any) -> Tensor:
        """One image (a path, bytes, PIL image, numpy array or torch tensor; see
        ``image_loading.load_image``) -> [3, H, W] float32 in [0, 1]."""
        rgb = load_image(image, max_pixels=self.max_pixels)
        w, h = rgb.size
        rh, rw = self.resize_size(h, w)
        if self.mode == "pad":
            rgb = self._pad_to_square(rgb)
            w = h = self.resolution
        if (rh, rw) != (h, w):
            rgb = rgb.resize((rw, rh), resample=self.resample)
        pixels = pil_to_tensor(rgb)
        if self.pad:
            # black on the bottom/right: the content's patch grid stays anchored at (0, 0)
            out = pixels.new_zeros(3, self.resolution, self.resolution)
            out[:, :rh, :rw] = pixels
            pixels = out
        return pixels

    def _pad_to_square(self, rgb: Image.Image) -> Image.Image:
        """A resolution x resolution canvas of ``pad_color`` with the image centred on it,
        its longest side = resolution: ``expand2square`` followed by a resize, done in the
        other order (resize, then pad) so that a very elongated image never makes a canvas of
        its longest side squared."""
        w, h = rgb.size
        res, long = self.resolution, max(w, h)
        cw, ch = (max(1, (2 * side * res + long) // (2 * long)) for side in (w, h))
        if (cw, ch) != (w, h):
            rgb = rgb.resize((cw, ch), resample=self.resample)
        fill = tuple(int(c * 255) for c in self.pad_color)  # expand2square's 0-255 colour
        canvas = Image.new("RGB", (res, res), fill)
        canvas.paste(rgb, ((res - cw) // 2, (res - ch) // 2))
        return canvas

    def __call__(self, images: Any) -> list[Tensor]:
        """One image or a list/tuple of images -> list of [3, H_i, W_i] float32 in [0, 1]."""
        if isinstance(images, (list, tuple)):
            return [self.preprocess(image) for image in images]
        return [self.preprocess(images)]

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings; ``ImageProcessor.from_dict(p.to_dict()) == p``."""
        return {
            "patch_size": self.patch_size,
            "resolution": self.resolution,
            "max_resolution": self.max_resolution,
            "mode": self.mode,
            "min_resolution": self.min_resolution,
            "pad": self.pad,
            "pad_color": list(self.pad_color),
            "resample": self.resample.name.lower(),
            "min_patches": self.min_patches,
            "max_pixels": self.max_pixels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageProcessor:
        """Inverse of ``to_dict``; an unknown key is an error naming it."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown image processor keys {unknown}; known: {sorted(known)}")
        return cls(**data)


def batch_pixels(pixels: Sequence[Tensor]) -> Tensor | list[Tensor]:
    """Same-size [3, H, W] tensors -> stacked [B, 3, H, W]; mixed sizes -> the list as is
    (``VisionEncoder.encode`` runs mixed sizes; RADIO packs them without padding)."""
    if len(pixels) == 0:
        raise ValueError("batch_pixels needs at least one image; got an empty list")
    if len({tuple(p.shape) for p in pixels}) == 1:
        return torch.stack(list(pixels))
    return list(pixels)


# ---------------------------------------------------------------------- pixels


def pil_to_tensor(image: Image.Image) -> Tensor:
    """RGB PIL image -> [3, H, W] float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _round_scaled(side: int, num: int, den: int, patch: int) -> int:
    """side * num / den rounded to the nearest multiple of ``patch`` (halves up), >= patch.
    Integer arithmetic, so the rule is exact and platform independent."""
    return max(patch, (2 * side * num + den * patch) // (2 * den * patch) * patch)


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def unit_rgb(name: str, value: Any) -> tuple[float, float, float]:
    """Three numbers in [0, 1] (an RGB colour) as a tuple of floats, else a ValueError."""
    items = list(value) if isinstance(value, (list, tuple)) else None
    if (
        items is None
        or len(items) != 3
        or any(isinstance(c, bool) or not isinstance(c, numbers.Real) for c in items)
        or not all(0.0 <= c <= 1.0 for c in items)  # NaN fails this too
    ):
        raise ValueError(f"{name} must be 3 numbers in [0, 1] (RGB); got {value!r}")
    return tuple(float(c) for c in items)


def resampling(value: Any) -> Resampling:
    """A PIL filter from its name ("bicubic") or value, else a ValueError listing them."""
    if isinstance(value, bool):
        raise ValueError(f"resample must be a PIL filter or its name; got {value!r}")
    if isinstance(value, str):
        try:
            return Resampling[value.upper()]
        except KeyError:
            names = [r.name.lower() for r in Resampling]
            raise ValueError(f"unknown resample {value!r}; use one of {names}") from None
    try:
        return Resampling(value)
    except ValueError:
        names = [r.name.lower() for r in Resampling]
        raise ValueError(f"unknown resample {value!r}; use one of {names}") from None

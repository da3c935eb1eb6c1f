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

Then each side is rounded to the nearest multiple of the patch (halves round up), and never
below one patch. With ``min_patches`` (a VLM with a fixed budget of K tokens sets it to K) a
very elongated image whose grid would have fewer patches is stretched along its short side
(then both sides, if need be) until it has at least that many. A target whose longest side would exceed ``max_resolution`` is scaled down
(keeping aspect) with a ``ResolutionWarning`` naming both sizes: images are never cropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

Resampling = Image.Resampling
MODES = ("fixed", "keep-aspect", "native")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


class ResolutionWarning(UserWarning):
    """An image was scaled down to the encoder's maximum resolution."""


@dataclass(frozen=True)
class ImageProcessor:
    """Resolution policy of one encoder (see the module docstring for the rules).

    patch_size:     the encoder's patch; every output side is a multiple of it.
    resolution:     longest side for ``fixed`` / ``keep-aspect`` (a multiple of the patch).
    max_resolution: the encoder's largest supported side; larger targets are scaled down.
    mode:           "fixed" | "keep-aspect" | "native".
    min_resolution: ``native`` only: smaller images are scaled up until their longest side is
                    this (default: one patch).
    pad:            ``keep-aspect`` only: pad to resolution x resolution (black, bottom/right).
    min_patches:    the fewest patches an image may have (stretching its short side).
    resample:       PIL filter for resizing (enum, int or name such as "bicubic").
    """

    patch_size: int
    resolution: int
    max_resolution: int
    mode: str = "keep-aspect"
    min_resolution: int | None = None
    pad: bool = False
    resample: Resampling = Resampling.BICUBIC
    min_patches: int | None = None

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
        if self.min_patches is not None:
            side = self._cap // p
            if positive_int("min_patches", self.min_patches) > side * side:
                raise ValueError(
                    f"min_patches {self.min_patches} is more than the largest grid the encoder "
                    f"takes ({side}x{side} at max_resolution {self.max_resolution}); lower it"
                )
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
        if self.mode == "fixed":
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

    @staticmethod
    def to_rgb(image: Any) -> Image.Image:
        """Same as the module-level ``to_rgb``."""
        return to_rgb(image)

    def preprocess(self, image: Any) -> Tensor:
        """One image (see ``to_rgb`` for the accepted kinds) -> [3, H, W] float32 in [0, 1]."""
        rgb = to_rgb(image)
        w, h = rgb.size
        rh, rw = self.resize_size(h, w)
        if (rh, rw) != (h, w):
            rgb = rgb.resize((rw, rh), resample=self.resample)
        pixels = pil_to_tensor(rgb)
        if self.pad:
            # black on the bottom/right: the content's patch grid stays anchored at (0, 0)
            out = pixels.new_zeros(3, self.resolution, self.resolution)
            out[:, :rh, :rw] = pixels
            pixels = out
        return pixels

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
            "resample": self.resample.name.lower(),
            "min_patches": self.min_patches,
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


# ---------------------------------------------------------------------- conversions


def to_rgb(image: Any) -> Image.Image:
    """Any supported image -> an 8-bit RGB PIL image (transparency composited on white).

    Accepts PIL images of any mode: 16-bit greys (I;16, I;16B, ...) are scaled by 255/65535;
    mode I is read as 16-bit when its values fit [0, 65535] (how Pillow may open 16-bit PNGs),
    otherwise stretched from its min..max; F is taken as floats in [0, 1]. numpy arrays and
    torch tensors: [H, W] grey, or 1-4 channels (grey, grey+alpha, RGB, RGBA) as [H, W, C]
    or [C, H, W] (when ambiguous: [H, W, C] for numpy, [C, H, W] for torch); dtypes bool,
    uint8 (0-255), uint16 (0-65535) and floats (clipped to [0, 1]). Floats are quantised to
    8 bits like every other input.
    """
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        return _array_to_rgb(t.numpy(), channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, channels_first=False)
    raise TypeError(
        f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array "
        "[H, W(, C)] or a torch tensor [C, H, W] / [H, W, C]"
    )


def pil_to_tensor(image: Image.Image) -> Tensor:
    """RGB PIL image -> [3, H, W] float32 in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _pil_to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        # Pillow's own convert() clips these to 0..255 instead of scaling them
        return _array_to_rgb(_high_depth_to_unit(image), channels_first=False)
    if _has_alpha(image):  # includes P / L / RGB with a transparent colour ("transparency")
        return _on_white(image.convert("RGBA"))
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot convert a PIL image of mode {mode!r} to RGB: {err}") from err


def _has_alpha(image: Image.Image) -> bool:
    """Alpha channel, RGBA palette or a transparent colour (``has_transparency_data`` needs
    Pillow >= 10.1; the project allows 10.0)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode.endswith("A")


def _high_depth_to_unit(image: Image.Image) -> np.ndarray:
    """I;16* / I / F image -> float32 [H, W] in [0, 1]. F: values in [0, 1] as they are,
    in [0, 255] (what ``convert("F")`` of an 8-bit image gives) divided by 255, else stretched
    from their minimum to their maximum like I."""
    a = np.asarray(image)
    if image.mode == "F":
        a = np.nan_to_num(a.astype(np.float32))
        if not a.size or (a.min() >= 0 and a.max() <= 1):
            return a
        if a.min() >= 0 and a.max() <= 255:
            return a / 255.0
    a = a.astype(np.float64)
    if image.mode.startswith("I;16") or (a.size and a.min() >= 0 and a.max() <= 65535):
        return (a / 65535.0).astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / max(hi - lo, 1.0)).astype(np.float32)


def _array_to_rgb(array: np.ndarray, channels_first: bool) -> Image.Image:
    """[H, W] or [H, W, C] / [C, H, W] array (C in 1..4) -> RGB PIL image."""
    a = _unit_float(array)
    if a.ndim == 3:
        lead, last = a.shape[0] in (1, 2, 3, 4), a.shape[-1] in (1, 2, 3, 4)
        if lead and (channels_first or not last):
            a = np.moveaxis(a, 0, -1)
        elif not last:
            raise ValueError(
                f"image array of shape {tuple(array.shape)} has no channel axis of size 1-4; "
                "expected [H, W], [H, W, C] or [C, H, W] with C in 1..4"
            )
    elif a.ndim == 2:
        a = a[:, :, None]
    else:
        raise ValueError(
            f"image array must be [H, W] or 3-D with 1-4 channels; got shape "
            f"{tuple(array.shape)} (pass a batch as a list of images)"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image has an empty side: shape {tuple(array.shape)}")
    c = a.shape[-1]
    color = a[..., :3] if c >= 3 else np.repeat(a[..., :1], 3, axis=-1)
    if c in (2, 4):  # the last channel is alpha: composite on white in full precision
        alpha = a[..., -1:]
        color = color * alpha + (1.0 - alpha)
    return Image.fromarray(_quantise(color), mode="RGB")


def _unit_float(array: np.ndarray) -> np.ndarray:
    """bool / uint8 / uint16 / float array -> float32 in [0, 1]."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # either byte order
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        values = np.nan_to_num(array.astype(np.float32))
        # a float image in 0-255 would otherwise be clipped to almost white without a word
        if values.size and (values.max() > 1.0 + 1e-3 or values.min() < -1e-3):
            raise ValueError(
                f"float image values must be in [0, 1]; got [{values.min():.3g}, "
                f"{values.max():.3g}] (divide 0-255 images by 255, or pass uint8)"
            )
        return np.clip(values, 0.0, 1.0)
    raise TypeError(
        f"unsupported image dtype {array.dtype}; use uint8 (0-255), uint16 (0-65535), bool "
        "or floats in [0, 1]"
    )


def _quantise(unit: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.floor(unit * 255.0 + 0.5).astype(np.uint8))


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _round_scaled(side: int, num: int, den: int, patch: int) -> int:
    """side * num / den rounded to the nearest multiple of ``patch`` (halves up), >= patch.
    Integer arithmetic, so the rule is exact and platform independent."""
    return max(patch, (2 * side * num + den * patch) // (2 * den * patch) * patch)


def positive_int(name: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


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

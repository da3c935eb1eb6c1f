"""Loading one image, the same way for training, inference and evaluation.

    >>> rgb = load_image("photo.jpg")            # an upright 8-bit RGB PIL image
    >>> rgb = load_image(array, max_pixels=None)  # path, bytes, PIL, numpy or torch; no limit

The encoder's ``ImageProcessor`` calls ``load_image`` on every image it is given, and the
training dataset (``vlm.data.images``) calls it on every file, so an image gives the same
pixels whichever entry point it goes through. Failures raise ``ImageLoadError`` whose
``reason`` names the kind (the training data's skip reason of the same name):

- Files and bytes are decoded completely with Pillow's ``LOAD_TRUNCATED_IMAGES`` off, whatever
  its global value (lmms-eval switches it on when imported, which decodes the missing part of
  a cut-off file as grey) [truncated_image]; undecodable bytes [corrupt_image]; no such file
  [missing_image]. A PIL image opened but not yet decoded (``Image.open``) is decoded the same
  way; one the caller decoded already cannot be checked.
- More than ``max_pixels`` pixels (default ``DEFAULT_MAX_PIXELS``, 64 Mpx: a 169-Mpx PNG would
  take 2 GB once decoded) is refused from the file's header, before any pixel is decoded
  [image_too_large]; ``max_pixels=None`` lifts the limit (Pillow's own decompression-bomb
  limit, ``PIL.Image.MAX_IMAGE_PIXELS``, then still applies to files).
- The EXIF orientation is applied (``ImageOps.exif_transpose``; a broken EXIF block is ignored).
- Every mode becomes 8-bit RGB (``to_rgb``): greyscale, palette and CMYK converted, 16-bit
  scaled, transparency composited on white. NaN or infinite values in an array, a tensor or a
  float image are an error, as are float values outside [0, 1] [unsupported_image].
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; a document scan at 600 dpi is ~35 Mpx
REASONS = (
    "missing_image",
    "corrupt_image",
    "truncated_image",
    "image_too_large",
    "unsupported_image",
)
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_EXIF_ORIENTATION = 0x0112

Note = Callable[[str, str], None]  # (what was done: "exif_transposed" | "converted_mode", detail)


class ImageLoadError(ValueError):
    """An image that cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown image error reason {reason!r}; known: {REASONS}")
        super().__init__(message)
        self.reason = reason


def load_image(
    image: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, note: Note | None = None
) -> Image.Image:
    """A path, bytes, PIL image, numpy array or torch tensor -> an upright 8-bit RGB PIL image
    (rules in the module docstring). ``note(kind, detail)`` is told of each change made:
    "exif_transposed", "converted_mode"."""
    if isinstance(image, (bytes, bytearray)):
        image = _decode(io.BytesIO(image), "<bytes>", max_pixels)
    elif isinstance(image, (str, os.PathLike)):
        image = _decode(image, os.fspath(image), max_pixels)
    elif isinstance(image, Image.Image):
        name = getattr(image, "filename", None) or "<PIL image>"
        check_pixels(image.size, max_pixels, name)
        with _decoding(name):
            image.load()  # a no-op once decoded; decodes an Image.open result strictly
    if isinstance(image, Image.Image):
        image = _upright(image, note)
    mode = getattr(image, "mode", type(image).__name__)
    try:
        rgb = to_rgb(image)
    except (ValueError, TypeError, OSError) as err:
        raise ImageLoadError("unsupported_image", f"{mode} image: {err}") from err
    check_pixels(rgb.size, max_pixels, f"a {mode} image")  # arrays and tensors
    if mode != "RGB" and note is not None:
        note("converted_mode", f"{mode} -> RGB")
    return rgb


def check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    """Raise ``ImageLoadError(image_too_large)`` when a (W, H) image is over ``max_pixels``."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(
            "image_too_large",
            f"{name} is {w}x{h} (WxH) = {w * h / 1e6:.1f} Mpx, more than the image processor's "
            f"max_pixels={max_pixels} ({max_pixels / 1e6:g} Mpx); raise max_pixels (None: no "
            "limit) to accept it, or downscale the image",
        )


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Within: Pillow refuses truncated files whatever ``ImageFile.LOAD_TRUNCATED_IMAGES``
    says outside (restored afterwards). For code that decodes images itself, such as a
    ``datasets`` Image column read in an evaluation."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def decoding_error(err: BaseException, name: str) -> ImageLoadError:
    """What a decoding exception means, as an ``ImageLoadError`` naming ``name``."""
    if isinstance(err, ImageLoadError):
        return err
    if isinstance(err, FileNotFoundError):
        return ImageLoadError("missing_image", f"{name} does not exist")
    if isinstance(err, (IsADirectoryError, PermissionError)):
        return ImageLoadError("missing_image", f"{name}: {err}")
    if isinstance(err, Image.DecompressionBombError):
        return ImageLoadError(
            "image_too_large", f"{name}: {err} (Pillow's limit, PIL.Image.MAX_IMAGE_PIXELS)"
        )
    if isinstance(err, UnidentifiedImageError):
        return ImageLoadError("corrupt_image", f"{name}: not a recognised image")
    text = str(err)
    truncated = "truncated" in text.lower() or isinstance(err, EOFError)
    reason = "truncated_image" if truncated else "corrupt_image"
    return ImageLoadError(reason, f"{name}: {type(err).__name__}: {text}")


@contextlib.contextmanager
def _decoding(name: str) -> Iterator[None]:
    """Strict decoding; Pillow's errors become ``ImageLoadError``; its bomb warning is ours."""
    try:
        with warnings.catch_warnings(), strict_decoding():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels rules
            yield
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise decoding_error(err, name) from err


def _decode(source: Any, name: str, max_pixels: int | None) -> Image.Image:
    with _decoding(name), Image.open(source) as f:
        check_pixels(f.size, max_pixels, name)  # from the header: nothing decoded yet
        f.load()
        return f.copy()  # info (with any EXIF block) is copied along


def _upright(image: Image.Image, note: Note | None) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (1, None):
            return image
        upright = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF: the pixels as stored
        return image
    if note is not None:
        note("exif_transposed", f"orientation {orientation}")
    return upright


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
        a = _finite(a.astype(np.float32))
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
        values = _finite(array.astype(np.float32))
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


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` if every one is finite; else a ValueError (NaN would become black)."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"the image holds {int(bad.sum())} NaN or infinite values (of {values.size}); "
            "pixels must be finite: check the code that produced them"
        )
    return values


def _quantise(unit: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.floor(unit * 255.0 + 0.5).astype(np.uint8))


def _on_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")

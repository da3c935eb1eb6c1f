"""Loading one training image safely: path checks, the encoder's loader, the patch budget.

Rules (each failure raises ``SkipSample`` with the reason in brackets):

- Paths are resolved against the image root; after normalising ``..`` they must stay inside
  it, absolute paths included [path_escapes_root]. Symlinks are followed only where they lead:
  a link inside the root that points outside it is refused the same way [path_escapes_root]
  (a root that is itself a link is fine: it is resolved first).
- Everything else about one image is the encoder's ``load_image``, the loader inference and
  evaluation use too (``encoder.image_loading``): missing/unreadable files [missing_image],
  undecodable bytes [corrupt_image], a file that ends early [truncated_image] (whatever
  Pillow's global LOAD_TRUNCATED_IMAGES says), more pixels than the image processor's
  ``max_pixels`` (read from the header, before decoding) or Pillow's bomb limit
  [image_too_large], NaN pixels or an impossible mode [unsupported_image]. EXIF orientation
  is applied [handled: exif_transposed]; every mode is converted to 8-bit RGB: greyscale /
  palette / CMYK converted, 16-bit scaled, alpha composited on white [handled: converted_mode].
- Extreme shapes are kept, never cropped: an image whose long/short side ratio exceeds
  ``max_aspect_ratio`` is padded with white on the short side (bottom/right) to that ratio
  [handled: padded_aspect]; if the processed patch grid is still too small for the
  compressor's token budget (e.g. ToMe K=256 needs >= 256 patches), it is padded further,
  first towards square, then by doubling both sides [handled: padded_small], until it fits or
  the square passes twice the encoder's max_resolution [image_too_small]. An image that
  needs padding and is larger than max_resolution is first shrunk to it (keeping its aspect;
  the policy would shrink it anyway). The resolution policy (``ImageProcessor``) then
  resizes as for any image: a 1x1 image is scaled up, a 20,000 px wide one scaled down.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from encoder.image_loading import DEFAULT_MAX_PIXELS, ImageLoadError, load_image

from .skips import SkipSample

Note = Callable[[str, str], None]  # (handled reason, detail)


def resolve_image_path(value: str | os.PathLike, root: str | Path) -> Path:
    """``root / value`` normalised; raises SkipSample(path_escapes_root) when it, or where its
    symlinks lead, is outside ``root``."""
    root_path = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(root_path, os.fspath(value)))
    if not _inside(path, root_path):
        raise SkipSample("path_escapes_root", f"{os.fspath(value)!r} is outside {root_path}")
    real_root, real = os.path.realpath(root_path), os.path.realpath(path)
    if not _inside(real, real_root):
        raise SkipSample(
            "path_escapes_root",
            f"{os.fspath(value)!r} is a symlink (or under one) leading outside {root_path}, "
            f"to {real}; set data.image_root to a folder that holds the real files",
        )
    return Path(path)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([root, path]) == root


def open_image(image: Any, note: Note, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A path, ``{"bytes", "path"}`` dict (datasets' undecoded Image), bytes, PIL image or
    array -> an upright 8-bit RGB PIL image; raises ``SkipSample`` (module docstring)."""
    if isinstance(image, dict):  # datasets.Image(decode=False)
        if image.get("bytes") is not None:
            image = image["bytes"]
        elif image.get("path"):
            image = image["path"]
        else:
            raise SkipSample("missing_image", "an image entry with neither bytes nor path")
    try:
        return load_image(image, max_pixels=max_pixels, note=note)
    except ImageLoadError as err:  # its reasons are skip reasons of the same name
        raise SkipSample(err.reason, str(err)) from err


def fit_budget(
    image: Image.Image,
    fits: Callable[[int, int], bool],
    max_aspect_ratio: float | None,
    max_side: int,
    note: Note,
) -> Image.Image:
    """Pad ``image`` (white, bottom/right) per the module's rules until ``fits(h, w)``.

    fits: whether an image of h x w pixels (before the resolution policy) gives a patch grid
        the compressor accepts. max_side: the encoder's max_resolution; an image that needs
        padding is first shrunk to it (the policy would shrink it anyway; padding a 20,000 px
        image to a square would cost gigabytes), and a square is not grown past twice it.
    """
    w, h = original = image.size
    extreme = max_aspect_ratio is not None and max(w, h) > max_aspect_ratio * min(w, h)
    if not extreme and fits(h, w):
        return image
    if max(w, h) > max_side:
        w, h = (max(1, round(side * max_side / max(w, h))) for side in (w, h))
        image = image.resize((w, h), Image.Resampling.BICUBIC)
    if extreme:
        short = math.ceil(max(w, h) / max_aspect_ratio)
        w, h = (w, short) if w >= h else (short, h)
        note("padded_aspect", f"{original[0]}x{original[1]} -> {w}x{h} (WxH)")
    padded = (w, h)
    while not fits(h, w):
        if w == h and w > 2 * max_side:  # only growing a square could go on forever
            raise SkipSample(
                "image_too_small",
                f"{original[0]}x{original[1]} (WxH) padded up to {w}x{h} still gives too few "
                "patches for the token budget",
            )
        if w > h:  # double the short side: half the aspect ratio, at most square
            h = min(w, 2 * h)
        elif h > w:
            w = min(h, 2 * w)
        else:
            w, h = 2 * w, 2 * h
    if (w, h) != padded:
        note("padded_small", f"{original[0]}x{original[1]} -> {w}x{h} (WxH)")
    return _pad(image, (w, h)) if (w, h) != image.size else image


def _pad(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas

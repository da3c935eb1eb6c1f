"""Images for the tests of the one image path (encoder loading, the processor, the training
dataset, the eval model): noise pictures, their encoded bytes, an EXIF-rotated JPEG and a
PNG that is only a header. ``from image_kit import noise, encoded`` (tests/ is on pytest's
pythonpath)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    """An h x w RGB image of uniform noise (the same for the same seed)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    """``image`` saved as ``fmt`` ("PNG", "JPEG", ...) with Pillow's save options."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A 20x40 (HxW) JPEG whose EXIF orientation 6 says: rotate 90 degrees clockwise (upright
    it is 40x20)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(noise(20, 40, 3), "JPEG", exif=exif.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (8-bit grey) followed by a few bytes of pixel
    data: opening it is cheap, decoding it fails as truncated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)

"""Drawing primitives for ``synthdoc``: fonts, colours, backgrounds, text items, rendering.

A page is described by a ``Page`` (pure data: canvas size, background, text items, lines)
and drawn by ``render``; the only randomness in drawing is the background noise, seeded by
``Page.noise_seed``, so a ``Page`` always renders to the same pixels (same Pillow/FreeType).

Text is drawn with anchor "la" (left, ascender): a text item's ``xy`` is the top-left of its
line box, whose height is ``line_height(size)`` whatever the letters, so rows align.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)

# named inks for "what word is written in <colour>?" questions: all readable on light paper
PALETTE: dict[str, RGB] = {
    "red": (200, 30, 30),
    "blue": (30, 60, 200),
    "green": (20, 130, 40),
    "black": (20, 20, 20),
    "orange": (225, 110, 10),
    "purple": (120, 40, 160),
}


@functools.lru_cache(maxsize=256)
def font(size: int, path: str | None = None) -> ImageFont.FreeTypeFont:
    """A TrueType font at ``size`` px: Pillow's bundled font (path None) or a .ttf file."""
    if path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(path, size=size)
    except OSError as err:
        raise ValueError(
            f"cannot load the font {path!r}: {err}; give a readable .ttf/.otf file in "
            "SynthDocConfig.fonts, or leave fonts empty for Pillow's bundled font"
        ) from err


def line_height(size: int, path: str | None = None) -> int:
    """Height in px of one line of text (ascent + descent)."""
    ascent, descent = font(size, path).getmetrics()
    return ascent + descent


@functools.lru_cache(maxsize=65536)  # layouts measure the same strings many times
def text_width(text: str, size: int, path: str | None = None) -> int:
    """Advance width in px of ``text`` on one line."""
    return int(np.ceil(font(size, path).getlength(text)))


@dataclass
class TextItem:
    """One line of text. ``xy``: top-left of its line box; ``angle``: degrees, counter-clockwise
    about the box centre; ``panel``: optional colour of a filled box behind it (a "sign")."""

    text: str
    xy: tuple[int, int]
    size: int
    ink: RGB
    font_path: str | None = None
    angle: float = 0.0
    panel: RGB | None = None

    @property
    def box(self) -> Box:
        """Unrotated line box."""
        x, y = self.xy
        return (
            x,
            y,
            x + text_width(self.text, self.size, self.font_path),
            y + line_height(self.size, self.font_path),
        )


@dataclass
class Page:
    """Everything needed to draw one image; ``noise`` is the std of the background noise
    (0: plain); ``lines`` are thin rules (table grids, distractor strokes)."""

    size: tuple[int, int]  # (width, height)
    paper: RGB
    noise: float = 0.0
    noise_seed: int = 0
    items: list[TextItem] = field(default_factory=list)
    lines: list[tuple[Box, RGB]] = field(default_factory=list)


def render(page: Page) -> Image.Image:
    """Draw a ``Page`` -> RGB image of ``page.size``."""
    w, h = page.size
    if page.noise > 0:
        rng = np.random.default_rng(page.noise_seed)
        base = np.empty((h, w, 3), np.float32)
        base[:] = page.paper
        base += rng.normal(0.0, page.noise, (h, w, 1)) + rng.normal(0.0, page.noise / 3, (h, w, 3))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="RGB")
    else:
        image = Image.new("RGB", (w, h), page.paper)
    draw = ImageDraw.Draw(image)
    for (x0, y0, x1, y1), colour in page.lines:
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=1)
    # panels first, all of them: a panel must never cover a neighbour's text
    for item in page.items:
        if item.panel is not None and not item.angle:
            draw.rectangle(panel_box(item), fill=item.panel)
    for item in page.items:
        if item.angle:
            _draw_rotated(image, item)
        else:
            item_font = font(item.size, item.font_path)
            draw.text(item.xy, item.text, fill=item.ink, font=item_font, anchor="la")
    return image


def panel_box(item: TextItem) -> Box:
    """The filled box drawn behind a text item with a panel."""
    x0, y0, x1, y1 = item.box
    pad = max(1, item.size // 5)
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad


def _draw_rotated(image: Image.Image, item: TextItem) -> None:
    """Draw the text on a transparent layer, rotate it about its centre and composite it."""
    x0, y0, x1, y1 = item.box
    pad = max(2, item.size // 2)
    layer = Image.new("RGBA", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (pad, pad),
        item.text,
        fill=(*item.ink, 255),
        font=font(item.size, item.font_path),
        anchor="la",
    )
    layer = layer.rotate(item.angle, resample=Image.Resampling.BICUBIC, expand=True)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    image.paste(layer, (cx - layer.width // 2, cy - layer.height // 2), layer)


def rotated_extent(width: int, height: int, angle: float) -> tuple[int, int]:
    """Width and height of the bounding box of a width x height box rotated by ``angle``."""
    a = np.deg2rad(angle)
    c, s = abs(np.cos(a)), abs(np.sin(a))
    return int(np.ceil(width * c + height * s)), int(np.ceil(width * s + height * c))


def fit_size(
    texts: list[str],
    max_width: int,
    max_height: int,
    sizes: range,
    path: str | None,
    rows: int = 1,
    gap: float = 0.25,
) -> int | None:
    """Largest font size in ``sizes`` at which every text fits ``max_width`` and ``rows``
    lines (with ``gap`` x size between them) fit ``max_height``; None when none does."""
    for size in reversed(sizes):
        height = rows * line_height(size, path) + (rows - 1) * int(gap * size)
        if height <= max_height and max(text_width(t, size, path) for t in texts) <= max_width:
            return size
    return None

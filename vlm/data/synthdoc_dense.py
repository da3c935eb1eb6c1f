"""synthdoc's ``dense`` level: several small text items on a mostly blank page, one of them asked.

The easy level draws one large word, which any 16-token summary of the page keeps; here the
answer is one of several items a few patches large, so what a compressor keeps of each region
decides whether it can be read (the regime of paper 4.8). At the default 128 px a line is
about 12 px tall (Pillow's font at size ``round(0.094 * image_size)``, about 7 px a
character), so a word covers a handful of 8 px patches and the page is mostly background.

- ``textvqa``:  four words, one in each quarter of the page; "What word is at the top right?"
- ``docvqa``:   a "key: value" form of three lines (values: words or 2-5 digit numbers) and a
  stray word elsewhere; "What is the total?" / "What is the city?"
- ``ocrbench``: a number (3-5 digits) and two words scattered; "What number is written in the
  image?"

Answers come from ``WORDS`` (about 100) and numbers, so the answer vocabulary is large.

``dense-lite`` (``LITE_BUILDERS``) keeps the page (small items, mostly background, the same
font) but asks for the one item of its kind, so a reader needs no position or key lookup:

- ``textvqa``:  one word and two 3-5 digit strings; "What word is written on the page?"
- ``docvqa``:   one "key: value" line and two distractors of the other kind (a word value
  among numbers, a number among words); "What is the total?"
- ``ocrbench``: one number (2-4 digits) and two words; "What number is written in the image?"

The tiny quickstart LLM learns to read these in CPU minutes (shared/notes/
dense-world-calibration.md: one word and two digit strings, the ``textvqa`` kind here); on the
full ``dense`` level it did not (README, the dense world).
``meta["items"]`` records every drawn line (text, x, y, font size, font file), from which
``dense_targets`` labels each patch with the character whose ink covers it most (or background):
the per-patch targets of the dense stage 0.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

from .synthdoc_config import DIGITS, WORD_KEYS, StyleContext
from .synthdoc_draw import Box, Page, TextItem, font, line_height, text_width

# per-patch classes of the dense targets: background, a-z, 0-9, any other ink (":" etc.)
CHAR_CLASSES = ("<bg>", *string.ascii_lowercase, *string.digits, "<other>")
BACKGROUND, OTHER = 0, len(CHAR_CLASSES) - 1
_CLASS = {c: i for i, c in enumerate(CHAR_CLASSES)}
QUARTERS = {"top left": (0, 0), "top right": (1, 0), "bottom left": (0, 1), "bottom right": (1, 1)}
FONT_FRACTION = 0.094  # font size / page side: 12 px at 128 px
MIN_OVERLAP = 0.15  # of a patch's area, for a glyph's ink box to label the patch


def dense_font_size(image_size: int) -> int:
    return max(8, round(FONT_FRACTION * image_size))


def _textvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    rng, s, size = ctx.rng, ctx.config.image_size, dense_font_size(ctx.config.image_size)
    half, m = s // 2, ctx.margin
    words = ctx.words(len(QUARTERS))
    items = []
    for word, (qx, qy) in zip(words, QUARTERS.values(), strict=True):
        width, height = text_width(word, size, ctx.font_path), line_height(size, ctx.font_path)
        x0, y0 = qx * half + m, qy * half + m
        x = rng.randint(x0, max(x0, x0 + half - 2 * m - width))
        y = rng.randint(y0, max(y0, y0 + half - 2 * m - height))
        items.append(TextItem(word, (x, y), size, (15, 15, 15), ctx.font_path))
    where = rng.choice(sorted(QUARTERS))
    asked = items[list(QUARTERS).index(where)]
    question = f"what word is at the {where}?"
    return _page(ctx, items), question, [asked.text], _meta(items, asked, asked.text, "quarter")


def _docvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    rng, s, size = ctx.rng, ctx.config.image_size, dense_font_size(ctx.config.image_size)
    keys = rng.sample(ctx.form_keys, 3)
    values = [ctx.word() if k in WORD_KEYS else ctx.digits(2, 5) for k in keys]
    lines = [f"{k}: {v}" for k, v in zip(keys, values, strict=True)]
    height = line_height(size, ctx.font_path)
    block_w = max(text_width(t, size, ctx.font_path) for t in lines)
    block_h = 3 * height + 2 * (size // 4)
    x, y = ctx.place(block_w, block_h, (s, s))
    items = [
        TextItem(t, (x, y + i * (height + size // 4)), size, (15, 15, 15), ctx.font_path)
        for i, t in enumerate(lines)
    ]
    stray = _free_spot(ctx, ctx.word(), size, [it.box for it in items])
    target = rng.randrange(3)
    question = f"What is the {keys[target]}?"
    meta = _meta(items + stray, items[target], values[target], "form")
    return _page(ctx, items + stray), question, [values[target]], meta


def _ocrbench(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    size = dense_font_size(ctx.config.image_size)
    number = ctx.digits(3, 5)
    items: list[TextItem] = []
    for text in (number, ctx.word(), ctx.word()):
        items += _free_spot(ctx, text, size, [it.box for it in items])
    meta = _meta(items, items[0], number, "number") | {"question_type": DIGITS}
    return _page(ctx, items), "What number is written in the image?", [number], meta


BUILDERS = {"textvqa": _textvqa, "docvqa": _docvqa, "ocrbench": _ocrbench}


def _lite_textvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    word = ctx.word()
    items = _scatter(ctx, [word, ctx.digits(3, 5, number=False), ctx.digits(3, 5, number=False)])
    page = _page(ctx, items)
    return page, "what word is written on the page?", [word], _meta(items, items[0], word, "word")


def _lite_docvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    key = ctx.rng.choice(ctx.form_keys)
    if key in WORD_KEYS:
        value, others = ctx.word(), [ctx.digits(2, 4), ctx.digits(2, 4)]
    else:
        value, others = ctx.digits(2, 4), [ctx.word(), ctx.word()]
    items = _scatter(ctx, [f"{key}: {value}", *others])
    return _page(ctx, items), f"What is the {key}?", [value], _meta(items, items[0], value, "form")


def _lite_ocrbench(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    number = ctx.digits(2, 4)
    items = _scatter(ctx, [number, ctx.word(), ctx.word()])
    meta = _meta(items, items[0], number, "number") | {"question_type": DIGITS}
    return _page(ctx, items), "What number is written in the image?", [number], meta


LITE_BUILDERS = {"textvqa": _lite_textvqa, "docvqa": _lite_docvqa, "ocrbench": _lite_ocrbench}


def _scatter(ctx: StyleContext, texts: list[str]) -> list[TextItem]:
    """``texts`` at random non-overlapping places; the first (the answer) is always drawn."""
    size = dense_font_size(ctx.config.image_size)
    width = text_width(texts[0], size, ctx.font_path)
    x, y = ctx.place(width, line_height(size, ctx.font_path), (ctx.config.image_size,) * 2)
    items = [TextItem(texts[0], (x, y), size, (15, 15, 15), ctx.font_path)]
    for text in texts[1:]:
        items += _free_spot(ctx, text, size, [it.box for it in items])
    return items


def dense_targets(items: Sequence[Sequence], image_size: int, grid: int) -> np.ndarray:
    """[grid, grid] int64 class ids (``CHAR_CLASSES``): for each patch, the character whose
    glyph ink box overlaps it most (at least ``MIN_OVERLAP`` of it), else background. ``items``: ``meta["items"]`` of a record
    drawn at ``image_size`` px; the grid may be of any input size (boxes are rescaled)."""
    labels = np.full((grid, grid), BACKGROUND, dtype=np.int64)
    # overlap (px^2 of the page) of the label chosen so far; a sliver of a glyph's box
    # (often blank: the box is not the ink) does not make a patch that character's
    best = np.full((grid, grid), MIN_OVERLAP * (image_size / grid) ** 2)
    edges = np.arange(grid + 1) * image_size / grid  # patch borders in page px
    for text, x, y, size, font_path in items:
        face = font(int(size), font_path)
        for i, char in enumerate(text):
            if char.isspace():
                continue
            left, top, right, bottom = face.getbbox(char, anchor="la")  # the glyph's ink
            x0 = x + face.getlength(text[:i])  # where the glyph starts on the line
            across = _overlaps(edges, x0 + left, x0 + right)
            down = _overlaps(edges, y + top, y + bottom)
            area = np.outer(down, across)  # [grid, grid]
            wins = area > best
            labels[wins], best[wins] = _CLASS.get(char.lower(), OTHER), area[wins]
    return labels


def _overlaps(edges: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Length of [lo, hi) inside each interval [edges[j], edges[j + 1])."""
    return np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None)


def _free_spot(ctx: StyleContext, text: str, size: int, taken: list[Box]) -> list[TextItem]:
    """``text`` at a random place overlapping none of ``taken`` (a few tries, else left out)."""
    s, gap = ctx.config.image_size, 2
    width, height = text_width(text, size, ctx.font_path), line_height(size, ctx.font_path)
    for _ in range(30):
        x, y = ctx.place(width, height, (s, s))
        box = (x - gap, y - gap, x + width + gap, y + height + gap)
        if not any(_overlap(box, other) for other in taken):
            return [TextItem(text, (x, y), size, (15, 15, 15), ctx.font_path)]
    return []


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _page(ctx: StyleContext, items: list[TextItem]) -> Page:
    s = ctx.config.image_size
    return Page((s, s), (250, 250, 250), items=items)


def _meta(items: list[TextItem], asked: TextItem, answer: str, kind: str) -> dict:
    return {
        "texts": [it.text for it in items],
        "answer_box": list(asked.box),
        "items": [[it.text, it.xy[0], it.xy[1], it.size, it.font_path] for it in items],
        "question_kind": kind,
        "answer": answer,
    }

"""synthdoc's three styles: what one record shows and asks (used by ``synthdoc.plan_record``).

Each builder takes a ``StyleContext`` (the record's RNG, config and level) and returns
(``Page``, question, answers, meta). Constants here are the content pools.
"""

from __future__ import annotations

import string

from .synthdoc_config import (
    DIGITS,
    IRREGULAR,
    NON_SEMANTIC,
    NUMBER_KEYS,
    REGULAR,
    WORD_KEYS,
    StyleContext,
)
from .synthdoc_draw import PALETTE, Page, TextItem, rotated_extent, text_width
from .synthdoc_layout import form_items, table_items


def _textvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    rng, s, m = ctx.rng, ctx.config.image_size, ctx.margin
    k = {"easy": 1, "medium": 2, "hard": rng.choice((2, 3))}[ctx.level]
    paper, ink = ctx.paper_and_ink()
    scene = ctx.level != "easy" and ctx.config.colors  # words on light signs over a mid-tone
    if scene:
        paper = tuple(rng.randint(90, 200) for _ in range(3))
    while True:
        words = ctx.words(k)
        band = (s - 2 * m) // k
        size = ctx.fit(words, s - 2 * m - 2, band - 2)
        if size is not None or k == 1:
            break
        k -= 1
    size = size or ctx.config.min_font_size
    names = rng.sample(sorted(PALETTE), k) if (k > 1 and ctx.config.colors) else []
    items = []
    for i, word in enumerate(words):  # word i lies inside horizontal band i
        item = TextItem(
            word,
            (0, 0),
            size,
            PALETTE[names[i]] if names else ink,
            ctx.font_path,
            panel=tuple(rng.randint(225, 255) for _ in range(3)) if scene else None,
        )
        x0, y0, x1, y1 = item.box
        top = m + i * band + 1
        item.xy = (
            rng.randint(m + 1, s - m - 1 - (x1 - x0)),
            rng.randint(top, max(top, top + band - 2 - (y1 - y0))),
        )
        items.append(item)
    target = rng.randrange(k)
    if k == 1:
        question = rng.choice(
            (
                "What word is written in the image?",
                "What is written here?",
                "What does the sign say?" if scene else "What word is shown?",
            )
        )
    elif names and rng.random() < 0.5:
        question = f"What word is written in {names[target]}?"
    else:
        target = rng.choice((0, k - 1))
        question = f"What is the word at the {'top' if target == 0 else 'bottom'}?"
    page = Page((s, s), paper, ctx.noise() if scene or ctx.level == "hard" else 0.0, items=items)
    meta = {
        "texts": words,
        "ocr_tokens": list(words),
        "answer_box": items[target].box,
        "inks": names,
    }
    return page, question, [words[target]], meta


def _docvqa(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    rng, level = ctx.rng, ctx.level
    canvas = ctx.canvas()
    paper, ink = ctx.paper_and_ink()
    key_ink = (
        ink
        if not ctx.config.colors
        else tuple(min(255, c + 60) if sum(ink) < 384 else max(0, c - 60) for c in ink)
    )
    page = Page(canvas, paper, ctx.noise())
    if level == "hard" and rng.random() < 0.5:
        done = table_items(ctx, page, ink)
        if done is not None:
            question, answer, answer_box, texts = done
            meta = {
                "texts": texts,
                "answer_box": answer_box,
                "question_types": ["table/list"],
                "large_page": canvas[0] > ctx.config.image_size,
            }
            return page, question, [answer], meta
    if level == "easy":  # one field: a word one unless numbers are asked for
        keys = [rng.choice(NUMBER_KEYS if ctx.config.form_values == "numbers" else WORD_KEYS)]
    else:
        n = rng.randint(3, 4) if level == "medium" else rng.randint(4, 6)
        keys = rng.sample(ctx.form_keys, n)
    values = []
    for key in keys:
        if key in WORD_KEYS:
            values.append(ctx.word())
        elif key == "price" and level == "hard":
            values.append(f"{rng.randint(1, 99)}.{rng.randint(0, 99):02d}")
        else:
            values.append(ctx.digits(2, 4))
    target = rng.randrange(len(keys))
    answer_box, texts, layout = form_items(ctx, page, keys, values, target, ink, key_ink)
    meta = {
        "texts": texts,
        "answer_box": answer_box,
        "question_types": ["form"],
        "layout": layout,
        "large_page": canvas[0] > ctx.config.image_size,
    }
    return page, f"What is the {keys[target]}?", [values[target]], meta


def _ocrbench(ctx: StyleContext) -> tuple[Page, str, list[str], dict]:
    rng, level, m = ctx.rng, ctx.level, ctx.margin
    s = ctx.config.image_size
    kind = {
        "easy": ("word",),
        "medium": ("word", "digits", "letters"),
        "hard": ("line", "rotated", "digits", "letters"),
    }[level]
    kind = rng.choice(kind)
    if kind == "digits":
        text, qtype = ctx.digits(4, 6, number=False), DIGITS
    elif kind == "letters":
        text = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 6)))
        qtype = NON_SEMANTIC
    elif kind == "line":
        text, qtype = " ".join(ctx.words(rng.randint(2, 3))), REGULAR
    else:
        text, qtype = ctx.word(), REGULAR if kind == "word" else IRREGULAR
    angle = rng.choice((-1, 1)) * rng.uniform(8.0, 25.0) if kind == "rotated" else 0.0
    room = s - 2 * m - 2
    size = ctx.fit([text], room, room)
    if size is None or (angle and rotated_extent(text_width(text, size), size, angle)[0] > room):
        text, angle, qtype = ctx.word(), 0.0, REGULAR  # a single word always fits (validated)
        size = ctx.fit([text], room, room) or ctx.config.min_font_size
    canvas = ctx.canvas()
    paper, ink = ctx.paper_and_ink()
    item = TextItem(text, (0, 0), size, ink, ctx.font_path, angle=angle)
    x0, y0, x1, y1 = item.box
    w, h = rotated_extent(x1 - x0, y1 - y0, angle) if angle else (x1 - x0, y1 - y0)
    cx, cy = ctx.place(w, h, canvas)
    item.xy = (cx + (w - (x1 - x0)) // 2, cy + (h - (y1 - y0)) // 2)  # centre stays put
    page = Page(canvas, paper, ctx.noise() if level != "easy" else 0.0, items=[item])
    meta = {
        "texts": [text],
        "answer_box": (cx, cy, cx + w, cy + h),
        "question_type": qtype,
        "large_page": canvas[0] > s,
    }
    return page, "What is written in the image?", [text], meta


BUILDERS = {"textvqa": _textvqa, "docvqa": _docvqa, "ocrbench": _ocrbench}

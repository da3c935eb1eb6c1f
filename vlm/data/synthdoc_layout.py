"""Form and table layouts for synthdoc's docvqa style (text items placed on a ``Page``).

Text is sized for ``config.image_size`` even on large pages, which therefore stay mostly
white. A layout that cannot fit shrinks its font, then drops entries (never the asked one).
"""

from __future__ import annotations

from .synthdoc_config import StyleContext
from .synthdoc_draw import RGB, Box, Page, TextItem, fit_size, line_height, text_width

GAP = 0.25  # space between rows, as a fraction of the font size (as fit_size assumes)
TABLE_COLUMNS = ("qty", "price", "code", "size")


def form_items(
    ctx: StyleContext,
    page: Page,
    keys: list[str],
    values: list[str],
    target: int,
    ink: RGB,
    key_ink: RGB,
) -> tuple[Box, list[str], str]:
    """Add a "key: value" form to ``page``; returns (box of the asked value, drawn lines,
    layout: "inline" = one line per entry, "stacked" = key line then indented value line)."""
    keys, values = list(keys), list(values)
    room = ctx.config.image_size - 2 * ctx.margin - 2
    while True:
        # the layout allowing the larger font wins (ties: inline)
        inline = ([f"{k}: {v}" for k, v in zip(keys, values, strict=True)], len(keys))
        stacked = ([f"{k}:" for k in keys] + [f"  {v}" for v in values], 2 * len(keys))
        best = {
            name: fit_size(texts, room, room, ctx.sizes, ctx.font_path, rows) or 0
            for name, (texts, rows) in (("inline", inline), ("stacked", stacked))
        }
        layout = "inline" if best["inline"] >= best["stacked"] else "stacked"
        texts, rows = inline if layout == "inline" else stacked
        size = ctx.fit(texts, room, room, rows=rows)
        if size is not None or len(keys) == 1:
            break
        drop = ctx.rng.choice([i for i in range(len(keys)) if i != target])
        del keys[drop], values[drop]
        target -= drop < target
    size = size or ctx.config.min_font_size
    path, step = ctx.font_path, line_height(size, ctx.font_path) + int(GAP * size)
    rows = len(keys) * (1 if layout == "inline" else 2)
    width = max(text_width(f"{k}: {v}", size, path) for k, v in zip(keys, values, strict=True))
    x, y = ctx.place(width, rows * step, page.size)
    answer_box: Box = (0, 0, 0, 0)
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        label = f"{key}: " if layout == "inline" else f"{key}:"
        page.items.append(TextItem(label, (x, y), size, key_ink, path))
        if layout == "inline":
            value_xy = (x + text_width(label, size, path), y)
        else:
            y += step
            value_xy = (x + text_width("  ", size, path), y)
        item = TextItem(value, value_xy, size, ink, path)
        page.items.append(item)
        if i == target:
            answer_box = item.box
        y += step
    lines = [f"{k}: {v}" for k, v in zip(keys, values, strict=True)]
    return answer_box, lines, layout


def table_items(ctx: StyleContext, page: Page, ink: RGB) -> tuple[str, str, Box, list[str]] | None:
    """Add a small table (row labels = words, numeric cells) to ``page``; returns (question,
    answer, answer box, drawn lines) or None when it cannot fit or its rows are not distinct."""
    rng, path = ctx.rng, ctx.font_path
    columns = rng.sample(TABLE_COLUMNS, rng.randint(2, 3))
    rows = ctx.words(rng.randint(2, 3))
    if len(set(rows)) < len(rows):
        return None  # "the price of apple" would be ambiguous
    cells = [[ctx.digits(1, 3) for _ in columns] for _ in rows]
    grid = [["", *columns]] + [[row, *cell] for row, cell in zip(rows, cells, strict=True)]
    room = ctx.config.image_size - 2 * ctx.margin - 2
    size = None
    for candidate in reversed(ctx.sizes):
        widths, height = _table_extent(grid, candidate, path)
        if sum(widths) <= room and height <= room:
            size = candidate
            break
    if size is None:
        return None
    if size >= ctx.preferred.start:  # some variety, as ctx.fit does
        size = rng.randint(ctx.preferred.start, min(size, ctx.preferred.stop - 1))
    widths, height = _table_extent(grid, size, path)
    x0, y0 = ctx.place(sum(widths), height, page.size)
    pad, step = max(1, size // 3), line_height(size, path) + 2 * max(1, size // 3)
    rule = tuple((c + 128) // 2 for c in ink)
    r, c = rng.randrange(len(rows)), rng.randrange(len(columns))
    answer_box: Box = (0, 0, 0, 0)
    for i, line in enumerate(grid):
        y = y0 + i * step
        x = x0
        for j, text in enumerate(line):
            if text:
                item = TextItem(text, (x + pad, y + pad), size, ink, path)
                page.items.append(item)
                if (i, j) == (r + 1, c + 1):
                    answer_box = item.box
            x += widths[j]
        page.lines.append(((x0, y + step - 1, x0 + sum(widths), y + step - 1), rule))
    x = x0
    for w in widths[:-1]:
        x += w
        page.lines.append(((x, y0, x, y0 + height - 1), rule))
    question = f"What is the {columns[c]} of {rows[r]}?"
    return question, cells[r][c], answer_box, [" ".join(t for t in line if t) for line in grid]


def _table_extent(grid: list[list[str]], size: int, path: str | None) -> tuple[list[int], int]:
    """Column widths (text + padding) and total height of ``grid`` at ``size``."""
    pad = max(1, size // 3)
    widths = [
        max(text_width(row[j], size, path) for row in grid) + 2 * pad for j in range(len(grid[0]))
    ]
    return widths, len(grid) * (line_height(size, path) + 2 * pad)

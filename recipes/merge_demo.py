"""Token-merge demo: what ToMe keeps of a document page at a fixed budget, versus the baselines.

Features here are the page's own pixel patches (16 x 16 RGB, centred), so the demo needs no
model weights and a reconstruction can be looked at as a picture: a 768 px page is a 48 x 48
grid, the geometry of RADIOv2.5-H at 768 px, and K = 256 is the paper's "ToMe r=2048" setting.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from PIL import Image, ImageDraw, ImageFont

from token_merge import compress, reconstruction_error, visualize

WORDS = (
    "invoice total amount date account number balance payment due vision encoder token "
    "merge budget image patch resolution teacher student model page table summary report "
    "quarterly revenue region north south east west units price tax order customer"
).split()


def render_page(size: int = 768, seed: int = 0) -> Image.Image:
    """A synthetic document page: title, paragraphs, a key: value form, a table, a logo."""
    rng = random.Random(seed)
    page = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(page)
    unit = size / 768

    def font(px: float) -> ImageFont.ImageFont:
        return ImageFont.load_default(size=max(8, round(px * unit)))

    margin = round(48 * unit)
    draw.text((margin, margin), "QUARTERLY REPORT", fill=(20, 40, 120), font=font(40))
    draw.rectangle(
        [size - margin - 90 * unit, margin, size - margin, margin + 60 * unit], fill=(200, 60, 40)
    )
    y = margin + 80 * unit
    for _ in range(3):  # paragraphs
        for _ in range(rng.randint(2, 4)):
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9)))
            draw.text((margin, y), line, fill=(30, 30, 30), font=font(18))
            y += 24 * unit
        y += 20 * unit
    for key in ("Account", "Date", "Total"):  # a small form
        value = str(rng.randint(1000, 99999))
        draw.text((margin, y), f"{key}: {value}", fill=(0, 0, 0), font=font(22))
        y += 32 * unit
    y += 16 * unit
    cols, rows, cell_w, cell_h = 4, 4, 120 * unit, 30 * unit
    for r in range(rows):  # a table with ruled cells
        for c in range(cols):
            x0, y0 = margin + c * cell_w, y + r * cell_h
            draw.rectangle([x0, y0, x0 + cell_w, y0 + cell_h], outline=(90, 90, 90))
            text = rng.choice(WORDS) if r == 0 else str(rng.randint(1, 999))
            draw.text((x0 + 6 * unit, y0 + 6 * unit), text, fill=(10, 10, 10), font=font(16))
    return page


def patch_grid(image: Image.Image, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel patches as features: [1, h, w, 3*patch*patch] (centred) and the per-channel mean."""
    pixels = torch.from_numpy(np.array(image.convert("RGB"))).float() / 255
    height, width = pixels.shape[0] // patch * patch, pixels.shape[1] // patch * patch
    pixels = pixels[:height, :width]
    mean = pixels.mean(dim=(0, 1))
    h, w = height // patch, width // patch
    grid = (pixels - mean).reshape(h, patch, w, patch, 3).permute(0, 2, 1, 3, 4)
    return grid.reshape(1, h, w, patch * patch * 3), mean


def grid_to_image(
    features: torch.Tensor, grid_hw: tuple[int, int], patch: int, mean
) -> Image.Image:
    """Inverse of ``patch_grid`` for features [h*w, 3*patch*patch]."""
    h, w = grid_hw
    pixels = (
        features.reshape(h, w, patch, patch, 3)
        .permute(0, 2, 1, 3, 4)
        .reshape(h * patch, w * patch, 3)
    )
    array = ((pixels + mean).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def run(image: Image.Image, num_tokens: int, patch: int, out_dir: Path) -> list[dict]:
    """Compress the page with every method at one budget; write pictures, JSON and Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid, mean = patch_grid(image, patch)
    h, w = grid.shape[1:3]
    image = image.convert("RGB").crop((0, 0, w * patch, h * patch))
    rows, recon = [], {}
    for method in ("tome", "avgpool", "unshuffle"):
        out = compress(grid, method, num_tokens=num_tokens)
        recon[method] = grid_to_image(out.unmerge()[0], (h, w), patch, mean)
        rows.append(
            {
                "method": method,
                "grid": f"{h}x{w}",
                "tokens": out.num_tokens,
                "channels_per_token": out.tokens.shape[-1],
                "values_per_image": out.num_tokens * out.tokens.shape[-1],
                "reconstruction_mse": float(reconstruction_error(grid, out, normalize=True)),
            }
        )
        if method == "tome":
            merged = out
    visualize(image, merged, alpha=0.55).save(out_dir / "merge.png")
    _panel(image, merged, recon, num_tokens, out_dir / "panel.png")
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_table(rows) + "\n")
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = "| method | grid | tokens | channels/token | values/image | reconstruction MSE (normalised) |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['grid']} | {r['tokens']} | {r['channels_per_token']} | "
            f"{r['values_per_image']} | {r['reconstruction_mse']:.4f} |"
        )
    return "\n".join(lines)


def _panel(image, merged, recon, num_tokens, path: Path) -> None:
    panels = [
        ("page", image),
        (f"ToMe regions (K={num_tokens})", visualize(image, merged, alpha=0.55)),
        ("ToMe, unmerged", recon["tome"]),
        (f"avg-pool (K={num_tokens}), unmerged", recon["avgpool"]),
    ]
    fig = Figure(figsize=(4 * len(panels), 4.3), dpi=110)
    axes = fig.subplots(1, len(panels))
    for ax, (title, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, help="a picture to use instead of the built-in page")
    parser.add_argument("--size", type=int, default=768, help="page side / longest side in px")
    parser.add_argument("--patch", type=int, default=16, help="patch size in px")
    parser.add_argument("--tokens", type=int, default=256, help="visual-token budget K")
    parser.add_argument("--seed", type=int, default=0, help="seed of the built-in page")
    parser.add_argument("--out", type=Path, default=Path("runs/merge_demo"), help="output folder")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    if args.image is not None:
        try:
            image = Image.open(args.image)
            image.load()
        except (OSError, ValueError) as err:
            raise SystemExit(
                f"radio-vlm merge-demo: cannot read --image {args.image}: {err}"
            ) from err
        scale = args.size / max(image.size)
        image = image.convert("RGB").resize(
            (
                max(args.patch, round(image.width * scale)),
                max(args.patch, round(image.height * scale)),
            )
        )
    else:
        image = render_page(args.size, args.seed)
    rows = run(image, args.tokens, args.patch, args.out)
    print(markdown_table(rows))
    print(f"\nwrote {args.out}/merge.png, panel.png, results.json, report.md")
    return 0

"""What `radio-vlm encoder ...` writes: the equivariance report (Markdown), its bar chart and
the PCA figure (``recipes.encoder_analysis`` computes the numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from PIL import Image
from torch import Tensor


def markdown_report(results: dict) -> str:
    res = ", ".join(str(r) for r in results["resolutions"])
    lines = [
        f"Scale equivariance (paper A.5; lower = more equivariant) of `{results.get('encoder')}`"
        + (f" adaptor `{results['adaptor']}`" if results["adaptor"] else "")
        + f" at {res} px.",
        "",
        "| image | grids | scale equivariance |",
        "|---|---|---|",
    ]
    for row in results["images"]:
        lines.append(
            f"| {row['image']} | {', '.join(row['grids'])} | {row['scale_equivariance']:.4f} |"
        )
    lines.append(f"| **mean** | | **{results['mean_scale_equivariance']:.4f}** |")
    if tiled := results.get("tiled"):
        lines += [
            "",
            f"Tiled (paper Table 2's tiling rows): {tiled['tile_size']} px tiles, each encoded "
            "alone, their grids stitched back into one (no thumbnail).",
            "",
            "| image | tiles | grids | scale equivariance |",
            "|---|---|---|---|",
        ]
        for row in tiled["images"]:
            lines.append(
                f"| {row['image']} | {', '.join(row['tiles'])} | {', '.join(row['grids'])} | "
                f"{row['scale_equivariance']:.4f} |"
            )
        lines.append(f"| **mean** | | | **{tiled['mean_scale_equivariance']:.4f}** |")
    return "\n".join(lines)


def pca_figure(
    image: Image.Image, grids: Sequence[Tensor], resolutions: Sequence[int], path: Path
) -> None:
    """The image, then one PCA picture per resolution (one basis for all), saved as a PNG."""
    from encoder.analysis import fit_pca, pca_image
    from encoder.image_processing import to_rgb

    basis = fit_pca(grids)
    fig = Figure(figsize=(3.2 * (len(grids) + 1), 3.6), dpi=110)
    axes = fig.subplots(1, len(grids) + 1)
    axes[0].imshow(to_rgb(image))  # as the encoder sees it (transparency on white)
    axes[0].set_title("input", fontsize=11)
    for ax, grid, r in zip(axes[1:], grids, resolutions, strict=True):
        ax.imshow(pca_image(grid, basis).numpy(), interpolation="nearest")
        ax.set_title(f"{r} px ({grid.shape[0]}x{grid.shape[1]})", fontsize=11)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def bar_chart(results: dict, path: Path) -> None:
    rows, tiled = results["images"], results.get("tiled")
    fig = Figure(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.6), dpi=110)
    ax = fig.subplots()
    width = 0.4 if tiled else 0.8
    x = np.arange(len(rows)) - (width / 2 if tiled else 0)
    ax.bar(x, [r["scale_equivariance"] for r in rows], width, color="#4c72b0", label="native")
    ax.axhline(results["mean_scale_equivariance"], color="#c44e52", ls="--", label="mean")
    if tiled:
        scores = [r["scale_equivariance"] for r in tiled["images"]]
        ax.bar(x + width, scores, width, color="#dd8452", label=f"{tiled['tile_size']} px tiles")
        ax.axhline(tiled["mean_scale_equivariance"], color="#8c564b", ls=":", label="tiled mean")
    ax.set_xticks(range(len(rows)), [Path(r["image"]).name for r in rows], rotation=45, ha="right")
    ax.set_ylabel("scale equivariance (lower = better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)

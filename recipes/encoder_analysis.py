"""`radio-vlm encoder ...`: how a vision tower's features change with the input resolution.

    radio-vlm encoder pca IMAGE --encoder SPEC --resolutions 256,512,1024 --out pca.png
    radio-vlm encoder equivariance IMG [IMG ...] --encoder SPEC --resolutions 256,512,1024 --out DIR

``pca`` draws the paper's Figure 3: the image, then the first three principal components of
its patch features at each resolution as RGB, with one basis shared by all resolutions so a
colour means the same direction everywhere. ``equivariance`` writes the paper's Table 2 measure
(A.5, ``encoder.analysis.scale_equivariance``) per image and their mean as results.json,
report.md and a bar chart.

Each image is resized by ``encoder.image_processing.ImageProcessor(mode="keep-aspect")``: its
longest side is the resolution, the other side keeps the aspect ratio rounded to the nearest
multiple of the patch. Resolutions above the encoder's ``max_resolution`` or not a multiple of
its patch are refused (no silent clamp: the numbers would not be the ones asked for).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from encoder import VisionEncoder

# `encoder` (transformers) is imported inside the functions that need it: `radio-vlm --help`
# and the other subcommands should not pay seconds of import time for this one.

DEFAULT_RESOLUTIONS = "256,512,1024"
# encoder.analysis defaults, recorded in results.json because they change the numbers
SETTINGS = {
    "variance": "unbiased",
    "interpolation": "bilinear",
    "align_corners": False,
    "antialias": False,
}


# ----------------------------------------------------------------------- library


def encode_at_resolutions(
    encoder: VisionEncoder,
    image: Image.Image,
    resolutions: Sequence[int],
    *,
    adaptor: str | None = None,
) -> list[Tensor]:
    """One image through the encoder at each resolution -> grids [h_i, w_i, C] (float32, CPU).

    image: anything ``ImageProcessor`` takes (PIL of any mode, array, tensor).

    adaptor: take that teacher head's grid (RADIO ``EncoderOutput.adaptors``) instead of the
    backbone's; the encoder must have been built with it in ``adaptor_names``.
    """
    from encoder.image_processing import ImageProcessor

    check_resolutions(encoder, resolutions)
    processors = [
        ImageProcessor(
            patch_size=encoder.patch_size,
            resolution=r,
            max_resolution=encoder.max_resolution,
            mode="keep-aspect",
        )
        for r in resolutions
    ]
    device = next(encoder.parameters()).device
    dtype = next(encoder.parameters()).dtype
    grids = []
    for processor in processors:
        pixels = processor.preprocess(image)  # [3, H, W] in [0, 1], sides multiples of patch
        with torch.inference_mode():
            out = encoder(pixels[None].to(device=device, dtype=dtype))
        if adaptor is not None:
            if adaptor not in out.adaptors:
                raise ValueError(
                    f"the encoder returned no {adaptor!r} adaptor (it ran {sorted(out.adaptors)});"
                    f" build it with adaptor_names=[{adaptor!r}]"
                )
            out = out.adaptors[adaptor]
        grids.append(out.grid[0].float().cpu())
    return grids


def check_resolutions(encoder: VisionEncoder, resolutions: Sequence[int]) -> None:
    """Refuse resolutions that are not multiples of the patch or exceed ``max_resolution``."""
    patch, limit = encoder.patch_size, encoder.max_resolution
    for r in resolutions:
        if r < patch or r % patch:
            lower = max(patch, r // patch * patch)
            raise ValueError(
                f"resolution {r} is not a multiple of the encoder's patch size {patch}; "
                f"use {lower} or {lower + patch}"
            )
        if r > limit:
            raise ValueError(
                f"resolution {r} is above the encoder's max_resolution {limit}; pass "
                f"--resolutions up to {limit}"
            )


def equivariance_results(
    encoder: VisionEncoder,
    images: dict[str, Image.Image],
    resolutions: Sequence[int],
    *,
    adaptor: str | None = None,
    progress: bool = True,
) -> dict:
    """Scale equivariance of each image (name -> picture) and the mean, as written to JSON."""
    from encoder.analysis import scale_equivariance

    if len(resolutions) < 2:
        raise ValueError(f"scale equivariance needs >= 2 resolutions; got {list(resolutions)}")
    rows = []
    for name, image in tqdm(images.items(), desc="images", unit="img", disable=not progress):
        grids = encode_at_resolutions(encoder, image, resolutions, adaptor=adaptor)
        score = scale_equivariance(
            [g.permute(2, 0, 1) for g in grids],
            unbiased=SETTINGS["variance"] == "unbiased",
            antialias=SETTINGS["antialias"],
        )
        rows.append(
            {
                "image": name,
                "grids": [f"{g.shape[0]}x{g.shape[1]}" for g in grids],
                "scale_equivariance": score,
            }
        )
    return {
        "resolutions": list(resolutions),
        "adaptor": adaptor,
        "settings": SETTINGS,
        "images": rows,
        "mean_scale_equivariance": float(np.mean([r["scale_equivariance"] for r in rows])),
    }


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


def _bar_chart(results: dict, path: Path) -> None:
    rows = results["images"]
    fig = Figure(figsize=(max(4.0, 0.6 * len(rows) + 2), 3.6), dpi=110)
    ax = fig.subplots()
    ax.bar(range(len(rows)), [r["scale_equivariance"] for r in rows], color="#4c72b0")
    ax.axhline(results["mean_scale_equivariance"], color="#c44e52", ls="--", label="mean")
    ax.set_xticks(range(len(rows)), [Path(r["image"]).name for r in rows], rotation=45, ha="right")
    ax.set_ylabel("scale equivariance (lower = better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    pca = sub.add_parser(
        "pca",
        help="PCA pictures of one image's features at several resolutions (paper Figure 3)",
        description="PCA pictures of one image's features at several resolutions, one basis",
    )
    pca.add_argument("image", type=Path, help="the picture")
    _shared(pca)
    pca.add_argument("--out", type=Path, default=Path("runs/encoder_pca.png"), help="PNG path")
    pca.set_defaults(run=main_pca)
    eq = sub.add_parser(
        "equivariance",
        help="scale equivariance of images' features across resolutions (paper A.5, Table 2)",
        description="scale equivariance (paper A.5) per image and mean: JSON + Markdown + PNG",
    )
    eq.add_argument("images", type=Path, nargs="+", help="one or more pictures")
    _shared(eq)
    eq.add_argument(
        "--out", type=Path, default=Path("runs/encoder_equivariance"), help="output folder"
    )
    eq.set_defaults(run=main_equivariance)


def _shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder", required=True, help="registry name, hub id or local folder (build_encoder)"
    )
    parser.add_argument(
        "--resolutions",
        type=_resolutions,
        default=_resolutions(DEFAULT_RESOLUTIONS),
        help=f"comma-separated longest sides in px (default {DEFAULT_RESOLUTIONS})",
    )
    parser.add_argument("--adaptor", help="analyse this teacher head's features (RADIO)")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda if present)")


def _resolutions(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(
            f"--resolutions must be positive integers separated by commas, e.g. 256,512; "
            f"got {text!r}"
        )
    return values


def main_pca(args: argparse.Namespace) -> int:
    image = _open(args.image, "pca")
    encoder = _build(args, "pca")
    grids = _guard(
        lambda: encode_at_resolutions(encoder, image, args.resolutions, adaptor=args.adaptor),
        "pca",
    )
    pca_figure(image, grids, args.resolutions, args.out)
    pairs = zip(args.resolutions, grids, strict=True)
    sizes = ", ".join(f"{r} px -> {g.shape[0]}x{g.shape[1]}" for r, g in pairs)
    print(f"{sizes}\nwrote {args.out}")
    return 0


def main_equivariance(args: argparse.Namespace) -> int:
    if len(args.resolutions) < 2:
        raise SystemExit(
            f"radio-vlm encoder equivariance: needs >= 2 --resolutions; got {args.resolutions}"
        )
    images = {str(path): _open(path, "equivariance") for path in args.images}
    encoder = _build(args, "equivariance")
    results = _guard(
        lambda: equivariance_results(encoder, images, args.resolutions, adaptor=args.adaptor),
        "equivariance",
    )
    results = {"encoder": str(args.encoder), **results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown_report(results)
    (args.out / "report.md").write_text(report + "\n")
    _bar_chart(results, args.out / "equivariance.png")
    print(f"{report}\n\nwrote {args.out}/results.json, report.md, equivariance.png")
    return 0


def _open(path: Path, command: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as err:
        raise SystemExit(f"radio-vlm encoder {command}: cannot read image {path}: {err}") from err
    return image  # RGB conversion is the image processor's job (alpha, 16-bit, palettes)


def _build(args: argparse.Namespace, command: str) -> VisionEncoder:
    from encoder import build_encoder

    overrides = {"adaptor_names": [args.adaptor]} if args.adaptor else {}
    try:
        encoder = build_encoder(args.encoder, **overrides)
    except (ValueError, OSError) as err:  # bad spec, missing folder, no network for a hub id
        raise SystemExit(
            f"radio-vlm encoder {command}: cannot build --encoder {args.encoder}: {err}"
        ) from err
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    encoder = encoder.to(device).eval()
    _guard(lambda: check_resolutions(encoder, args.resolutions), command)
    return encoder


def _guard(fn, command: str):
    """Run ``fn``; a ValueError (bad input, named by the library) becomes a clean exit."""
    try:
        return fn()
    except ValueError as err:
        raise SystemExit(f"radio-vlm encoder {command}: {err}") from err

"""`radio-vlm encoder ...`: how a vision tower's features change with the input resolution.

    radio-vlm encoder pca IMAGE --encoder SPEC --resolutions 256,512,1024 --out pca.png
    radio-vlm encoder equivariance IMG [IMG ...] --encoder SPEC --resolutions 256,512,1024 --out DIR

``pca`` draws the paper's Figure 3: the image, then the first three principal components of
its patch features at each resolution as RGB, with one basis shared by all resolutions so a
colour means the same direction everywhere. ``equivariance`` writes the paper's Table 2 measure
(A.5, ``encoder.analysis.scale_equivariance``) per image and their mean as results.json,
report.md and a bar chart.

``equivariance --tiles [PX]`` adds the tiled rows of Table 2: at each resolution the image
(keep-aspect, each side rounded to whole tiles) is cut into PX-px tiles (default: the smallest
resolution), every tile is encoded alone, and the tiles' grids are stitched back into one grid
by the layout (``encoder.tiling``; no thumbnail); the same measure then runs on those grids.

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
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from encoder import VisionEncoder
    from encoder.tiling import TileLayout

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
    grids = []
    for processor in processors:
        pixels = processor.preprocess(image)  # [3, H, W] in [0, 1], sides multiples of patch
        grids.append(_encode(encoder, pixels[None], adaptor)[0])
    return grids


def encode_tiled_at_resolutions(
    encoder: VisionEncoder,
    image: Image.Image,
    resolutions: Sequence[int],
    tile_size: int,
    *,
    adaptor: str | None = None,
) -> tuple[list[Tensor], list[TileLayout]]:
    """The tiled counterpart of ``encode_at_resolutions``: at each resolution the image
    (keep-aspect, each side rounded to whole tiles, >= 1) is cut into tile_size px tiles, each
    encoded alone, and their grids stitched back by the layout (no thumbnail) -> grids
    [rows*h, cols*w, C] (float32, CPU) and the layouts."""
    from encoder.image_processing import ImageProcessor, to_rgb
    from encoder.tiling import cut_tiles, untile

    check_tiles(encoder, resolutions, tile_size)
    rgb = to_rgb(image)
    grids, layouts = [], []
    for r in resolutions:
        # an image processor whose "patch" is a tile rounds the sides to whole tiles
        whole_tiles = ImageProcessor(patch_size=tile_size, resolution=r, max_resolution=r)
        height, width = whole_tiles.target_size(rgb.height, rgb.width)
        rows, cols = height // tile_size, width // tile_size
        tiles, layout = cut_tiles(rgb, rows, cols, tile_size=tile_size, thumbnail=False)
        per_tile = _encode(encoder, tiles, adaptor)  # [rows*cols, h, w, C]
        grids.append(untile(per_tile.permute(0, 3, 1, 2), layout).permute(1, 2, 0))
        layouts.append(layout)
    return grids, layouts


def _encode(encoder: VisionEncoder, pixels: Tensor, adaptor: str | None) -> Tensor:
    """pixels [N, 3, H, W] in [0, 1] -> the backbone's (or ``adaptor``'s) grids [N, h, w, C],
    float32 on the CPU."""
    device = next(encoder.parameters()).device
    dtype = next(encoder.parameters()).dtype
    with torch.inference_mode():
        out = encoder(pixels.to(device=device, dtype=dtype))
    if adaptor is not None:
        if adaptor not in out.adaptors:
            raise ValueError(
                f"the encoder returned no {adaptor!r} adaptor (it ran {sorted(out.adaptors)});"
                f" build it with adaptor_names=[{adaptor!r}]"
            )
        out = out.adaptors[adaptor]
    return out.grid.float().cpu()


def check_tiles(encoder: VisionEncoder, resolutions: Sequence[int], tile_size: int) -> None:
    """Refuse a tile the encoder cannot take, or resolutions that are not whole tiles."""
    patch, limit = encoder.patch_size, encoder.max_resolution
    if tile_size < patch or tile_size % patch or tile_size > limit:
        raise ValueError(
            f"tile size {tile_size} px must be a multiple of the encoder's patch size {patch} "
            f"and at most its max_resolution {limit}"
        )
    if off := [r for r in resolutions if r % tile_size]:
        raise ValueError(
            f"with tiles of {tile_size} px every resolution must be a whole number of tiles; "
            f"{off} are not (tiling only reaches multiples of the tile: use e.g. "
            f"{[tile_size * k for k in (1, 2, 4)]})"
        )


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
    tile_size: int | None = None,
    progress: bool = True,
) -> dict:
    """Scale equivariance of each image (name -> picture) and the mean, as written to JSON;
    with ``tile_size`` also ``tiled``: the same for the tiled encoding
    (``encode_tiled_at_resolutions``)."""
    if len(resolutions) < 2:
        raise ValueError(f"scale equivariance needs >= 2 resolutions; got {list(resolutions)}")
    if tile_size is not None:
        check_tiles(encoder, resolutions, tile_size)
    rows, tiled = [], []
    for name, image in tqdm(images.items(), desc="images", unit="img", disable=not progress):
        grids = encode_at_resolutions(encoder, image, resolutions, adaptor=adaptor)
        rows.append({"image": name, **_score(grids)})
        if tile_size is not None:
            grids, layouts = encode_tiled_at_resolutions(
                encoder, image, resolutions, tile_size, adaptor=adaptor
            )
            tiles = [f"{layout.rows}x{layout.cols}" for layout in layouts]
            tiled.append({"image": name, "tiles": tiles, **_score(grids)})
    results = {
        "resolutions": list(resolutions),
        "adaptor": adaptor,
        "settings": SETTINGS,
        "images": rows,
        "mean_scale_equivariance": _mean(rows),
    }
    if tile_size is not None:
        results["tiled"] = {
            "tile_size": tile_size,
            "images": tiled,
            "mean_scale_equivariance": _mean(tiled),
        }
    return results


def _score(grids: Sequence[Tensor]) -> dict:
    """The grids' sizes and their scale equivariance (``SETTINGS``)."""
    from encoder.analysis import scale_equivariance

    score = scale_equivariance(
        [g.permute(2, 0, 1) for g in grids],
        unbiased=SETTINGS["variance"] == "unbiased",
        antialias=SETTINGS["antialias"],
    )
    return {"grids": [f"{g.shape[0]}x{g.shape[1]}" for g in grids], "scale_equivariance": score}


def _mean(rows: list[dict]) -> float:
    return float(np.mean([r["scale_equivariance"] for r in rows]))


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
    eq.add_argument(
        "--tiles",
        type=int,
        nargs="?",
        const=0,
        default=None,
        metavar="PX",
        help="also the tiled encoding (paper Table 2): each resolution cut into PX-px tiles "
        "(default: the smallest resolution), encoded alone and stitched back",
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
    from recipes.encoder_analysis_report import pca_figure

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
    tile_size = None if args.tiles is None else args.tiles or min(args.resolutions)
    results = _guard(
        lambda: equivariance_results(
            encoder, images, args.resolutions, adaptor=args.adaptor, tile_size=tile_size
        ),
        "equivariance",
    )
    from recipes.encoder_analysis_report import bar_chart, markdown_report

    results = {"encoder": str(args.encoder), **results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = markdown_report(results)
    (args.out / "report.md").write_text(report + "\n")
    bar_chart(results, args.out / "equivariance.png")
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

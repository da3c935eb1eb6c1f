"""InternVL-style dynamic tiling: the baseline the RADIO paper compares against (Table A5).

    >>> tiles, layout = tile_image(image, tile_size=448, max_tiles=12)
    >>> tiles.shape                         # [rows*cols (+1 thumbnail), 3, 448, 448] in [0, 1]
    >>> untile(tiles, layout).shape         # [3, rows*448, cols*448], the resized image

The rule is InternVL's ``dynamic_preprocess`` (InternVL 1.5+):

1. candidate grids: every cols x rows with min_tiles <= cols*rows <= max_tiles;
2. pick the grid whose cols/rows is closest to the image's width/height; on an exact tie the
   candidates are visited by increasing tile count and a later (larger) grid replaces the
   current one when the image has more than half the pixels of that grid
   (width*height > 0.5 * tile_size**2 * cols*rows);
3. resize the whole image to (rows*tile_size, cols*tile_size), aspect not kept;
4. cut it into tiles in raster order (left to right, then top to bottom);
5. with more than one tile, append a tile_size x tile_size thumbnail of the whole image.

``Tiling`` holds these settings for a VLM (its processor makes the tiles, its config records
them); ``tile_images`` cuts a batch of images the way the VLM's processor does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from .image_loading import load_image
from .image_processing import Resampling, pil_to_tensor, positive_int, resampling, to_rgb

if TYPE_CHECKING:
    from .image_processing import ImageProcessor


class TileLayout(NamedTuple):
    """How ``tile_image``'s output is laid out: rows*cols tiles in raster order, then the
    thumbnail when ``has_thumbnail``."""

    rows: int
    cols: int
    has_thumbnail: bool

    @property
    def num_tiles(self) -> int:
        """Total images, thumbnail included."""
        return self.rows * self.cols + int(self.has_thumbnail)


def candidate_grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    """(cols, rows) pairs with min_tiles <= cols*rows <= max_tiles, by increasing tile count.

    Equal-count grids keep InternVL's order (a Python set filled in the same insertion order,
    then a stable sort by count), so exact ties between them resolve as InternVL's do."""
    _check_counts(min_tiles, max_tiles)
    grids: set[tuple[int, int]] = set()
    for n in range(min_tiles, max_tiles + 1):
        for cols in range(1, n + 1):
            for rows in range(1, n + 1):
                if min_tiles <= cols * rows <= max_tiles:
                    grids.add((cols, rows))
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(
    height: int, width: int, *, tile_size: int = 448, min_tiles: int = 1, max_tiles: int = 12
) -> tuple[int, int]:
    """(rows, cols) of the tile grid for an image of height x width (rule in the module doc)."""
    h, w = positive_int("height", height), positive_int("width", width)
    positive_int("tile_size", tile_size)
    aspect, area = w / h, w * h  # floats exactly as InternVL, so its ties are ours
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_tiles, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)  # enough pixels to justify the larger grid
    cols, rows = best
    return rows, cols


def tile_image(
    image: Any,
    *,
    tile_size: int = 448,
    min_tiles: int = 1,
    max_tiles: int = 12,
    thumbnail: bool = True,
    resample: Resampling | int | str = Resampling.BICUBIC,
) -> tuple[Tensor, TileLayout]:
    """One image (anything ``to_rgb`` accepts) -> (tiles [T, 3, tile_size, tile_size] float32
    in [0, 1], layout). T = rows*cols, plus 1 for the thumbnail (last) when ``thumbnail`` is
    set and there is more than one tile."""
    rgb = to_rgb(image)
    width, height = rgb.size
    rows, cols = choose_grid(
        height, width, tile_size=tile_size, min_tiles=min_tiles, max_tiles=max_tiles
    )
    return cut_tiles(rgb, rows, cols, tile_size=tile_size, thumbnail=thumbnail, resample=resample)


def cut_tiles(
    image: Any,
    rows: int,
    cols: int,
    *,
    tile_size: int,
    thumbnail: bool = True,
    resample: Resampling | int | str = Resampling.BICUBIC,
) -> tuple[Tensor, TileLayout]:
    """Steps 3-5 on a grid chosen by the caller: the image resized to (rows*tile_size,
    cols*tile_size), cut in raster order, + the thumbnail (with > 1 tile and ``thumbnail``).
    Returns (tiles [T, 3, tile_size, tile_size] float32 in [0, 1], layout)."""
    rgb = to_rgb(image)
    positive_int("rows", rows)
    positive_int("cols", cols)
    filt = resampling(resample)
    resized = rgb.resize((cols * tile_size, rows * tile_size), resample=filt)
    full = pil_to_tensor(resized)  # [3, rows*tile, cols*tile]
    # raster order: [3, rows, t, cols, t] -> [rows, cols, 3, t, t] -> [rows*cols, 3, t, t]
    tiles = full.view(3, rows, tile_size, cols, tile_size).permute(1, 3, 0, 2, 4)
    tiles = tiles.reshape(rows * cols, 3, tile_size, tile_size)
    has_thumbnail = bool(thumbnail) and rows * cols > 1
    if has_thumbnail:
        thumb = pil_to_tensor(rgb.resize((tile_size, tile_size), resample=filt))
        tiles = torch.cat([tiles, thumb[None]])
    return tiles, TileLayout(rows, cols, has_thumbnail)


def untile(tiles: Tensor, layout: TileLayout) -> Tensor:
    """Inverse of the cutting step: [T, C, t_h, t_w] (thumbnail, if any, ignored) ->
    [C, rows*t_h, cols*t_w]. Works on pixels and on per-tile feature maps alike."""
    n = layout.rows * layout.cols
    if tiles.dim() != 4 or tiles.shape[0] != layout.num_tiles:
        raise ValueError(
            f"expected tiles [{layout.num_tiles}, C, h, w] for layout {tuple(layout)}; "
            f"got shape {tuple(tiles.shape)}"
        )
    _, c, th, tw = tiles.shape
    grid = tiles[:n].reshape(layout.rows, layout.cols, c, th, tw).permute(2, 0, 3, 1, 4)
    return grid.reshape(c, layout.rows * th, layout.cols * tw)


def _check_counts(min_tiles: int, max_tiles: int) -> None:
    positive_int("min_tiles", min_tiles)
    positive_int("max_tiles", max_tiles)
    if min_tiles > max_tiles:
        raise ValueError(
            f"min_tiles {min_tiles} is above max_tiles {max_tiles}; use min_tiles <= max_tiles"
        )


@dataclass(frozen=True)
class Tiling:
    """Dynamic tiling settings of a VLM (InternVL 1.5+; the rule is in the module docstring).

    tile_size: side of every tile and of the thumbnail, in px (a multiple of the encoder's
               patch); None: the encoder's resolution, filled in by ``fitted`` (the VLM's
               processor does so, so saved settings always name it).
    min_tiles / max_tiles: bounds on rows*cols (the thumbnail not counted).
    thumbnail: with more than one tile, also a tile_size x tile_size picture of the whole
               image, after the tiles.
    """

    tile_size: int | None = None
    min_tiles: int = 1
    max_tiles: int = 12
    thumbnail: bool = True

    def __post_init__(self) -> None:
        if self.tile_size is not None:
            positive_int("tile_size", self.tile_size)
        _check_counts(self.min_tiles, self.max_tiles)
        if not isinstance(self.thumbnail, bool):
            raise ValueError(f"thumbnail must be true or false; got {self.thumbnail!r}")

    @classmethod
    def from_value(cls, value: Tiling | dict[str, Any] | None) -> Tiling | None:
        """None (no tiling), a ``Tiling`` or its dict -> ``Tiling`` or None; an unknown key
        is an error naming the allowed ones."""
        if value is None or isinstance(value, Tiling):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                f"tiling must be null or a mapping with keys {cls.keys()}; got {value!r:.80}"
            )
        if unknown := sorted(set(value) - set(cls.keys())):
            raise ValueError(f"unknown tiling keys {unknown}; allowed: {cls.keys()}")
        return cls(**value)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe settings; ``Tiling.from_value(t.to_dict()) == t``."""
        return asdict(self)

    def fitted(self, image_processor: ImageProcessor) -> Tiling:
        """These settings for an encoder's ``image_processor``: tile_size None becomes its
        resolution; a tile_size that is not a multiple of its patch or above its
        max_resolution is an error."""
        side = image_processor.resolution if self.tile_size is None else self.tile_size
        p, limit = image_processor.patch_size, image_processor.max_resolution
        if side % p or side > limit:
            raise ValueError(
                f"tiling.tile_size {side} must be a multiple of the encoder's patch {p} and at "
                f"most its max_resolution {limit}; use e.g. {max(p, min(side, limit) // p * p)}"
            )
        return replace(self, tile_size=side)

    @property
    def size(self) -> int:
        """The tile side in px; an error while it is still None (not ``fitted``)."""
        if self.tile_size is None:
            raise ValueError("tiling.tile_size is not set; Tiling.fitted(image_processor) sets it")
        return self.tile_size

    def layout(self, height: int, width: int) -> TileLayout:
        """How an image of height x width px is cut (without cutting it)."""
        rows, cols = choose_grid(
            height, width, tile_size=self.size, min_tiles=self.min_tiles, max_tiles=self.max_tiles
        )
        return TileLayout(rows, cols, self.thumbnail and rows * cols > 1)


def tile_images(
    images: Sequence[Any], tiling: Tiling, image_processor: ImageProcessor
) -> tuple[list[Tensor], list[TileLayout]]:
    """Images -> every image's tiles in order (each [3, s, s] float32 in [0, 1]; per image
    its rows*cols tiles in raster order, then its thumbnail), and each image's layout.

    Images are loaded as ``image_processor`` loads them (``load_image``: EXIF orientation,
    its ``max_pixels``, RGB) and resized with its filter; its resolution policy is not used
    (the tiles decide the size)."""
    tiles: list[Tensor] = []
    layouts: list[TileLayout] = []
    for image in images:
        rgb = load_image(image, max_pixels=image_processor.max_pixels)
        cut, layout = tile_image(
            rgb,
            tile_size=tiling.size,
            min_tiles=tiling.min_tiles,
            max_tiles=tiling.max_tiles,
            thumbnail=tiling.thumbnail,
            resample=image_processor.resample,
        )
        tiles.extend(cut)
        layouts.append(layout)
    return tiles, layouts

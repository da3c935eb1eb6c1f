"""A compare grid file: ``CompareGrid`` (its keys map 1:1 onto the YAML; unknown keys are
errors) expanding into ``Cell``s, and ``load_grid``. The file format is in
``recipes.compare.runner``'s docstring."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from encoder.tiling import Tiling
from recipes.quickstart.model import TinySettings
from recipes.quickstart.training import Schedule
from token_merge import compress
from token_merge.compress import METHODS as COMPRESSORS
from vlm.evaluation.local_tasks import KINDS
from vlm.schema import STRICT, PositiveInt, apply_overrides, from_dict, read_yaml


def _tiling_settings(value: Any) -> dict[str, Any] | None:
    """A cell's tiling, checked by ``Tiling`` (errors name the allowed keys), as a dict."""
    tiling = Tiling.from_value(value)
    return None if tiling is None else tiling.to_dict()


def _tiling_key(tiling: dict[str, Any]) -> list[str]:
    """Key parts of a tiling cell: tiles<max> (+ t<tile px>, min<n>, nothumb when set)."""
    parts = [f"tiles{tiling['max_tiles']}"]
    if tiling["tile_size"]:
        parts.append(f"t{tiling['tile_size']}")
    if tiling["min_tiles"] > 1:
        parts.append(f"min{tiling['min_tiles']}")
    return parts if tiling["thumbnail"] else [*parts, "nothumb"]


@dataclass(frozen=True)
class Cell:
    """One setting. encoder: "tiny" (the quickstart encoder). resolution: the encoder's input
    side in px (None: the data's size). blockwise: ToMe inside every encoder block
    (``blockwise_tome=K``) instead of once at the output. blind: trained and evaluated on
    blank pages (the image-blind lower bound). model: an already trained model folder to
    evaluate (train: none). compressor "none" keeps every patch (num_tokens is ignored).
    tiling: ``encoder.tiling.Tiling`` settings (InternVL tiles + thumbnail, paper Table A5),
    num_tokens then per tile; None: no tiling. The paper's other ablation axes, as the
    recipe keys of the same names (None: the default): feature_layers / aggregation (the
    encoder blocks whose features are used, "sparse" or "dense": Table 7), image_mode
    ("fixed", "keep-aspect", "native", "pad"), dst (ToMe's sink layout, "top-left" or
    "random": Table A10)."""

    __pydantic_config__ = STRICT

    encoder: str = "tiny"
    compressor: str = "tome"
    num_tokens: PositiveInt = 16
    resolution: PositiveInt | None = None
    blockwise: bool = False
    blind: bool = False
    model: str | None = None
    tiling: dict[str, Any] | None = None
    feature_layers: tuple[int, ...] | None = None
    aggregation: Literal["sparse", "dense"] | None = None
    image_mode: Literal["fixed", "keep-aspect", "native", "pad"] | None = None
    dst: Literal["top-left", "random"] | None = None

    def __post_init__(self) -> None:  # checked and defaults filled, however it was built
        if self.compressor not in COMPRESSORS:
            raise ValueError(f"unknown compressor {self.compressor!r}; use one of {COMPRESSORS}")
        object.__setattr__(self, "tiling", _tiling_settings(self.tiling))
        if self.dst is not None and (self.compressor != "tome" or self.blockwise):
            raise ValueError(
                f"dst (the sink layout of output ToMe) needs compressor 'tome' without "
                f"blockwise; got compressor {self.compressor!r}, blockwise {self.blockwise}"
            )

    @property
    def key(self) -> str:
        budget = "kall" if self.compressor == "none" else f"k{self.num_tokens}"
        parts = [self.encoder, self.compressor, budget]
        if self.resolution:
            parts.append(f"r{self.resolution}")
        if self.blockwise:
            parts.append("blockwise")
        if self.blind:
            parts.append("blind")
        if self.tiling:
            parts += _tiling_key(self.tiling)
        if self.feature_layers is not None:
            parts.append("L" + "_".join(str(i) for i in self.feature_layers))
        parts += [v for v in (self.aggregation, self.image_mode) if v is not None]
        if self.dst is not None:
            parts.append(f"dst-{self.dst}")
        return "-".join(parts).replace("/", "_")


@dataclass
class CompareGrid:
    __pydantic_config__ = STRICT

    name: str = "compare"
    out: str | None = None
    seed: int = 0
    train: str = "tiny"
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cells: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, PositiveInt] = field(
        default_factory=lambda: {"num_train": 3000, "num_eval": 300}
    )
    schedule: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    reconstruction: bool = True
    reconstruction_block: int = -1

    def __post_init__(self) -> None:
        for name in ("grid", "data", "schedule", "settings", "eval"):  # `key:` left empty
            if getattr(self, name) is None:
                setattr(self, name, {})
        self.cells = self.cells or []
        if self.train not in ("tiny", "none"):
            raise ValueError(f"compare: train must be 'tiny' or 'none'; got {self.train!r}")
        axes = {"encoders", "compressors", "num_tokens", "resolutions", "blockwise"}
        if unknown := sorted(set(self.grid) - axes):
            raise ValueError(f"compare: unknown grid axes {unknown}; known: {sorted(axes)}")
        if unknown := sorted(set(self.data) - {"num_train", "num_eval"}):
            raise ValueError(f"compare: unknown data keys {unknown}; known: num_train, num_eval")
        if unknown := sorted(set(self.eval) - {"tasks", "limit", "batch_size"}):
            raise ValueError(
                f"compare: unknown eval keys {unknown}; known: tasks, limit, batch_size"
            )
        # the training seed follows the grid's unless the schedule names its own
        self.schedule_obj = from_dict(Schedule, {"seed": self.seed, **self.schedule}, "schedule")
        self.settings_obj = from_dict(TinySettings, dict(self.settings), "settings")
        self._check_tasks()
        self._check_budgets()
        depth = self.settings_obj.encoder_depth  # the stage-0 encoder the analysis measures
        if not -depth <= self.reconstruction_block < depth:
            raise ValueError(
                f"compare: reconstruction_block {self.reconstruction_block} is out of range for "
                f"the stage-0 encoder's {depth} blocks (settings.encoder_depth); use "
                f"{-depth}..{depth - 1}, -1 for the last"
            )

    @property
    def eval_tasks(self) -> list[str]:
        """The evaluation sets each cell is scored on (default: every style the run writes)."""
        return list(self.eval.get("tasks") or self.settings_obj.styles)

    def _check_tasks(self) -> None:
        """Cells are scored on the pages the run writes: one of its question styles each."""
        styles = self.settings_obj.styles
        if bad := [s for s in styles if s not in KINDS]:
            raise ValueError(f"compare: settings.styles {bad} are not question styles; use {KINDS}")
        if isinstance(self.eval.get("tasks"), str):
            raise ValueError(f"compare: eval.tasks must be a list, e.g. [{self.eval['tasks']}]")
        if self.eval.get("tasks") == []:
            raise ValueError(
                "compare: eval.tasks is empty; name some of settings.styles, or leave it out "
                f"(null) to evaluate on every style the run writes: {list(styles)}"
            )
        if unknown := [t for t in self.eval_tasks if t not in KINDS or t not in styles]:
            raise ValueError(
                f"compare: eval.tasks {unknown} have no pages in this run; it writes "
                f"{list(styles)} (settings.styles), so evaluate on some of those"
            )

    def _check_budgets(self) -> None:
        """A budget a cell's compressor cannot give from its input's patch grid (K above the
        patches, an avg-pool K that tiles no h x w split, an unshuffle K that no scale gives)
        fails after the data and stage 0: refuse it now (tiny cells; a trained model's encoder
        has its own grid). The merge picture compresses the data's grid at the smallest K."""
        if self.train != "tiny":
            return
        size = self.settings_obj.image_size
        cells = [c for c in self.expand() if not c.tiling and c.compressor != "none"]
        for cell in cells:
            check_budget_fits(self.settings_obj, cell.compressor, cell.num_tokens,
                              cell.resolution or size, f"cell {cell.key}")  # fmt: skip
        if self.reconstruction and cells:
            smallest = min(cells, key=lambda c: c.num_tokens)
            check_budget_fits(self.settings_obj, "tome", smallest.num_tokens, size, "merge picture")

    def expand(self) -> list[Cell]:
        """The grid's product, then the explicit cells; duplicates dropped, order kept."""
        g = self.grid
        product = itertools.product(
            g.get("encoders", ["tiny"]),
            g.get("compressors", ["tome"]),
            g.get("num_tokens", [self.settings_obj.num_tokens]),
            g.get("resolutions", [None]),
            g.get("blockwise", [False]),
        )
        names = ("encoder", "compressor", "num_tokens", "resolution", "blockwise")
        cells = [from_dict(Cell, dict(zip(names, p, strict=True)), "grid") for p in product]
        cells = cells if g else []
        cells += [from_dict(Cell, dict(extra), f"cells[{i}]") for i, extra in enumerate(self.cells)]
        unique: dict[str, Cell] = {}  # by key: "none" at several K is one cell
        for cell in cells:
            unique.setdefault(cell.key, cell)
        return list(unique.values())


def check_budget_fits(settings: TinySettings, method: str, k: int, size: int, what: str) -> None:
    """Compress an empty patch grid of a ``size`` px input as a tiny cell would (unshuffle at
    the scale the data's grid gives K); a ValueError naming ``what`` and the fix if it can't."""
    side = size // settings.patch_size
    try:
        options = settings.compressor(method, k)
        scale = options.get("compressor_options", {}).get("scale")
        compress(torch.zeros(1, side, side, 1), method, options["num_tokens"], scale=scale)
    except ValueError as error:
        raise ValueError(
            f"compare: {what}: {method} at K = {k} does not fit the {side}x{side} patch grid "
            f"of a {size} px input ({error}); choose another num_tokens or resolution"
        ) from None


def load_grid(
    path: str | Path, overrides: Sequence[str] | None = None, **fields: Any
) -> CompareGrid:
    """Read a grid YAML (unknown keys are errors naming them). ``overrides``: ``--override``
    items such as ``schedule.lr=[2e-3,1e-3,2e-3]`` (the value read as YAML); ``fields``:
    top-level keys set by the command line (None: the YAML's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compare grid {path} does not exist; see recipes/compare/")
    data = read_yaml(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"compare grid {path} must be a mapping (name, grid, settings, ...)")
    data.setdefault("name", path.stem)
    apply_overrides(data, overrides)
    return from_dict(
        CompareGrid, {**data, **{k: v for k, v in fields.items() if v is not None}}, ""
    )

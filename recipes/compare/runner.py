"""`radio-vlm compare GRID.yaml`: encoders x compressors x K (x resolutions, x block-wise)
-> per cell train (tiny recipe) and/or evaluate -> results.json, table.md, PNG plots.

    radio-vlm compare recipes/compare/paper_toy.yaml [--out DIR] [--seed N] [--ci]
    radio-vlm compare recipes/compare/dense_world.yaml --seeds 0,1,2 [--threads 2]

A grid file (keys map 1:1 onto ``CompareGrid``; unknown keys are errors):

    name: paper_toy
    train: tiny                 # tiny: stage 0 + align/pretrain/SFT of the quickstart model
                                # none: only evaluate cells given with model: DIR
    grid:                       # the product of these lists ...
      encoders: [tiny]
      compressors: [tome, unshuffle, avgpool]
      num_tokens: [16]
      resolutions: [64]
      blockwise: [false]
    cells:                      # ... plus these explicit cells (any Cell fields)
      - {compressor: tome, num_tokens: 16, blockwise: true}
      - {compressor: tome, num_tokens: 4, tiling: {tile_size: 32, max_tiles: 4}}   # K per tile
    data: {num_train: 3000, num_eval: 300}
    schedule: {warmup_steps: 300, steps: [60, 120, 240]}     # recipes.quickstart.training.Schedule
    eval: {tasks: [textvqa, docvqa, ocrbench], limit: null}
    reconstruction: true        # Table A10: ToMe (sink x metric) vs avg-pool reconstruction
    reconstruction_block: -1    # the stage-0 block whose keys / values ToMe matches on
                                # (docs/a10_reconstruction.md; --analysis-only K,K: this alone)

Each cell writes ``cells/<key>/cell.json`` when it is finished; a re-run skips those cells
(delete the file to redo one). Aggregates are rewritten from all finished cells every time.
``setup.json`` records what every cell shares (seed, data, schedule, settings, eval); a re-run
into a folder made with a different setup is refused rather than mixing two runs' cells.
``--seed N`` repeats a grid with another seed (data, stage 0, training), by default into
``runs/compare/<name>-seed<N>``. ``--seeds 0,1,2`` runs the grid once per seed into
``OUT/seed<N>`` (default OUT: runs/compare/<name>) and writes the statistics over seeds into
OUT: ``seeds.json``, ``seeds.md`` (mean ± sd per cell, each method's paired difference against
ToMe with its standard error; ``recipes.compare.stats``) and ``seeds.png`` (error bars).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from tqdm.auto import tqdm

from encoder.tiling import Tiling
from recipes.quickstart.model import TinySettings
from recipes.quickstart.training import Schedule
from recipes.threads import set_threads
from vlm.schema import STRICT, from_dict

SUMMARY = (
    "run a grid of encoders x compressors x token budgets (x resolutions): train tiny models "
    "and/or evaluate, then write a results table and plots; finished cells are skipped"
)
CELL_FILE = "cell.json"
SETUP_FILE = "setup.json"
SHARED = ("seed", "train", "data", "schedule", "settings", "eval")  # what all cells share


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
    num_tokens: int = 16
    resolution: int | None = None
    blockwise: bool = False
    blind: bool = False
    model: str | None = None
    tiling: dict[str, Any] | None = None
    feature_layers: tuple[int, ...] | None = None
    aggregation: Literal["sparse", "dense"] | None = None
    image_mode: Literal["fixed", "keep-aspect", "native", "pad"] | None = None
    dst: Literal["top-left", "random"] | None = None

    def __post_init__(self) -> None:  # checked and defaults filled, however it was built
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
    data: dict[str, int] = field(default_factory=lambda: {"num_train": 3000, "num_eval": 300})
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
        depth = self.settings_obj.encoder_depth  # the stage-0 encoder the analysis measures
        if not -depth <= self.reconstruction_block < depth:
            raise ValueError(
                f"compare: reconstruction_block {self.reconstruction_block} is out of range for "
                f"the stage-0 encoder's {depth} blocks (settings.encoder_depth); use "
                f"{-depth}..{depth - 1}, -1 for the last"
            )

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
        cells = [Cell(e, c, k, r, b) for e, c, k, r, b in product] if g else []
        cells += [from_dict(Cell, dict(extra), f"cells[{i}]") for i, extra in enumerate(self.cells)]
        unique: dict[str, Cell] = {}  # by key: "none" at several K is one cell
        for cell in cells:
            unique.setdefault(cell.key, cell)
        return list(unique.values())


def load_grid(path: str | Path, **overrides: Any) -> CompareGrid:
    """Read a grid YAML (unknown keys are errors naming them)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compare grid {path} does not exist; see recipes/compare/")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    data.setdefault("name", path.stem)
    return from_dict(
        CompareGrid, {**data, **{k: v for k, v in overrides.items() if v is not None}}, ""
    )


def run_compare(grid: CompareGrid, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every unfinished cell, then write the aggregates; returns results.json's content."""
    from recipes.compare import cells as cells_mod
    from recipes.compare import report as compare_report

    out = Path(grid.out or f"runs/compare/{grid.name}")
    out.mkdir(parents=True, exist_ok=True)
    _check_setup(grid, out)
    cells = grid.expand()
    todo = [c for c in cells if not (out / "cells" / c.key / CELL_FILE).is_file()]
    echo(
        f"[compare] {grid.name}: {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run"
    )
    context = cells_mod.Context(grid, out, echo) if todo or grid.reconstruction else None
    for cell in tqdm(todo, desc="compare cells", unit="cell"):
        start = time.perf_counter()
        record = cells_mod.run_cell(context, cell)
        record["seconds"] = time.perf_counter() - start
        folder = out / "cells" / cell.key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CELL_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
        echo(f"[compare] {cell.key}: {compare_report.cell_line(record)} ({record['seconds']:.0f}s)")
    records = [
        json.loads((out / "cells" / c.key / CELL_FILE).read_text(encoding="utf-8")) for c in cells
    ]
    extra = {}
    if grid.reconstruction and grid.train == "none":
        echo("[compare] reconstruction: skipped; train: none has no shared stage-0 encoder")
    elif grid.reconstruction and context is not None:
        extra["reconstruction"] = context.reconstruction()
        context.merge_picture(out / "merge.png")
    results = {
        "name": grid.name,
        "threads": torch.get_num_threads(),
        "grid": {k: v for k, v in dataclasses.asdict(grid).items()},
        "cells": records,
        **extra,
    }
    files = compare_report.write(results, out)
    echo(f"[compare] wrote {', '.join(str(f) for f in files)}")
    return results


def run_seeds(
    grid: CompareGrid, seeds: list[int], echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """``run_compare`` once per seed into ``<out>/seed<N>``, then the statistics over seeds
    (``stats.aggregate``) into ``<out>``; returns seeds.json's content."""
    from recipes.compare import report as compare_report
    from recipes.compare import stats

    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds needs distinct seeds; got {seeds}")
    out = Path(grid.out or f"runs/compare/{grid.name}")
    per_seed = {}
    for seed in seeds:
        echo(f"[compare] seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})")
        one = dataclasses.replace(grid, seed=seed, out=str(out / f"seed{seed}"))
        per_seed[seed] = run_compare(one, echo)
    summary = {
        "name": grid.name,
        "threads": torch.get_num_threads(),
        "reconstruction_block": grid.reconstruction_block,
        **stats.aggregate(per_seed),
    }
    files = compare_report.write_seeds(summary, out)
    echo(f"[compare] over seeds {seeds}: wrote {', '.join(str(f) for f in files)}")
    return summary


def run_analysis(
    grid: CompareGrid, seeds: list[int], budgets: list[int], echo: Callable[[str], None] = print
) -> dict[str, Any]:
    """The stage-0 analysis alone, no cell trained: per seed, data + stage 0 (reused when
    ``<out>/seed<N>`` has them), the reconstruction / character-probe rows at ``budgets`` and
    the merge picture; then mean ± sd over seeds into ``<out>/analysis.{json,md}``."""
    from recipes.compare import cells as cells_mod
    from recipes.compare import report as compare_report
    from recipes.compare import stats

    out = Path(grid.out or f"runs/compare/{grid.name}")
    per_seed = {}
    for seed in seeds:
        one = dataclasses.replace(grid, seed=seed, out=str(out / f"seed{seed}"))
        folder = Path(one.out)
        folder.mkdir(parents=True, exist_ok=True)
        _check_setup(one, folder)
        context = cells_mod.Context(one, folder, echo)
        per_seed[seed] = {"reconstruction": context.reconstruction(budgets)}
        context.merge_picture(folder / "merge.png")
        echo(f"[compare] seed {seed}: analysis of the stage-0 features done")
    summary = {
        "name": grid.name,
        "seeds": seeds,
        "cells": {},
        "reconstruction_block": grid.reconstruction_block,
        "reconstruction": stats.reconstruction_over_seeds(per_seed),
    }
    files = compare_report.write_analysis(summary, out)
    echo(f"[compare] analysis over seeds {seeds}: wrote {', '.join(str(f) for f in files)}")
    return summary


def _check_setup(grid: CompareGrid, out: Path) -> None:
    """Write ``setup.json``, or refuse a folder whose finished cells used another setup."""
    setup = json.loads(json.dumps({key: getattr(grid, key) for key in SHARED}))
    path = out / SETUP_FILE
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        if differ := [key for key in SHARED if before.get(key) != setup[key]]:
            changes = "; ".join(f"{k}: {before.get(k)!r} -> {setup[k]!r}" for k in differ)
            raise ValueError(
                f"{out} holds a compare run with another setup ({changes}); its finished cells "
                "would be mixed with new ones. Use another --out, or delete the folder."
            )
    else:
        path.write_text(json.dumps(setup, indent=2) + "\n", encoding="utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", help="grid YAML, e.g. recipes/compare/paper_toy.yaml")
    parser.add_argument("--out", default=None, help="output folder (default runs/compare/<name>)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="another seed for data, stage 0 and training (unless the grid's schedule names "
        "its own); default out: runs/compare/<name>-seed<N>",
    )
    parser.add_argument(
        "--seeds",
        type=_seed_list,
        default=None,
        help="comma-separated seeds (e.g. 0,1,2): the grid once per seed, then mean ± sd per "
        "cell and paired differences against ToMe (default out: runs/compare/<name>)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the cores this process may use; 1 on a shared machine)",
    )
    parser.add_argument(
        "--analysis-only",
        type=_seed_list,
        default=None,
        metavar="K,K,...",
        help="train no cell: only data, stage 0 and the reconstruction / character-probe "
        "analysis of its features at these budgets (with --seeds: per seed, then over seeds)",
    )
    parser.add_argument("--ci", action="store_true", help="tiny data and step counts")
    parser.set_defaults(run=_run)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes comma-separated integers such as 0,1,2; got {text!r}"
        ) from None


def _run(args: argparse.Namespace) -> int:
    if args.seed is not None and args.seeds is not None:
        raise SystemExit("compare: pass --seed N or --seeds A,B,C, not both")
    set_threads(args.threads)
    grid = load_grid(args.grid, out=args.out, seed=args.seed)
    if args.seed is not None:
        grid.name = f"{grid.name}-seed{args.seed}"
    if args.ci:
        grid = dataclasses.replace(  # (re-derives schedule_obj, its seed the grid's)
            grid,
            data={"num_train": 32, "num_eval": 12},
            schedule={**grid.schedule, "warmup_steps": 4, "steps": [2, 2, 2], "batch_size": 4},
        )
    if args.analysis_only is not None:
        run_analysis(grid, args.seeds or [grid.seed], args.analysis_only)
    elif args.seeds is not None:
        run_seeds(grid, args.seeds)
    else:
        run_compare(grid)
    return 0

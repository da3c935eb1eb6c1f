"""`radio-vlm compare GRID.yaml`: encoders x compressors x K (x resolutions, x block-wise)
-> per cell train (tiny recipe) and/or evaluate -> results.json, table.md, PNG plots.

    radio-vlm compare recipes/compare/paper_toy.yaml [--out DIR] [--seed N] [--ci]
    radio-vlm compare recipes/compare/dense_world.yaml --seeds 0,1,2 [--threads 2] [--jobs 2]

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
(delete the file to redo one); ``--cells KEY,KEY`` runs only those (e.g. the avg-pool cells a
first run left out). ``--jobs N`` runs N cells at a time in their own processes
(``recipes.compare.parallel``; ``--threads`` is then per job, and each cell.json records its
threads). Aggregates are rewritten from all finished cells every time.
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
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from recipes.compare import cells as cells_mod
from recipes.compare.cells import CELL_FILE
from recipes.compare.grid import CompareGrid, load_grid
from recipes.compare.lock import RunFolderBusy, folder_lock
from recipes.threads import default_threads, machine_facts, set_threads
from vlm.schema import add_override_argument

SUMMARY = (
    "run a grid of encoders x compressors x token budgets (x resolutions): train tiny models "
    "and/or evaluate, then write a results table and plots; finished cells are skipped"
)
SETUP_FILE = "setup.json"
SHARED = ("seed", "train", "data", "schedule", "settings", "eval")  # what all cells share


def run_compare(
    grid: CompareGrid,
    echo: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int = 1,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every unfinished cell (or those of them keyed in ``only``; ``jobs`` at a time, each
    with ``threads`` torch threads, when jobs > 1), then write the aggregates of every finished
    cell; returns results.json's content. One run per output folder (``folder_lock``)."""
    out = Path(grid.out or f"runs/compare/{grid.name}")
    with folder_lock(out):
        return _run_cells(grid, out, echo, jobs, threads, only)


def _run_cells(
    grid: CompareGrid,
    out: Path,
    echo: Callable[[str], None],
    jobs: int,
    threads: int,
    only: Sequence[str] | None,
) -> dict[str, Any]:
    from recipes.compare import report as compare_report
    from recipes.compare.parallel import run_cells_in_parallel

    _check_setup(grid, out)
    cells = grid.expand()
    check_cell_keys(grid, only)

    def finished(cell: Any) -> bool:
        return (out / "cells" / cell.key / CELL_FILE).is_file()

    todo = [c for c in cells if not finished(c) and (only is None or c.key in only)]
    done = sum(map(finished, cells))
    echo(f"[compare] {grid.name}: {len(cells)} cells, {done} finished, {len(todo)} to run")
    context = cells_mod.Context(grid, out, echo) if todo or grid.reconstruction else None
    if jobs > 1 and len(todo) > 1 and grid.train == "tiny":
        run_cells_in_parallel(context, todo, jobs, threads, echo)
    else:
        if jobs > 1 and todo:
            why = "train: none (evaluation only)" if grid.train != "tiny" else "one cell to run"
            echo(f"[compare] --jobs {jobs}: cells run one after the other here ({why})")
        for cell in tqdm(todo, desc="compare cells", unit="cell"):
            record = cells_mod.run_and_save(context, cell)
            line = compare_report.cell_line(record)
            echo(f"[compare] {cell.key}: {line} ({record['seconds']:.0f}s)")
    if waiting := [c.key for c in cells if not finished(c)]:
        echo(f"[compare] not run yet (not in --cells): {', '.join(waiting)}")
    records = [
        json.loads((out / "cells" / c.key / CELL_FILE).read_text(encoding="utf-8"))
        for c in cells
        if finished(c)
    ]
    extra = {}
    if grid.reconstruction and grid.train == "none":
        echo("[compare] reconstruction: skipped; train: none has no shared stage-0 encoder")
    elif grid.reconstruction and context is not None:
        extra["reconstruction"] = context.reconstruction()
        context.merge_picture(out / "merge.png")
    results = {
        "name": grid.name,
        "threads": torch.get_num_threads() if jobs == 1 else threads,
        "jobs": jobs,
        "machine": machine_facts(),
        "grid": {k: v for k, v in dataclasses.asdict(grid).items()},
        "cells": records,
        **extra,
    }
    files = compare_report.write(results, out)
    echo(f"[compare] wrote {', '.join(str(f) for f in files)}")
    return results


def check_cell_keys(grid: CompareGrid, keys: Sequence[str] | None) -> None:
    """Refuse ``--cells`` keys that are not cells of ``grid``, naming the ones it has."""
    have = [c.key for c in grid.expand()]
    if keys is not None and (unknown := [k for k in keys if k not in have]):
        raise ValueError(
            f"--cells {', '.join(unknown)}: not a cell of {grid.name}; its cells are "
            f"{', '.join(have)}"
        )


def run_seeds(
    grid: CompareGrid,
    seeds: list[int],
    echo: Callable[[str], None] = print,
    jobs: int = 1,
    threads: int = 1,
    only: Sequence[str] | None = None,
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
        per_seed[seed] = run_compare(one, echo, jobs, threads, only)
    summary = {
        "name": grid.name,
        "threads": torch.get_num_threads() if jobs == 1 else threads,
        "jobs": jobs,
        "machine": machine_facts(),
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
        with folder_lock(folder):
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
        help="torch CPU threads (default: the cores this process may use; 1 on a shared machine); "
        "with --jobs, per job (default: cores // jobs)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="cells run at a time, each in its own process (default 1); stage 0 and the "
        "analysis run in the parent with jobs x threads torch threads",
    )
    parser.add_argument(
        "--analysis-only",
        type=_seed_list,
        default=None,
        metavar="K,K,...",
        help="train no cell: only data, stage 0 and the reconstruction / character-probe "
        "analysis of its features at these budgets (with --seeds: per seed, then over seeds)",
    )
    parser.add_argument(
        "--cells",
        type=_key_list,
        default=None,
        metavar="KEY,KEY,...",
        help="run only these cells (keys as in cells/, e.g. tiny-avgpool-k16-r256); the tables "
        "and plots cover every finished cell",
    )
    add_override_argument(
        parser, "grid", "schedule.lr=[2e-3,1e-3,2e-3] or settings.image_size=256 (saved with "
        "the run's setup)"
    )  # fmt: skip
    parser.add_argument("--ci", action="store_true", help="tiny data and step counts")
    parser.set_defaults(run=_run)


def _seed_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes comma-separated integers such as 0,1,2; got {text!r}"
        ) from None


def _key_list(text: str) -> list[str]:
    keys = [part.strip() for part in text.split(",") if part.strip()]
    if not keys:
        raise argparse.ArgumentTypeError(f"takes comma-separated cell keys; got {text!r}")
    return keys


# --ci: tiny data and step counts, applied before the user's --override items
CI_OVERRIDES = (
    "data.num_train=32",
    "data.num_eval=12",
    "schedule.warmup_steps=4",
    "schedule.steps=[2, 2, 2]",
    "schedule.batch_size=4",
)


def grid_from_args(args: argparse.Namespace) -> CompareGrid:
    """The grid the command line asks for: the YAML, then --ci's sizes, then the user's
    --override items (so an explicit key wins over --ci), then --out / --seed."""
    keys = {item.partition("=")[0].strip() for item in args.override}
    for flag, key in (("--out", "out"), ("--seed", "seed"), ("--seeds", "seed")):
        if getattr(args, flag[2:]) is not None and key in keys:  # one would be dropped silently
            raise SystemExit(f"compare: {flag} and --override {key}=... both set {key}; pass one")
    overrides = [*(CI_OVERRIDES if args.ci else ()), *args.override]
    grid = load_grid(args.grid, overrides, out=args.out, seed=args.seed)
    if args.seed is not None:
        grid.name = f"{grid.name}-seed{args.seed}"
    return grid


def _run(args: argparse.Namespace) -> int:
    if args.seed is not None and args.seeds is not None:
        raise SystemExit("compare: pass --seed N or --seeds A,B,C, not both")
    if args.jobs < 1:
        raise SystemExit(f"compare: --jobs must be >= 1; got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"compare: --threads must be >= 1; got {args.threads}")
    threads = args.threads or max(1, default_threads() // args.jobs)
    # the parent (data, stage 0, analysis) uses the jobs' threads together, within the cores
    set_threads(max(threads, min(threads * args.jobs, default_threads())))
    if args.jobs > 1:
        print(f"[compare] {args.jobs} jobs of {threads} torch threads each (--jobs, --threads)")
    grid = grid_from_args(args)
    for item in args.override:
        print(f"[compare] override: {item}")
    try:
        check_cell_keys(grid, args.cells)  # before any data or stage 0 is made
    except ValueError as error:
        raise SystemExit(f"compare: {error}") from None
    try:
        return _dispatch(args, grid, threads)
    except RunFolderBusy as error:
        raise SystemExit(f"compare: {error}") from None


def _dispatch(args: argparse.Namespace, grid: CompareGrid, threads: int) -> int:
    if args.analysis_only is not None:
        if args.cells is not None:
            raise SystemExit("compare: --analysis-only trains no cell; drop --cells")
        run_analysis(grid, args.seeds or [grid.seed], args.analysis_only)
    elif args.seeds is not None:
        run_seeds(grid, args.seeds, jobs=args.jobs, threads=threads, only=args.cells)
    else:
        run_compare(grid, jobs=args.jobs, threads=threads, only=args.cells)
    return 0

"""Cells of one grid side by side: ``radio-vlm compare GRID --jobs N``.

The parent makes what every cell shares once (the data folder, the stage-0 encoder), then
runs the cells in N fresh processes (spawned, one per cell, each with its own torch thread
count), which is how two 1-thread cells use 2 cores better than one 2-thread cell after the
other (recipes/quickstart/calibration.md). A job rebuilds the grid's context from the folder
and its parent's tiny parts, trains and evaluates its cell, writes ``cell.json`` itself and
sends its output to ``cells/<key>/log.txt``. A failed cell does not stop the others: they
finish and are kept, then the run fails naming each failed cell and its log (a re-run runs
only the unfinished ones).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from recipes.compare import cells as cells_mod
from recipes.compare.report import cell_line
from recipes.quickstart.model import TinyParts
from recipes.threads import set_threads

LOG_FILE = "log.txt"


def run_cells_in_parallel(
    context: cells_mod.Context,
    cells: list[Any],
    jobs: int,
    threads: int,
    echo: Callable[[str], None] = print,
) -> None:
    """Run ``cells`` of ``context``'s grid in ``jobs`` processes of ``threads`` torch threads
    each; every finished cell has its ``cell.json``. Raises RuntimeError naming the failed
    cells once all have run."""
    context.data  # noqa: B018 - write the data folder once, before any job reads it
    parts = context.parts  # and stage 0
    echo(f"[compare] {len(cells)} cells in {jobs} parallel jobs of {threads} torch threads each")
    # a fresh process per cell (Python >= 3.11), so nothing leaks from one cell to the next
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    failed: dict[str, str] = {}
    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), **fresh)
    try:
        futures = {
            pool.submit(_job, context.grid, context.out, parts, cell, threads): cell
            for cell in cells
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="compare cells"):
            cell = futures[future]
            log = context.out / "cells" / cell.key / LOG_FILE
            try:
                record = future.result()
            except BrokenProcessPool:
                failed[cell.key] = (
                    f"a job process died (killed by the system: out of memory?), which stops "
                    f"every running job; try fewer --jobs (log: {log})"
                )
            except Exception as err:  # reported with its cell; the other cells go on
                failed[cell.key] = f"{type(err).__name__}: {err} (log: {log})"
            else:
                echo(f"[compare] {cell.key}: {cell_line(record)} ({record['seconds']:.0f}s; {log})")
                continue
            echo(f"[compare] {cell.key}: FAILED, {failed[cell.key]}")
    finally:  # on Ctrl-C too: no queued cell starts after this
        pool.shutdown(wait=True, cancel_futures=True)
    if failed:
        lines = "\n".join(f"  {key}: {why}" for key, why in failed.items())
        raise RuntimeError(
            f"compare: {len(failed)} of {len(cells)} cells failed; the finished ones are kept "
            f"and a re-run runs only the rest:\n{lines}"
        )


def _job(grid: Any, out: Path, parts: TinyParts, cell: Any, threads: int) -> dict[str, Any]:
    """One cell in a spawned process; its stdout and stderr go to cells/<key>/log.txt."""
    folder = out / "cells" / cell.key
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
            os.dup2(log.fileno(), stream.fileno())
    set_threads(threads, echo=lambda line: print(f"{line} [{cell.key}, pid {os.getpid()}]"))
    context = cells_mod.Context(grid, out, lambda line: print(line, flush=True), parts=parts)
    try:
        return cells_mod.run_and_save(context, cell)
    except Exception:
        traceback.print_exc()  # the whole story in the cell's log; the parent names the error
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()

"""`compare --jobs N`: cells in their own processes give the runs of one after the other;
a failed cell is named with its log and does not stop the rest."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from recipes.compare.grid import CompareGrid
from recipes.compare.runner import run_compare
from recipes.quickstart.training import Schedule


def _grid(out, cells) -> CompareGrid:
    grid = CompareGrid(
        name="jobs",
        out=str(out),
        cells=cells,
        data={"num_train": 16, "num_eval": 6},
        eval={"tasks": ["textvqa"], "batch_size": 6},
        reconstruction=False,
    )
    grid.schedule_obj = Schedule(warmup_steps=2, steps=(1, 1, 2), batch_size=4)
    return grid


def test_two_jobs_train_the_same_models_as_one_after_the_other(tmp_path):
    cells = [{"compressor": "tome", "num_tokens": 4}, {"compressor": "avgpool", "num_tokens": 4}]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # stage 0 in the parent and every cell with one thread alike
    try:
        serial = run_compare(_grid(tmp_path / "serial", cells), echo=lambda _: None)
        lines: list[str] = []
        parallel = run_compare(_grid(tmp_path / "jobs", cells), lines.append, jobs=2, threads=1)
    finally:
        torch.set_num_threads(threads)
    assert parallel["jobs"] == 2 and parallel["threads"] == 1
    assert any("2 cells in 2 parallel jobs of 1 torch threads" in line for line in lines)
    for one, other in zip(serial["cells"], parallel["cells"], strict=True):
        assert one["key"] == other["key"] and one["metrics"] == other["metrics"]
        assert one["threads"] == other["threads"] == 1
        weights = [load_file(f"{r['model_dir']}/model.safetensors") for r in (one, other)]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        log = tmp_path / "jobs" / "cells" / other["key"] / "log.txt"
        assert "torch threads: 1" in log.read_text()  # the job's output went to its log
    again: list[str] = []  # a re-run: every cell finished, nothing to run, nothing said of jobs
    run_compare(_grid(tmp_path / "jobs", cells), again.append, jobs=2, threads=1)
    assert any("2 finished, 0 to run" in line for line in again)
    assert not any("--jobs" in line for line in again)


def test_a_failed_job_is_named_with_its_log_and_the_others_finish(tmp_path):
    # block-wise ToMe cannot reach K = 1 (one bipartite round per block at most halves)
    cells = [
        {"compressor": "tome", "num_tokens": 1, "blockwise": True},
        {"compressor": "avgpool", "num_tokens": 4},
    ]
    grid = _grid(tmp_path, cells)
    with pytest.raises(RuntimeError, match=r"1 of 2 cells failed") as err:
        run_compare(grid, echo=lambda _: None, jobs=2, threads=1)
    log = tmp_path / "cells" / "tiny-tome-k1-blockwise" / "log.txt"
    assert str(log) in str(err.value) and "Traceback" in log.read_text()
    finished = json.loads((tmp_path / "cells" / "tiny-avgpool-k4" / "cell.json").read_text())
    assert finished["key"] == "tiny-avgpool-k4"
    assert not (tmp_path / "cells" / "tiny-tome-k1-blockwise" / "cell.json").exists()


@pytest.mark.parametrize(
    "flags,message",
    [(["--jobs", "0"], "--jobs must be >= 1; got 0"), (["--threads", "0"], "--threads must be")],
)
def test_bad_jobs_or_threads_are_named(flags, message):
    from recipes.cli import main

    with pytest.raises(SystemExit, match=message):
        main(["compare", "recipes/compare/paper_toy.yaml", *flags])

"""The compare runner: grid files, cell keys, skipping finished cells, the aggregates."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from recipes.compare import cells as compare_cells
from recipes.compare.grid import Cell, CompareGrid, load_grid
from recipes.compare.reconstruction import METHODS
from recipes.compare.runner import run_compare


def _fake_record(cell: Cell) -> dict:
    metrics = {
        "textvqa_val_local": {"exact_match": 0.5},
        "docvqa_val_local": {"anls": 0.25},
        "ocrbench_local": {"ocrbench_accuracy": 0.01, "ocrbench_item_accuracy": 0.1},
    }
    return {
        "cell": {k: getattr(cell, k) for k in cell.__dataclass_fields__},
        "key": cell.key,
        "model_dir": "nowhere",
        "train_seconds": {},
        "metrics": metrics,
        "visual_tokens": cell.num_tokens,
        "llm_tokens_per_s": 1000.0,
    }


@pytest.fixture
def fake_cells(monkeypatch):
    """run_cell replaced by a recorder; no model is trained."""
    calls: list[str] = []

    def run_cell(context, cell):
        calls.append(cell.key)
        return _fake_record(cell)

    monkeypatch.setattr(compare_cells, "run_cell", run_cell)
    return calls


def test_rerun_skips_finished_cells(tmp_path, fake_cells):
    grid = CompareGrid(
        name="two",
        out=str(tmp_path),
        grid={"compressors": ["tome", "avgpool"], "num_tokens": [16]},
        reconstruction=False,
    )
    first = run_compare(grid, echo=lambda _: None)
    assert fake_cells == ["tiny-tome-k16", "tiny-avgpool-k16"]
    second = run_compare(grid, echo=lambda _: None)
    assert fake_cells == ["tiny-tome-k16", "tiny-avgpool-k16"]  # nothing ran again
    assert first["cells"] == second["cells"]
    (tmp_path / "cells" / "tiny-avgpool-k16" / "cell.json").unlink()
    run_compare(grid, echo=lambda _: None)
    assert fake_cells[2:] == ["tiny-avgpool-k16"]  # only the unfinished cell
    table = (tmp_path / "table.md").read_text()
    assert "| tiny / tome | 16 | 50.0 | 25.0 | 10.0 | 1000 |" in table
    assert Image.open(tmp_path / "accuracy.png").format == "PNG"
    assert len(json.loads((tmp_path / "results.json").read_text())["cells"]) == 2


def test_a_folder_of_another_setup_is_refused_not_mixed(tmp_path, fake_cells):
    grid = CompareGrid(name="s", out=str(tmp_path), grid={"num_tokens": [16]}, reconstruction=False)
    run_compare(grid, echo=lambda _: None)
    more = CompareGrid(
        name="s", out=str(tmp_path), grid={"num_tokens": [16, 4]}, reconstruction=False
    )
    run_compare(more, echo=lambda _: None)  # more cells, same setup: fine
    assert fake_cells == ["tiny-tome-k16", "tiny-tome-k4"]
    other = CompareGrid(
        name="s", out=str(tmp_path), seed=1, grid={"num_tokens": [16]}, reconstruction=False
    )
    with pytest.raises(ValueError, match=r"another setup \(seed: 0 -> 1\).*another --out"):
        run_compare(other, echo=lambda _: None)
    assert fake_cells == ["tiny-tome-k16", "tiny-tome-k4"]


def test_the_training_seed_follows_the_grid_unless_the_schedule_names_one():
    assert CompareGrid(seed=3).schedule_obj.seed == 3
    assert CompareGrid(seed=3, schedule=None, settings=None, eval=None).schedule_obj.seed == 3
    assert CompareGrid(seed=3, schedule={"seed": 5}).schedule_obj.seed == 5


def test_grid_expansion_and_keys():
    grid = CompareGrid(
        grid={"compressors": ["tome", "avgpool"], "num_tokens": [4, 16]},
        cells=[
            {"compressor": "tome", "num_tokens": 16},
            {"compressor": "tome", "num_tokens": 16, "blockwise": True},
        ],
    )
    keys = [c.key for c in grid.expand()]
    assert keys == [
        "tiny-tome-k4",
        "tiny-tome-k16",
        "tiny-avgpool-k4",
        "tiny-avgpool-k16",
        "tiny-tome-k16-blockwise",
    ]
    assert Cell(resolution=128).key == "tiny-tome-k16-r128"


def test_unknown_keys_are_named(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: x\ngrid: {compressor: [tome]}\n")
    with pytest.raises(ValueError, match="unknown grid axes \\['compressor'\\]"):
        load_grid(path)
    path.write_text("name: x\ncells: [{compresor: tome}]\n")
    with pytest.raises(ValueError, match="compresor"):
        load_grid(path).expand()
    path.write_text("name: x\nepochs: 3\n")
    with pytest.raises(ValueError, match="epochs"):
        load_grid(path)


def test_shipped_grids_load():
    toy = load_grid("recipes/compare/paper_toy.yaml")
    keys = [c.key for c in toy.expand()]
    assert keys == [
        "tiny-tome-k16",
        "tiny-unshuffle-k16",
        "tiny-avgpool-k16",
        "tiny-tome-k16-blockwise",
        "tiny-tome-k16-r128",
    ]
    assert load_grid("recipes/compare/tiny_budgets.yaml").expand()
    resolution = load_grid("recipes/compare/resolution_toy.yaml")
    assert [c.key for c in resolution.expand()] == ["tiny-tome-k16-r32", "tiny-tome-k16-r64"]
    assert resolution.schedule_obj.warmup_sizes == (32, 64)
    assert resolution.schedule_obj.warmup_steps == 2000


def test_real_two_cell_grid_then_skip(tmp_path, monkeypatch):
    """Tiny training + lmms-eval for block-wise ToMe and ToMe at a larger resolution; the
    re-run trains nothing."""
    from recipes.quickstart.training import Schedule

    grid = CompareGrid(
        name="real",
        out=str(tmp_path),
        cells=[
            {"compressor": "tome", "num_tokens": 16, "blockwise": True},
            {"compressor": "tome", "num_tokens": 16, "resolution": 128},
        ],
        data={"num_train": 16, "num_eval": 9},
    )
    grid.schedule_obj = Schedule(warmup_steps=2, steps=(1, 1, 1), batch_size=4)
    results = run_compare(grid, echo=lambda _: None)
    keys = [r["key"] for r in results["cells"]]
    assert keys == ["tiny-tome-k16-blockwise", "tiny-tome-k16-r128"]
    for record in results["cells"]:
        assert record["visual_tokens"] == 16 and record["llm_tokens_per_s"] > 0
        assert set(record["metrics"]) == {"textvqa_val_local", "docvqa_val_local", "ocrbench_local"}
    rows = results["reconstruction"]  # one per input size the grid uses, at its K
    assert [(r["num_tokens"], r["resolution"], r["grid"]) for r in rows] == [
        (16, 64, [8, 8]),
        (16, 128, [16, 16]),
    ]
    for row in rows:
        assert 0 < row["tome"] < row["avgpool"] and 0 < row["tome_keys"] < 10
        assert row["block"] == -1 and all(0 < row[m] < 10 for m in METHODS)
    table = (tmp_path / "table.md").read_text()
    assert "| 16 | 128 px | 16x16 | top-left |" in table
    assert "| 16 | 128 px | 16x16 | random |" in table
    assert "tiny / tome (block-wise)" in table and "tiny / tome @ 128 px" in table

    def must_not_run(context, cell):
        raise AssertionError(f"finished cell {cell.key} ran again")

    monkeypatch.setattr(compare_cells, "run_cell", must_not_run)
    again = run_compare(grid, echo=lambda _: None)
    assert again["cells"] == results["cells"]


def test_accuracy_plot_lines_for_several_budgets_bars_for_one(tmp_path):
    from recipes.compare.report import accuracy_plot

    several = [_fake_record(Cell(num_tokens=k)) for k in (4, 16)]
    one = [_fake_record(Cell(compressor=c)) for c in ("tome", "avgpool")]
    for name, records in (("lines", several), ("bars", one)):
        path = accuracy_plot({"cells": records}, tmp_path / f"{name}.png")
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == ((1200, 340) if name == "lines" else (1200, 420))


def test_cells_runs_only_the_named_cells_and_reports_every_finished_one(tmp_path, fake_cells):
    grid = CompareGrid(
        name="three",
        out=str(tmp_path),
        grid={"compressors": ["tome", "avgpool", "unshuffle"], "num_tokens": [16]},
        reconstruction=False,
    )
    lines: list[str] = []
    first = run_compare(grid, echo=lines.append, only=["tiny-avgpool-k16"])
    assert fake_cells == ["tiny-avgpool-k16"]
    assert [r["key"] for r in first["cells"]] == ["tiny-avgpool-k16"]
    assert "[compare] not run yet (not in --cells): tiny-tome-k16, tiny-unshuffle-k16" in lines
    second = run_compare(grid, echo=lambda _: None, only=["tiny-avgpool-k16", "tiny-tome-k16"])
    assert fake_cells == ["tiny-avgpool-k16", "tiny-tome-k16"]  # the finished one is skipped
    assert [r["key"] for r in second["cells"]] == ["tiny-tome-k16", "tiny-avgpool-k16"]
    assert "tiny / avgpool" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="--cells tiny-tome-k64: not a cell of three; its cells"):
        run_compare(grid, echo=lambda _: None, only=["tiny-tome-k64"])
    assert len(fake_cells) == 2


def test_cells_flag_names_an_unknown_key_before_any_work(tmp_path, capsys):
    from recipes.cli import main

    with pytest.raises(SystemExit, match="tiny-avgpool-k99: not a cell of dense_word; its cells"):
        main(["compare", "recipes/compare/dense_word.yaml", "--cells", "tiny-avgpool-k99",
              "--out", str(tmp_path)])  # fmt: skip
    assert not any(tmp_path.iterdir())  # no data, no stage 0


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_one_leaves_no_lock(
    tmp_path, fake_cells
):
    import subprocess
    import sys

    from recipes.compare.lock import RunFolderBusy, folder_lock

    grid = CompareGrid(name="busy", out=str(tmp_path), grid={"num_tokens": [16]})
    grid.reconstruction = False
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from recipes.compare.lock import folder_lock\n"
         "with folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            RunFolderBusy, match=rf"in use by another compare run \(pid {holder.pid}\)"
        ):
            run_compare(grid, echo=lambda _: None)
        assert fake_cells == []  # nothing ran, nothing was written over
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait()
    run_compare(grid, echo=lambda _: None)  # the kernel dropped the dead process's lock
    assert fake_cells == ["tiny-tome-k16"]
    with folder_lock(tmp_path), pytest.raises(RunFolderBusy):
        run_compare(grid, echo=lambda _: None)  # this process's other run holds it

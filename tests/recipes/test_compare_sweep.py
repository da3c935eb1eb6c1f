"""recipes.compare.sweep: runs that differ in one setting, lined up per cell and seed."""

from __future__ import annotations

import json

import pytest

from recipes.compare.stats import aggregate
from recipes.compare.sweep import load_runs, main, setup_differences, sweep_figure, sweep_table

TOME = {"encoder": "tiny", "compressor": "tome", "num_tokens": 16}
AVG = {"encoder": "tiny", "compressor": "avgpool", "num_tokens": 16}


def _summary(tome: dict[int, float], avg: dict[int, float]) -> dict:
    """seeds.json of a run whose cells scored these TextVQA accuracies (%) per seed."""

    def record(key: str, cell: dict, value: float) -> dict:
        metrics = {"textvqa_val_local": {"exact_match": value / 100}}
        return {"key": key, "cell": cell, "visual_tokens": 16, "metrics": metrics}

    per_seed = {
        seed: {
            "cells": [record("tiny-tome-k16", TOME, tome[seed])]
            + ([record("tiny-avgpool-k16", AVG, avg[seed])] if seed in avg else [])
        }
        for seed in tome
    }
    return {"name": "grid", **aggregate(per_seed)}


def _write(tmp_path, name: str, summary: dict) -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "seeds.json").write_text(json.dumps(summary))
    return str(folder)


def test_table_has_each_setting_and_the_paired_differences(tmp_path):
    low = _summary({0: 80.0, 1: 90.0}, {0: 70.0, 1: 86.0})
    high = _summary({0: 85.0, 1: 83.0, 2: 87.0}, {0: 40.0, 1: 60.0})  # avg-pool: seeds 0, 1
    runs = load_runs([f"x1={_write(tmp_path, 'a', low)}", f"x2={_write(tmp_path, 'b', high)}"])
    text = sweep_table(runs, "TextVQA acc")
    assert "| cell | x1 | x2 |" in text
    assert "| tiny / tome K=16 | 85.0 ± 7.1 (0, 1) | 85.0 ± 2.0 (0, 1, 2) |" in text
    assert "| tiny / avgpool K=16 | 78.0 ± 11.3 (0, 1) | 50.0 ± 14.1 (0, 1) |" in text
    # x1: diffs -10, -4 -> -7 ± 3; x2: -45, -23 -> -34 ± 11
    assert "| tiny / avgpool K=16 | -7.0 ± 3.0 (n = 2) | -34.0 ± 11.0 (n = 2) |" in text
    assert "The runs have different seeds" in text  # x2 has seed 2 too


def test_the_setups_differences_are_named(tmp_path, capsys):
    def setup(folder: str, schedule: dict) -> None:
        (tmp_path / folder / "seed0").mkdir()
        setup = {"seed": 0, "data": {"num_train": 3000}, "schedule": schedule}
        (tmp_path / folder / "seed0" / "setup.json").write_text(json.dumps(setup))

    summary = _summary({0: 80.0}, {0: 70.0})
    folders = [_write(tmp_path, name, summary) for name in ("a", "b", "c")]
    setup("a", {"steps": [2, 2, 2]})
    setup("b", {"steps": [2, 2, 2], "lr": [2e-3, 1e-3, 2e-3]})
    setup("c", {"steps": [2, 2, 2], "lr": [2e-3, 1e-3, 2e-3]})
    assert setup_differences([tmp_path / "a", tmp_path / "b"]) == {
        "schedule.lr": [None, [2e-3, 1e-3, 2e-3]]
    }
    assert main([f"x1={folders[0]}", f"x2={folders[1]}", "--out", str(tmp_path / "s")]) == 0
    text = (tmp_path / "s" / "sweep.md").read_text()
    assert "- schedule.lr: x1 (not set), x2 [0.002, 0.001, 0.002]" in text
    assert main([f"x2={folders[1]}", f"y={folders[2]}", "--out", str(tmp_path / "t")]) == 0
    assert "setups do not differ" in capsys.readouterr().out


def test_figure_draws_a_line_per_seed_and_a_bold_mean_per_cell(tmp_path):
    low = _summary({0: 80.0, 1: 90.0}, {0: 70.0, 1: 86.0})
    high = _summary({0: 85.0, 1: 83.0, 2: 87.0}, {0: 40.0, 1: 60.0})
    runs = load_runs([f"x1={_write(tmp_path, 'a', low)}", f"x2={_write(tmp_path, 'b', high)}"])
    ax = sweep_figure(runs, ["TextVQA acc"]).axes[0]
    lines = {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines}
    assert ((0, 1), (70.0, 40.0)) in lines  # avg-pool, seed 0 across the two settings
    assert ((1,), (87.0,)) in lines  # ToMe's seed 2 ran at x2 only
    assert ((0, 1), (78.0, 50.0)) in lines  # avg-pool's mean
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x1", "x2"]


def test_cli_writes_both_files_and_refuses_bad_arguments(tmp_path, capsys):
    folder = _write(tmp_path, "a", _summary({0: 80.0, 1: 90.0}, {0: 70.0, 1: 86.0}))
    out = tmp_path / "sweep"
    assert main([f"x1={folder}", "--out", str(out)]) == 0
    assert "\nTextVQA acc, mean ± sd" in (out / "sweep.md").read_text()
    assert (out / "sweep.png").stat().st_size > 5_000
    for argv, message in (
        ([folder], "is not LABEL=DIR"),
        ([f"x1={tmp_path / 'nothing'}"], "seeds.json does not exist"),
        ([f"x1={folder}", f"x1={folder}"], "labels must differ"),
        ([f"x1={folder}", f"x2={folder}/"], "given twice; each setting is its own run"),
    ):
        with pytest.raises(SystemExit):
            main([*argv, "--out", str(out)])
        assert message in capsys.readouterr().err

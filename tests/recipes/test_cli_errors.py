"""A bad input at the command line is one line naming the problem and the fix (exit code 2,
no traceback); --debug shows the traceback (issue 15's CLI cases)."""

from __future__ import annotations

import pytest

from recipes.cli import main

TINY = "recipes/tiny/stage1_align.yaml"


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].endswith("(add --debug for the traceback)")
    errors = [line for line in err if line.startswith("radio-vlm ") and ": error: " in line]
    assert len(errors) == 1, err
    return errors[0]


def test_bad_recipe_values_are_one_line_naming_each_key(capsys, tmp_path):
    line = one_line_error(
        capsys,
        ["train", TINY, "-o", "train.max_steps=0", "-o", "train.gradient_accumulation_steps=0",
         "-o", f"train.output_dir={tmp_path}"],
    )  # fmt: skip
    assert line.startswith("radio-vlm train: error: ")
    assert "train.max_steps: must be -1 (run num_train_epochs) or >= 1; got 0" in line
    assert "train.gradient_accumulation_steps must be >= 1; got 0" in line
    assert not any(tmp_path.iterdir())  # nothing was built or written


def test_debug_shows_the_traceback(tmp_path):
    from vlm.schema import RecipeError

    with pytest.raises(RecipeError, match="max_steps"):
        main(["train", TINY, "-o", "train.max_steps=0", "--debug"])


def test_a_missing_recipe_file(capsys):
    line = one_line_error(capsys, ["train", "recipes/nope.yaml"])
    assert "recipe recipes/nope.yaml does not exist" in line


def test_eval_names_a_missing_model_folder(capsys, tmp_path):
    line = one_line_error(capsys, ["eval", "--pretrained", str(tmp_path / "nowhere")])
    assert "no such folder" in line and "output_dir of a finished stage" in line


def test_export_eval_data_gives_every_task_a_share_or_refuses(capsys, tmp_path):
    assert main(["export-eval-data", "--out", str(tmp_path / "six"), "--num", "6"]) == 0
    assert "textvqa 2, docvqa 2, ocrbench 2 rows" in capsys.readouterr().out
    line = one_line_error(
        capsys, ["export-eval-data", "--out", str(tmp_path / "two"), "--num", "2"]
    )
    assert "--num 2 cannot give each of the 3 tasks" in line
    assert not (tmp_path / "two").exists()


def test_eval_names_an_unknown_task_before_loading_any_model(capsys, tmp_path):
    assert main(["export-eval-data", "--out", str(tmp_path / "data"), "--num", "3"]) == 0
    line = one_line_error(
        capsys,
        ["eval", "--pretrained", str(tmp_path / "no-model-needed"), "--data",
         str(tmp_path / "data"), "--tasks", "textvqa,bogus", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert "unknown lmms-eval task(s): 'bogus'" in line

"""`radio-vlm train` / `radio-vlm merge-lora` argument handling (training itself: the other
tests here)."""

from __future__ import annotations

import pytest
from train_helpers import TINY

from recipes.cli import build_parser, main
from vlm.training import RecipeError


def test_subcommands_are_registered(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--override", "--resume", "--accelerate", "--num-processes"):
        assert flag in text
    args = build_parser().parse_args(["train", "r.yaml", "--resume", "-o", "train.seed=1"])
    assert (args.resume, args.override) == ("auto", ["train.seed=1"])
    args = build_parser().parse_args(["merge-lora", "in", "out", "--base", "b"])
    assert (args.adapter_dir, args.out_dir, args.base) == ("in", "out", "b")


def test_train_reports_recipe_errors_before_any_work(tmp_path):
    recipe = TINY / "stage1_align.yaml"
    with pytest.raises(RecipeError, match=r"unknown key 'bogus' in section 'train'"):
        main(["train", str(recipe), "-o", "train.bogus=1", "--debug"])  # raises, not one line
    with pytest.raises(RecipeError, match=r"unknown key 'lr' in section 'train' \(did you mean"):
        main(["train", str(recipe), "-o", "train.lr=1", "--debug"])
    with pytest.raises(FileNotFoundError, match=r"recipe .*missing.yaml does not exist"):
        main(["train", str(tmp_path / "missing.yaml"), "--debug"])
    with pytest.raises(RecipeError, match=r"training_arguments.save_steps is set by the recipe"):
        main(
            [
                "train",
                str(recipe),
                "-o",
                f"train.output_dir={tmp_path}",
                "-o",
                "train.training_arguments={save_steps: 3}",
                "--debug",
            ]
        )


def test_merge_lora_refuses_a_plain_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no adapter_config.json: not a LoRA stage"):
        main(["merge-lora", str(tmp_path), str(tmp_path / "out"), "--debug"])


def test_main_returns_to_its_caller_in_a_launched_rank(monkeypatch):
    """benchmarks/zero3_memory.py calls ``main`` in each rank and writes its report after it:
    the rank's hard exit belongs to the entry point, never inside ``main``."""
    import vlm.training
    from vlm.training import cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(vlm.training, "load_recipe", lambda path, overrides: (path, overrides))
    trained = []
    monkeypatch.setattr(vlm.training, "train", trained.append)
    assert cli.main([str(TINY / "stage1_align.yaml"), "--resume"]) == 0
    assert trained == [(str(TINY / "stage1_align.yaml"), ["train.resume=auto"])]


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_entry_point_exit_keeps_the_code_and_the_output(world_size):
    """A launched rank leaves through os._exit (no interpreter teardown) with main's code,
    its buffered output flushed; a single process exits as usual."""
    import os
    import subprocess
    import sys

    script = (
        "from vlm.training.cli import exit_process\n"
        "print('stage saved', end='')\n"  # stays in the buffer: stdout is a pipe
        "import atexit; atexit.register(lambda: print(' + teardown', end=''))\n"
        "exit_process(3)\n"
    )
    env = {**os.environ, "WORLD_SIZE": world_size}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 3
    assert done.stdout == ("stage saved" if world_size == "2" else "stage saved + teardown")

"""``radio-vlm compare GRID --override KEY=VALUE``: one grid key changed from the command line
(an LR sweep without a YAML per point), validated like the YAML and saved with the setup."""

from __future__ import annotations

import pytest

from recipes.cli import build_parser, main
from recipes.compare.grid import load_grid
from recipes.compare.runner import _check_setup, grid_from_args
from recipes.quickstart.training import stage_recipe

LR2X = ["schedule.lr=[2.0e-3, 1.0e-3, 2.0e-3]", "schedule.encoder_lr=6.0e-4"]


def test_overrides_turn_dense_word_into_its_shipped_lr_twin():
    """dense_word + the two SFT learning-rate overrides trains as dense_word_sft_lr2x does
    (schedule, settings, data and eval alike; dense_word also has unshuffle and blind cells),
    and the SFT stage trains at those rates."""
    twin = load_grid("recipes/compare/dense_word_sft_lr2x.yaml")
    grid = load_grid("recipes/compare/dense_word.yaml", LR2X)
    assert grid.schedule_obj == twin.schedule_obj
    assert grid.settings_obj == twin.settings_obj
    assert (grid.data, grid.eval) == (twin.data, twin.eval)
    sft = stage_recipe("sft", "init", "data.json", "out", grid.schedule_obj)["train"]
    assert sft["learning_rate"] == 2e-3 and sft["modules"] == {"encoder": {"lr": 6e-4}}
    plain = load_grid("recipes/compare/dense_word.yaml")
    assert stage_recipe("sft", "i", "d", "o", plain.schedule_obj)["train"]["learning_rate"] == 1e-3


def test_an_overridden_grid_is_another_setup(tmp_path):
    """Cells trained at another learning rate are never mixed into the plain run's folder."""
    _check_setup(load_grid("recipes/compare/dense_word.yaml"), tmp_path)
    with pytest.raises(ValueError, match=r"another setup.*schedule"):
        _check_setup(load_grid("recipes/compare/dense_word.yaml", LR2X), tmp_path)


def test_overrides_are_validated_like_the_yaml():
    path = "recipes/compare/dense_word.yaml"
    with pytest.raises(ValueError, match=r"'schedule\.lr' is not key=value"):
        load_grid(path, ["schedule.lr"])
    unknown = r"unknown key 'lrr' in section 'schedule' \(did you mean 'lr'\?\)"
    with pytest.raises(ValueError, match=unknown):
        load_grid(path, ["schedule.lrr=1e-3"])
    with pytest.raises(ValueError, match=r"data\.num_train is a value"):
        load_grid(path, ["data.num_train.x=3"])
    grid = load_grid(path, ["settings.image_size=256"])
    assert grid.settings_obj.image_size == 256 and grid.name == "dense_word"


def test_a_bad_override_is_one_line_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["compare", "recipes/compare/dense_word.yaml", "-o", "schedule.steps=[1, 2]",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "schedule.steps" in err and len(err.strip().splitlines()) == 2
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grid.num_tokens=[0]", r"num_tokens must be .*>= 1"),
        ("grid.num_tokens=[300]", r"tiny-tome-k300: tome at K = 300 does not fit the 16x16"),
        ("grid.num_tokens=[17]", r"tiny-avgpool-k17: avgpool at K = 17 does not fit"),
        ("settings.styles=[txtvqa]", r"settings\.styles \['txtvqa'\] are not question styles"),
        ("eval.tasks=textvqa", r"eval\.tasks must be a list, e\.g\. \[textvqa\]"),
        ("data.num_eval=0", r"data\.num_eval must be .*>= 1"),
        ("eval.tasks=[docvqa]", r"eval\.tasks \['docvqa'\] have no pages in this run"),
        ("eval.tasks=[nope]", r"eval\.tasks \['nope'\] have no pages"),
        ("eval.tasks=[]", r"eval\.tasks is empty; name some of settings\.styles"),
        ("grid.compressors=[tomee]", r"^grid: unknown compressor 'tomee'; use one of \('tome'"),
    ],
)
def test_a_grid_that_would_fail_after_stage_0_is_refused_when_loaded(override, message):
    """Each of these used to load, then fail minutes later (in training, the stage-0
    analysis or evaluation: after data and stage 0), or named the wrong fix."""
    with pytest.raises(ValueError, match=message):
        load_grid("recipes/compare/dense_word.yaml", [override])


def test_eval_tasks_default_to_the_styles_the_run_writes():
    grid = load_grid("recipes/compare/dense_word.yaml", ["eval.tasks=null"])
    assert grid.eval_tasks == ["textvqa"]
    assert load_grid("recipes/compare/paper_toy.yaml").eval_tasks == [
        "textvqa", "docvqa", "ocrbench"
    ]  # fmt: skip


def test_exponents_are_numbers_so_spellings_are_one_setup(tmp_path):
    """PyYAML alone reads 2e-3 as a string, which the saved setup kept: 2e-3 and 2.0e-3 were
    then two setups, and the run refused its own cells."""
    dotless = load_grid("recipes/compare/dense_word.yaml", ["schedule.lr=[2e-3, 1e-3, 2e-3]"])
    assert dotless.schedule["lr"] == [0.002, 0.001, 0.002]
    _check_setup(dotless, tmp_path)
    _check_setup(load_grid("recipes/compare/dense_word.yaml", LR2X[:1]), tmp_path)  # the same


def _args(*argv: str):
    return build_parser().parse_args(["compare", "recipes/compare/dense_word.yaml", *argv])


def test_an_override_wins_over_ci_sizes():
    grid = grid_from_args(_args("--ci", "-o", "data.num_train=40", "-o", "schedule.steps=[3,3,3]"))
    assert grid.data == {"num_train": 40, "num_eval": 12}  # --ci's eval size, the user's train
    assert grid.schedule_obj.steps == (3, 3, 3) and grid.schedule_obj.warmup_steps == 4
    assert grid_from_args(_args("--ci")).schedule_obj.steps == (2, 2, 2)


@pytest.mark.parametrize(
    "argv",
    [("--seeds", "0,1", "-o", "seed=3"), ("--seed", "1", "-o", "seed=3"),
     ("--out", "x", "-o", "out=y")],
)  # fmt: skip
def test_a_flag_and_an_override_of_the_same_key_are_refused(argv):
    with pytest.raises(SystemExit, match=r"both set (seed|out); pass one"):
        grid_from_args(_args(*argv))

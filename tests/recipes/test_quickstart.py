"""A CI-sized run of the quickstart pipeline: every artefact is produced and well-formed.

The sizes are tiny (a few steps), so the scores mean nothing and are not checked.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from recipes.cli import build_parser
from recipes.quickstart.model import TinySettings
from recipes.quickstart.runner import QuickstartOptions, run_quickstart
from recipes.quickstart.training import Schedule

METHODS = ("tome", "unshuffle", "blind")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    lines: list[str] = []
    options = QuickstartOptions.small(out=str(out), methods=METHODS)
    results = run_quickstart(options, echo=lines.append)
    return out, results, lines


def test_every_step_prints_one_summary_line(run):
    _, _, lines = run
    summaries = [line for line in lines if line.startswith("[quickstart ") and "..." not in line]
    assert len(summaries) == 6
    assert [s.split("]")[0] for s in summaries] == [f"[quickstart {i}/6" for i in range(1, 7)]
    assert lines[-1].startswith("[quickstart] done in")


def test_data_in_the_three_lmms_eval_schemas(run):
    import datasets

    out, _, _ = run
    # seed 0 draws every style among the 12 eval pages (4 textvqa, 2 docvqa, 6 ocrbench)
    for folder in ("eval", "eval_blank"):
        rows = 0
        for kind, split in (
            ("textvqa", "validation"),
            ("docvqa", "validation"),
            ("ocrbench", "test"),
        ):
            saved = datasets.load_from_disk(str(out / "data" / folder / kind))
            assert list(saved) == [split], (folder, kind)
            rows += len(saved[split])
        assert rows == 12, folder
    train = json.loads((out / "data" / "train" / "llava.json").read_text())
    blank = json.loads((out / "data" / "train_blank" / "llava.json").read_text())
    assert len(train) == len(blank) == 32
    assert [e["conversations"] for e in train] == [e["conversations"] for e in blank]
    page = Image.open(out / "data" / "train_blank" / blank[0]["image"])
    assert page.getextrema() == ((255, 255),) * 3  # blind: blank pages


def test_stages_are_finished_recipe_runs(run):
    out, results, _ = run
    for method in METHODS:
        runs = out / "runs" / method
        for stage in ("stage0", "stage1_align", "stage2_pretrain", "stage3_sft"):
            assert (runs / stage / "complete.json").is_file(), (method, stage)
        for stage in ("stage1_align", "stage2_pretrain", "stage3_sft"):
            assert (runs / stage / "recipe.yaml").is_file()
        assert results["cells"][method]["model_dir"] == str(runs / "stage3_sft")


def test_results_json_and_report(run):
    out, results, _ = run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == results
    assert set(results["cells"]) == set(METHODS)
    assert (
        results["cells"]["tome"]["visual_tokens"]
        == results["cells"]["unshuffle"]["visual_tokens"]
        == 16
    )
    assert results["cells"]["blind"]["blind"] is True
    for cell in results["cells"].values():
        assert set(cell["metrics"]) == {"textvqa_val_local", "docvqa_val_local", "ocrbench_local"}
        for value in cell["scores"].values():
            assert math.isnan(value) or 0.0 <= value <= 100.0
    assert results["stage0"]["steps"] == 4
    assert results["machine"]["torch"] == torch.__version__
    report = (out / "report.md").read_text()
    assert "CI-sized run" in report and "| image-blind" in report and "stage 0" in report
    for png in ("accuracy.png", "tome_merge.png", "encoder_pca.png"):
        assert f"({png})" in report
        with Image.open(out / png) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_cli_registers_quickstart_and_compare():
    args = build_parser().parse_args(["quickstart", "--ci", "--methods", "tome", "blind"])
    assert args.ci and args.methods == ["tome", "blind"] and callable(args.run)
    args = build_parser().parse_args(["compare", "recipes/compare/paper_toy.yaml"])
    assert callable(args.run)


def test_options_reject_a_run_without_tome(tmp_path):
    with pytest.raises(ValueError, match="must include 'tome'"):
        run_quickstart(QuickstartOptions.small(out=str(tmp_path), methods=("avgpool",)))


def test_settings_budget_per_method():
    settings = TinySettings()
    assert settings.compressor("unshuffle") == {
        "compressor": "unshuffle",
        "num_tokens": None,
        "compressor_options": {"scale": 2},
    }
    assert settings.visual_tokens("none") == 64
    with pytest.raises(ValueError, match="unshuffle cannot give exactly K=12"):
        settings.compressor("unshuffle", 12)
    assert Schedule().scaled(0.5).steps == tuple(round(s / 2) for s in Schedule().steps)


def test_stage0_takes_its_input_sizes_in_turn(tmp_path):
    from recipes.quickstart.model import tiny_parts
    from recipes.quickstart.stage0 import warm_up_encoder
    from recipes.quickstart.training import synthdoc_config
    from vlm.data.synthdoc import generate_records

    settings = TinySettings(image_size=128)
    records = list(generate_records(8, synthdoc_config(settings, 0)))
    encoder = tiny_parts(settings, tmp_path, seed=0).encoder
    seen = []
    encoder.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    stats = warm_up_encoder(
        encoder, records, settings.vocabulary, steps=4, batch_size=2, image_size=(64, 128)
    )
    assert seen == [(64, 64), (128, 128), (64, 64), (128, 128)]
    assert stats["steps"] == 4 and math.isfinite(stats["loss"])
    with pytest.raises(ValueError, match="at least one size"):
        warm_up_encoder(encoder, records, settings.vocabulary, steps=1, image_size=())


def test_stage0_depends_on_its_seed_not_on_what_ran_before(tmp_path):
    """The classifier head is drawn from the seed: the same seed twice in one process (seeds
    of --seeds one after another, a parallel job's parent) gives the same encoder, whatever
    the global generator did in between; another seed gives another."""
    import torch

    from recipes.quickstart.model import tiny_parts
    from recipes.quickstart.stage0 import warm_up_encoder
    from recipes.quickstart.training import synthdoc_config
    from vlm.data.synthdoc import generate_records

    settings = TinySettings(image_size=64)
    records = list(generate_records(8, synthdoc_config(settings, 0)))

    def warmed(seed: int) -> dict:
        encoder = tiny_parts(settings, tmp_path, seed=0).encoder
        torch.randn(1000)  # the global generator moves on between runs
        warm_up_encoder(encoder, records, settings.vocabulary, steps=3, batch_size=2, seed=seed)
        return encoder.state_dict()

    first, again, other = warmed(0), warmed(0), warmed(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)

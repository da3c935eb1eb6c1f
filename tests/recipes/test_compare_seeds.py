"""Seeds and statistics (recipes.compare.stats) exact on fixed numbers, and a 2-seed CI-sized
dense-world grid end to end (real training and lmms-eval) writing the table, JSON and plots."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from matplotlib.collections import PathCollection

from recipes.cli import main
from recipes.compare.grid import load_grid
from recipes.compare.letters import LetterStats, letter_stats, one_letter_apart, same_letters
from recipes.compare.reconstruction import METHODS
from recipes.compare.report import seeds_figure, seeds_table
from recipes.compare.stats import aggregate, mean_sd, paired_difference, partner_key
from recipes.threads import default_threads


def test_mean_and_sample_sd():
    assert mean_sd([2.0, 4.0, 9.0]) == pytest.approx((5.0, math.sqrt(13.0)))  # (9+1+16)/2
    mean, sd = mean_sd([7.0])
    assert mean == 7.0 and math.isnan(sd)
    assert all(math.isnan(v) for v in mean_sd([]))
    assert all(math.isnan(v) for v in mean_sd([math.nan, 1.0, 2.0]))  # a task not evaluated


def test_a_grid_evaluated_on_one_task_aggregates_the_others_as_missing():
    # dense_word.yaml evaluates TextVQA only: DocVQA / OCRBench are NaN in every seed
    per_seed = {
        seed: {
            "cells": [
                {
                    **_record("tiny-tome-k16", "tome", tome),
                    "metrics": {"textvqa_val_local": {"exact_match": tome}},
                },
                {
                    **_record("tiny-avgpool-k16", "avgpool", pool),
                    "metrics": {"textvqa_val_local": {"exact_match": pool}},
                },
            ]
        }
        for seed, (tome, pool) in {0: (0.8, 0.7), 1: (0.9, 0.7)}.items()
    }
    summary = aggregate(per_seed)
    diff = summary["cells"]["tiny-avgpool-k16"]["vs_tome"]
    assert diff["TextVQA acc"]["mean"] == pytest.approx(-15.0)
    assert diff["TextVQA acc"]["se"] == pytest.approx(5.0)  # differences -10, -20
    assert math.isnan(diff["DocVQA ANLS"]["mean"]) and math.isnan(diff["OCRBench acc"]["se"])
    assert math.isnan(summary["cells"]["tiny-tome-k16"]["DocVQA ANLS"]["mean"])


def test_paired_difference_and_its_standard_error():
    a, b = [50.0, 60.0, 70.0], [40.0, 55.0, 59.0]  # differences 10, 5, 11: mean 26/3
    mean, se = paired_difference(a, b)
    sd = math.sqrt(((10 - 26 / 3) ** 2 + (5 - 26 / 3) ** 2 + (11 - 26 / 3) ** 2) / 2)
    assert mean == pytest.approx(26 / 3) and se == pytest.approx(sd / math.sqrt(3))
    # pairing matters: the same values unpaired would have a larger spread
    assert se < math.sqrt(mean_sd(a)[1] ** 2 / 3 + mean_sd(b)[1] ** 2 / 3)
    with pytest.raises(ValueError, match="equal counts"):
        paired_difference([1.0], [1.0, 2.0])


def _record(key, compressor, exact, k=16, **cell):
    return {
        "key": key,
        "cell": {"encoder": "tiny", "compressor": compressor, "num_tokens": k, **cell},
        "visual_tokens": k,
        "metrics": {
            "textvqa_val_local": {"exact_match": exact},
            "docvqa_val_local": {"anls": 0.5},
            "ocrbench_local": {"ocrbench_item_accuracy": 0.25},
        },
    }


def test_aggregate_pairs_each_method_with_tome_of_the_same_seed_k_and_input():
    per_seed = {
        seed: {
            "cells": [
                _record("tiny-tome-k16", "tome", tome),
                _record("tiny-avgpool-k16", "avgpool", pool),
                _record("tiny-tome-k16-blind", "tome", 0.05, blind=True),
                _record("tiny-avgpool-k64", "avgpool", 0.9, k=64),  # no ToMe at 64: unpaired
                _record("tiny-none-kall", "none", 0.99),  # every patch: no ToMe of its K
            ]
        }
        for seed, (tome, pool) in {0: (0.6, 0.4), 1: (0.7, 0.6), 2: (0.5, 0.2)}.items()
    }
    summary = aggregate(per_seed)
    assert summary["seeds"] == [0, 1, 2]
    tome = summary["cells"]["tiny-tome-k16"]["TextVQA acc"]
    assert tome["values"] == pytest.approx([60.0, 70.0, 50.0]) and tome["mean"] == pytest.approx(
        60.0
    )
    assert tome["sd"] == pytest.approx(10.0)
    diff = summary["cells"]["tiny-avgpool-k16"]["vs_tome"]["TextVQA acc"]  # -20, -10, -30
    assert diff["mean"] == pytest.approx(-20.0) and diff["se"] == pytest.approx(10 / math.sqrt(3))
    assert diff["n"] == 3
    blind = summary["cells"]["tiny-tome-k16-blind"]["vs_tome"]["TextVQA acc"]
    assert blind["mean"] == pytest.approx(5.0 - 60.0)
    assert "vs_tome" not in summary["cells"]["tiny-tome-k16"]
    assert "vs_tome" not in summary["cells"]["tiny-avgpool-k64"]
    assert "vs_tome" not in summary["cells"]["tiny-none-kall"]
    assert (
        partner_key(
            {"encoder": "tiny", "compressor": "avgpool", "num_tokens": 4, "resolution": 256}
        )
        == "tiny-tome-k4-r256"
    )


def test_a_cell_run_in_fewer_seeds_is_aggregated_and_paired_over_its_own_seeds():
    # --seeds 0,1,2 with every cell, then --cells tome,avgpool for seeds 3 and 4 too
    values = {
        0: (0.6, 0.4, 0.3),
        1: (0.7, 0.6, 0.5),
        2: (0.5, 0.2, 0.1),
        3: (0.8, 0.9),
        4: (0.7, 0.7),
    }
    per_seed = {
        seed: {
            "cells": [
                _record(f"tiny-{name}-k16", name, exact)
                for name, exact in zip(("tome", "avgpool", "unshuffle"), scores, strict=False)
            ]
        }
        for seed, scores in values.items()
    }
    summary = {"seeds": sorted(values), **aggregate(per_seed)}
    pool, shuffle = (summary["cells"][f"tiny-{n}-k16"] for n in ("avgpool", "unshuffle"))
    assert pool["seeds"] == [0, 1, 2, 3, 4] and shuffle["seeds"] == [0, 1, 2]
    assert pool["vs_tome"]["TextVQA acc"]["mean"] == pytest.approx(-10.0)  # -20 -10 -30 +10 0
    assert shuffle["vs_tome"]["TextVQA acc"]["mean"] == pytest.approx(-(30 + 20 + 40) / 3)
    assert shuffle["vs_tome"]["TextVQA acc"]["n"] == 3
    table = seeds_table(summary)
    assert "mean ± sd per cell over the seeds it ran" in table
    assert "| tiny / avgpool | 16 | 0, 1, 2, 3, 4 | 56.0 ± 27.0 |" in table
    assert "| tiny / unshuffle | 16 | 0, 1, 2 | 30.0 ± 20.0 |" in table
    assert "| tiny / unshuffle | 16 | 3 | -30.0 ± 5.8 |" in table  # paired over seeds 0-2


def test_seeds_figure_draws_evaluated_tasks_only_and_every_seed_as_a_point():
    def textvqa_only(key, compressor, exact, k):
        return {
            **_record(key, compressor, exact, k=k),
            "metrics": {"textvqa_val_local": {"exact_match": exact}},
        }

    per_seed = {
        seed: {
            "cells": [
                textvqa_only("tiny-tome-k16", "tome", 0.6 + seed / 10, 16),
                textvqa_only("tiny-tome-k64", "tome", 0.8, 64),
                textvqa_only("tiny-avgpool-k16", "avgpool", 0.5, 16),
            ]
        }
        for seed in (0, 1, 2)
    }
    summary = {"seeds": [0, 1, 2], **aggregate(per_seed)}
    figure = seeds_figure(summary)
    bars, curve = figure.axes  # TextVQA only: no empty DocVQA / OCRBench panels
    assert (
        bars.get_title().startswith("TextVQA acc") and curve.get_title() == "TextVQA acc vs budget"
    )
    # one point per (cell, seed), at the seed's score
    points = [p for c in _scatters(bars) for p in c.get_offsets().tolist()]
    assert len(points) == 9
    assert sorted(y for x, y in points if round(x) == 0) == pytest.approx([60.0, 70.0, 80.0])
    curve_points = [p for c in _scatters(curve) for p in c.get_offsets().tolist()]
    assert sorted(x for x, _ in curve_points) == [16.0] * 3 + [64.0] * 3  # tome's budgets


def _scatters(axes):
    return [c for c in axes.collections if isinstance(c, PathCollection)]


def test_shipped_dense_grids_load():
    main_grid = load_grid("recipes/compare/dense_world.yaml")
    assert [c.key for c in main_grid.expand()] == [
        "tiny-tome-k16",
        "tiny-avgpool-k16",
        "tiny-unshuffle-k16",
        "tiny-tome-k16-blind",
    ]
    assert main_grid.schedule_obj.warmup_objective == "dense"
    assert main_grid.settings_obj.levels == ("dense",) and main_grid.settings_obj.vocabulary is None
    lite = load_grid("recipes/compare/dense_lite.yaml")
    assert [c.key for c in lite.expand()] == [c.key for c in main_grid.expand()]
    assert lite.settings_obj.levels == ("dense-lite",) and len(lite.settings_obj.vocabulary) == 20
    assert lite.schedule_obj == main_grid.schedule_obj  # one schedule for both dense grids
    word = load_grid("recipes/compare/dense_word.yaml")  # the same cells, word questions only
    assert [c.key for c in word.expand()] == [c.key for c in main_grid.expand()]
    assert word.settings_obj.styles == ("textvqa",) and word.eval["tasks"] == ["textvqa"]
    assert word.schedule_obj == main_grid.schedule_obj
    k64 = load_grid("recipes/compare/dense_lite_k64.yaml")  # shares dense_lite's folder
    assert (k64.name, k64.settings_obj, k64.schedule_obj) == (
        lite.name,
        lite.settings_obj,
        lite.schedule_obj,
    )
    assert [c.key for c in k64.expand()] == [
        f"tiny-{m}-k64" for m in ("tome", "avgpool", "unshuffle")
    ]
    wide = load_grid("recipes/compare/dense_world_wide.yaml")
    keys = [c.key for c in wide.expand()]
    assert "tiny-none-kall" in keys and "tiny-tome-k16-r256" in keys and len(keys) == len(set(keys))


def test_shipped_word_tests_change_only_the_vocabulary():
    """dense_word_pairs / dense_word_anagrams: dense_word's pages, schedule and budget; 20
    three-letter words where each has a partner one letter apart (pairs), or the same letters
    in another order (anagrams)."""
    word = load_grid("recipes/compare/dense_word.yaml")
    for name, partner in [
        ("pairs", one_letter_apart),
        ("anagrams", lambda a, b: a != b and same_letters(a, b)),
    ]:
        grid = load_grid(f"recipes/compare/dense_word_{name}.yaml")
        assert grid.schedule_obj == word.schedule_obj and grid.data == word.data
        assert grid.eval == word.eval
        words = grid.settings_obj.vocabulary
        same = dataclasses.replace(grid.settings_obj, vocabulary=word.settings_obj.vocabulary)
        assert same == word.settings_obj
        assert len(set(words)) == 20 and {len(w) for w in words} == {3}
        assert all(any(partner(w, v) for v in words) for w in words), name
        assert {c.key for c in grid.expand()} >= {"tiny-tome-k16", "tiny-avgpool-k16"}


def test_form_grid_changes_only_the_question_style_and_its_metric():
    """dense_word_forms: dense_word's pages, schedule, budget and cells; DocVQA form lookups
    with word values, scored by ANLS."""
    word = load_grid("recipes/compare/dense_word.yaml")
    forms = load_grid("recipes/compare/dense_word_forms.yaml")
    assert (forms.schedule_obj, forms.data) == (word.schedule_obj, word.data)
    assert forms.settings_obj.styles == ("docvqa",) and forms.settings_obj.form_values == "words"
    same = dataclasses.replace(forms.settings_obj, styles=("textvqa",), form_values="any")
    assert same == word.settings_obj
    assert forms.eval == {**word.eval, "tasks": ["docvqa"]}
    assert [c.key for c in forms.expand()] == [c.key for c in word.expand()]


def test_long_anagram_grid_changes_only_the_sft_steps_so_stages_0_to_2_are_shared():
    short = load_grid("recipes/compare/dense_word_anagrams.yaml")
    long = load_grid("recipes/compare/dense_word_anagrams_long.yaml")
    assert long.schedule["steps"] == [*short.schedule["steps"][:2], 2 * short.schedule["steps"][2]]
    same = dataclasses.replace(long.schedule_obj, steps=short.schedule_obj.steps)
    assert same == short.schedule_obj
    assert (long.settings_obj, long.data, long.eval) == (short.settings_obj, short.data, short.eval)
    assert [c.key for c in long.expand()] == [c.key for c in short.expand()]


def test_budget_grid_shares_dense_word_setup_so_its_cells_are_the_same_runs(tmp_path):
    """dense_word_budgets reuses dense_word's K = 16 / 64 cells (linked into its folder): the
    folder check accepts it only with the same shared setup, and the cells keep their keys."""
    from recipes.compare.runner import _check_setup

    word = load_grid("recipes/compare/dense_word.yaml")
    budgets = load_grid("recipes/compare/dense_word_budgets.yaml")
    _check_setup(word, tmp_path)  # a dense_word run's folder
    _check_setup(budgets, tmp_path)  # accepted: no error
    with pytest.raises(ValueError, match="another setup"):
        _check_setup(load_grid("recipes/compare/dense_word_resolution.yaml"), tmp_path)
    keys = [c.key for c in budgets.expand()]
    assert keys == [
        *(f"tiny-{m}-k{k}" for m in ("tome", "avgpool") for k in (4, 16, 64)),
        "tiny-none-kall",
    ]
    assert {c.key for c in word.expand()} & set(keys) == {"tiny-tome-k16", "tiny-avgpool-k16"}


def test_every_shipped_grid_loads_and_expands():
    for path in sorted(Path("recipes/compare").glob("*.yaml")):
        cells = load_grid(path).expand()
        assert cells and len({c.key for c in cells}) == len(cells), path.name


def test_two_seed_dense_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "dense"
    code = main(
        ["compare", "recipes/compare/dense_world.yaml", "--ci", "--seeds", "0,1",
         "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "torch threads: 1" in capsys.readouterr().out
    for seed in (0, 1):
        results = json.loads((out / f"seed{seed}" / "results.json").read_text())
        assert results["threads"] == 1 and results["grid"]["seed"] == seed
        assert results["machine"]["torch"] == torch.__version__  # where the numbers came from
        assert all(c["machine"] == results["machine"] for c in results["cells"])
        assert len(results["cells"]) == 4
        row = results["reconstruction"][0]
        assert row["grid"] == [16, 16]  # 128 px pages, patch 8
        assert all(0 <= row[f"char_{m}"] <= 1 for m in ("none", *METHODS))
        assert (out / f"seed{seed}" / "merge.png").stat().st_size > 10_000
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["threads"] == 1
    assert summary["machine"]["cores"] == default_threads()
    assert summary["reconstruction_block"] == -1
    assert set(summary["cells"]["tiny-avgpool-k16"]["vs_tome"]) == {
        "TextVQA acc",
        "DocVQA ANLS",
        "OCRBench acc",
    }
    table = (out / "seeds.md").read_text()
    assert "| tiny / tome (image-blind) | 16 |" in table and "Paired difference" in table
    assert "| 16 @ 128 px | characters read | top-left |" in table
    assert "| 16 @ 128 px | characters read | random |" in table
    assert (out / "seeds.png").stat().st_size > 10_000
    # the two seeds drew different data and stage 0
    first, second = (json.loads((out / f"seed{s}" / "setup.json").read_text()) for s in (0, 1))
    assert first["seed"] == 0 and second["seed"] == 1


def test_letter_stats_on_fixed_answers():
    truths = {0: "tap", 1: "pat", 2: "top", 3: "ten", 4: "now"}
    answers = {0: "tap", 1: "apt", 2: " Pot", 3: "tan", 4: "cat"}
    stats = letter_stats(answers, truths)
    # exact: tap; same letters: tap, apt, pot; wrong (4): anagrams apt, pot; one off: tan
    assert stats == LetterStats(
        exact=20.0, same_letters=60.0, wrong_anagrams=50.0, wrong_one_off=25.0
    )
    with pytest.raises(ValueError, match="same question ids; got 4 answers for 5 questions"):
        letter_stats({q: a for q, a in answers.items() if q}, truths)


def test_letters_cli_reads_a_seed_folder(tmp_path, capsys):
    """The truths from the eval split as lmms-eval reads it, the answers from a cell's
    lmms-eval submission file; a cell not evaluated is left out."""
    from PIL import Image

    from recipes.compare.letters import main as letters_main
    from vlm.evaluation.schemas import build_local_dataset

    seed = tmp_path / "seed0"
    rows = [
        {"image": Image.new("RGB", (8, 8)), "question": "word?", "answers": [t], "question_id": q}
        for q, t in {0: "tap", 1: "pat"}.items()
    ]
    build_local_dataset("textvqa", rows).save_to_disk(str(seed / "data" / "eval" / "textvqa"))
    submissions = seed / "cells" / "tiny-tome-k16" / "eval" / "submissions"
    submissions.mkdir(parents=True)
    answers = [{"question_id": 0, "answer": "tap"}, {"question_id": 1, "answer": "apt"}]
    (submissions / "textvqa_submission_x.json").write_text(json.dumps(answers))
    (seed / "cells" / "tiny-avgpool-k16").mkdir()  # not evaluated
    assert letters_main([str(tmp_path)]) == 0
    rows_out = [line for line in capsys.readouterr().out.splitlines() if "seed0" in line]
    assert rows_out == ["| seed0 | tiny-tome-k16 | 50.0 | 100.0 | 100.0 | 0.0 |"]

"""Table A10 in the compare analysis (recipes.compare.reconstruction): ToMe's sink layout x
matching metric and avg-pool, exact on a hand-made grid, each variant equal to its own
``compress`` call on a real (tiny) RADIO, through ``Context.reconstruction``, and rendered."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from encoder import attention_projection, load_radio
from recipes.compare.cells import Context
from recipes.compare.grid import CompareGrid
from recipes.compare.probe import ink_separation
from recipes.compare.reconstruction import METHODS, compress_all, matching_metrics, measure
from recipes.compare.report import reconstruction_tables, seeds_table
from recipes.compare.stats import reconstruction_over_seeds
from token_merge import compress, reconstruction_error
from vlm.data.synthdoc_dense import BACKGROUND

FIXTURE = Path(__file__).parents[1] / "fixtures" / "radio" / "b-like"


def test_method_keys_keep_the_old_names():
    assert METHODS == (
        "tome",
        "tome_keys",
        "tome_values",
        "tome_random",
        "tome_keys_random",
        "tome_values_random",
        "avgpool",
    )


def test_hand_made_grid_exact_errors():
    # 1x4 patches, K = 2: two 1x2 windows. Top-left sinks p0 = p2's opposite and p2: p1 and p3
    # (copies of p0) merge into p0, nothing is lost. Seed 0 draws p3 as the second window's
    # sink: p2 matches no sink (cosine 0 to both) and is merged into p0's token, (2/3, 1/3).
    grid = torch.tensor([[[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]]])
    metrics = {"features": None, "keys": grid.clone(), "values": grid.flip(-1)}
    row = measure(grid, 2, metrics, seed=0)
    assert row["tome"] == row["tome_keys"] == row["tome_values"] == 0.0
    # per-channel std 0.5: (1/3 / 0.5)^2 * 4 + (2/3 / 0.5)^2 * 2 over 8 values = 2/3
    assert row["tome_random"] == pytest.approx(2 / 3, abs=1e-6)
    random = compress_all(grid, 2, metrics, seed=0)["tome_random"]
    assert random.assignment.tolist() == [[0, 0, 0, 1]]
    # avg-pool: (1, 0) twice, then (0.5, 0.5) for (0, 1) and (1, 0): 2 * (1 + 1) / 8
    assert row["avgpool"] == pytest.approx(0.5, abs=1e-6)
    assert set(row) == set(METHODS)


def test_each_variant_is_its_compress_call_on_a_real_encoder():
    enc = load_radio(FIXTURE)
    pixels = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    grid, metrics = matching_metrics(enc, pixels, block=1)  # [3, 8, 8, C]
    assert grid.shape[1:3] == (8, 8) and metrics["features"] is None
    for kind in ("keys", "values"):
        assert torch.equal(metrics[kind], attention_projection(enc, pixels, layer=1, kind=kind))
    row = measure(grid, 6, metrics, seed=5)
    for matching in ("features", "keys", "values"):
        for dst, suffix in (("top-left", ""), ("random", "_random")):
            key = ("tome" if matching == "features" else f"tome_{matching}") + suffix
            out = compress(grid, "tome", 6, metric=metrics[matching], dst=dst, seed=5)
            assert row[key] == float(reconstruction_error(grid, out, normalize=True)), key
    pooled = compress(grid, "avgpool", 6)
    assert row["avgpool"] == float(reconstruction_error(grid, pooled, normalize=True))
    assert row["tome_random"] != row["tome"]  # the sink layout matters
    assert len({row["tome"], row["tome_keys"], row["tome_values"]}) == 3
    assert measure(grid, 6, metrics, seed=5) == row  # seeded: the same sinks again


def test_context_measures_the_grids_budgets_with_its_block_and_seed(tmp_path):
    grid = CompareGrid(
        name="a10",
        out=str(tmp_path),
        seed=7,
        grid={"compressors": ["tome", "avgpool"], "num_tokens": [4, 16]},
        settings={"image_size": 64},
        reconstruction_block=-2,
    )
    context = Context(grid, tmp_path, echo=lambda _: None)
    pages = [Image.new("RGB", (64, 64), (40 * i, 90, 200 - 30 * i)) for i in range(3)]
    context._parts = SimpleNamespace(encoder=load_radio(FIXTURE))  # no stage 0 to train
    context._data = SimpleNamespace(eval_records=[SimpleNamespace(image=p, meta={}) for p in pages])
    rows = context.reconstruction([8, 4])
    assert [(r["num_tokens"], r["resolution"], r["grid"], r["block"]) for r in rows] == [
        (4, 64, [4, 4], -2),
        (8, 64, [4, 4], -2),
    ]
    from recipes.quickstart.model import to_pixels

    features, metrics = matching_metrics(context._parts.encoder, to_pixels(pages, 64), block=-2)
    assert rows[1] == {
        "num_tokens": 8,
        "resolution": 64,
        "grid": [4, 4],
        "block": -2,
        **measure(features, 8, metrics, seed=7),
    }
    assert not any(k.startswith("char_") for k in rows[0])  # not dense pages: no probe


def test_reconstruction_block_out_of_range_is_a_clear_error():
    assert CompareGrid(reconstruction_block=-3).reconstruction_block == -3  # depth 3: fine
    with pytest.raises(ValueError, match=r"reconstruction_block 3 is out of range .* 3 blocks"):
        CompareGrid(reconstruction_block=3)
    with pytest.raises(ValueError, match=r"use -5\.\.4"):
        CompareGrid(reconstruction_block=-6, settings={"encoder_depth": 5})


def _row(k, base, **extra):
    row = {"num_tokens": k, "resolution": 128, "grid": [16, 16], "block": -1}
    row |= {m: base + i / 100 for i, m in enumerate(METHODS)}
    return row | extra


def test_table_renders_every_sink_and_metric():
    text = reconstruction_tables([_row(16, 0.5)])
    assert "keys (as ToMe) or values of the last block" in text
    assert (
        "| K | input | grid | sink | ToMe (features) | ToMe (keys) | ToMe (values) | avg-pool | "
        "ToMe (features) / avg-pool |"
    ) in text
    assert "| 16 | 128 px | 16x16 | top-left | 0.5000 | 0.5100 | 0.5200 | 0.5600 | 0.89 |" in text
    assert "| 16 | 128 px | 16x16 | random | 0.5300 | 0.5400 | 0.5500 | 0.5600 | 0.95 |" in text
    assert "characters read" not in text and "Ink patches" not in text
    chars = {f"char_{m}": 0.1 * (i + 1) for i, m in enumerate(("none", *METHODS))}
    text = reconstruction_tables([_row(4, 0.7, block=2, **chars)])
    assert "values of block 2" in text
    assert "| 4 | 128 px | top-left | 10.0 | 20.0 | 30.0 | 40.0 | 80.0 |" in text
    assert "| 4 | 128 px | random | 10.0 | 50.0 | 60.0 | 70.0 | 80.0 |" in text


def test_table_of_rows_written_before_the_a10_variants():
    old = {"num_tokens": 16, "resolution": 64, "grid": [8, 8]}
    old |= {"tome": 0.25, "tome_keys": 0.3, "avgpool": 0.5}
    text = reconstruction_tables([old])
    assert "| 16 | 64 px | 8x8 | top-left | 0.2500 | 0.3000 | n/a | 0.5000 | 0.50 |" in text
    assert "| random |" not in text


def test_seeds_table_has_a_line_per_measure_and_sink():
    rows = {
        seed: {
            "reconstruction": [
                _row(16, 0.5 + seed / 10, char_none=0.8, char_tome=0.5, sep_tome=0.2 + seed / 10)
            ]
        }
        for seed in (0, 1)
    }
    over = reconstruction_over_seeds(rows)
    assert "block" not in over["16 @ 128 px"]  # an int, not a measure
    assert over["16 @ 128 px"]["tome_values_random"]["mean"] == pytest.approx(0.6)
    assert over["16 @ 128 px"]["tome"]["sd"] == pytest.approx(math.sqrt(0.005))
    summary = {"seeds": [0, 1], "cells": {}, "reconstruction": over, "reconstruction_block": 1}
    text = seeds_table(summary)
    assert "keys and values of block 1" in text
    assert "| K @ input | measure | sink | none | ToMe (features) | ToMe (keys) |" in text
    assert (
        "| 16 @ 128 px | reconstruction error | random | - | 0.580 ± 0.071 | 0.590 ± 0.071 | "
        "0.600 ± 0.071 | 0.610 ± 0.071 |"
    ) in text
    # characters read for the paper's ToMe only (as older runs have): no random line
    assert "| 16 @ 128 px | characters read | top-left | 80.0 ± 0.0 | 50.0 ± 0.0 | - | - | - |" in (
        text
    )
    assert "| characters read | random |" not in text
    assert "| 16 @ 128 px | ink-token distance from blank | top-left | - | 0.250 ± 0.071 |" in text
    assert "ink-token distance from blank (1 - cosine after a LayerNorm)" in text


def test_seeds_table_of_runs_before_the_ink_distance_does_not_announce_it():
    rows = {
        seed: {"reconstruction": [_row(16, 0.5, char_none=0.8, char_tome=0.5)]} for seed in (0, 1)
    }
    summary = {"seeds": [0, 1], "cells": {}, "reconstruction": reconstruction_over_seeds(rows)}
    text = seeds_table(summary)
    assert "characters read (% of ink patches)" in text
    assert "ink-token distance" not in text and "LayerNorm" not in text


def test_context_on_dense_pages_reads_characters_for_every_variant(tmp_path):
    from recipes.quickstart.training import synthdoc_config
    from vlm.data import generate_records

    grid = CompareGrid(
        name="dense",
        out=str(tmp_path),
        grid={"num_tokens": [16]},
        settings={"image_size": 128, "vocabulary": None, "levels": ["dense"]},
    )
    context = Context(grid, tmp_path, echo=lambda _: None)
    context._parts = SimpleNamespace(encoder=load_radio(FIXTURE))
    context._data = SimpleNamespace(
        train_records=list(generate_records(8, synthdoc_config(context.settings, 0))),
        eval_records=list(generate_records(4, synthdoc_config(context.settings, 1000))),
    )
    (row,) = context.reconstruction()
    assert row["grid"] == [8, 8] and row["block"] == -1
    assert set(row) == {"num_tokens", "resolution", "grid", "block", *METHODS} | {
        f"char_{m}" for m in ("none", *METHODS)
    } | {f"sep_{m}" for m in METHODS}
    assert all(0 <= row[f"char_{m}"] <= 1 for m in ("none", *METHODS))
    assert all(0 <= row[f"sep_{m}"] <= 2 for m in METHODS)  # 1 - cos; NaN (no ink) fails
    assert "mean 1 - cosine, i.e. 1 - correlation" in reconstruction_tables([row])


def test_ink_separation_exact_on_hand_made_tokens():
    """After the LayerNorm, [1, -1, 1, -1] (blank) and [1, 1, -1, -1] (ink) are orthogonal:
    distance 1; an ink token pointing away from blank: 2; one along it: 0."""
    labels = torch.tensor([[[BACKGROUND, BACKGROUND], [BACKGROUND, 7]]])  # patch 3 is ink
    assignment = torch.tensor([[0, 0, 1, 1]])  # token 1 holds the ink patch
    sizes = torch.tensor([[2.0, 2.0]])
    blank = [1.0, -1.0, 1.0, -1.0]
    for ink, expected in (([1.0, 1.0, -1.0, -1.0], 1.0), ([-3.0, 3.0, -3.0, 3.0], 2.0),
                          ([5.0, -5.0, 5.0, -5.0], 0.0)):  # fmt: skip
        tokens = torch.tensor([[blank, ink]])
        assert ink_separation(tokens, assignment, sizes, labels) == pytest.approx(expected)
    all_ink = torch.full_like(labels, 7)
    assert math.isnan(ink_separation(torch.tensor([[blank, blank]]), assignment, sizes, all_ink))
    no_ink = torch.full_like(labels, BACKGROUND)
    assert math.isnan(ink_separation(torch.tensor([[blank, blank]]), assignment, sizes, no_ink))


def test_ink_separation_ignores_empty_tokens_and_pools_pages():
    """An empty token (ToMe's unused slots, sizes 0) is neither blank nor ink, however far off
    its vector; two pages' tokens are pooled (the blank mean over both); int32 indices work."""
    blank, ink, far = [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0], [9.0, 0.0, 0.0, -9.0]
    labels = torch.tensor([[[BACKGROUND, BACKGROUND], [BACKGROUND, 7]]]).repeat(2, 1, 1)
    assignment = torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.int32)
    sizes = torch.tensor([[2.0, 2.0, 0.0], [3.0, 1.0, 0.0]])
    opposite = [-1.0, 1.0, -1.0, 1.0]  # page 2's ink token: distance 2 from blank
    tokens = torch.tensor([[blank, ink, far], [blank, opposite, far]])
    assert ink_separation(tokens, assignment, sizes, labels) == pytest.approx((1.0 + 2.0) / 2)


def test_analysis_only_run_writes_the_features_tables_over_seeds(tmp_path):
    """`compare --analysis-only K,K --seeds A,B`: data and stage 0 per seed, no cell trained,
    then analysis.json / analysis.md with every measure at each budget over the seeds."""
    from recipes.cli import main

    out = tmp_path / "analysis"
    code = main(
        ["compare", "recipes/compare/dense_word.yaml", "--ci", "--seeds", "0,1",
         "--analysis-only", "4,16", "--threads", "1", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert not list(out.glob("seed*/cells/*/cell.json"))  # nothing trained
    over = json.loads((out / "analysis.json").read_text())["reconstruction"]
    assert set(over) == {"4 @ 128 px", "16 @ 128 px"}
    assert over["16 @ 128 px"]["sep_avgpool"]["n"] == 2
    text = (out / "analysis.md").read_text()
    assert text.startswith("# compare: dense_word, the stage-0 features over seeds [0, 1]")
    assert "| 4 @ 128 px | ink-token distance from blank | top-left | - |" in text
    assert "| setting |" not in text  # no empty table of cells

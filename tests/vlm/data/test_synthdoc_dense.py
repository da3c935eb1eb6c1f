"""synthdoc's dense level: several small items, one asked; per-patch character targets that
line up with the rendered pixels (a patch with no ink is background; a glyph's patches carry
its class)."""

from __future__ import annotations

import numpy as np
import pytest

from vlm.data import SynthDocConfig, generate_records
from vlm.data.synthdoc_config import NUMBER_KEYS, WORD_KEYS
from vlm.data.synthdoc_dense import BACKGROUND, CHAR_CLASSES, QUARTERS, dense_targets
from vlm.data.synthdoc_draw import font

CONFIG = SynthDocConfig(image_size=128, levels=("dense",), seed=3)


@pytest.fixture(scope="module")
def records():
    return list(generate_records(60, CONFIG))


def ink(image, grid: int, threshold: int = 240, min_pixels: int = 1) -> np.ndarray:
    """[grid, grid] bool: the patch has ``min_pixels`` pixels darker than ``threshold`` (the
    paper is 250)."""
    pixels = np.asarray(image.convert("L"))
    side = pixels.shape[0] // grid
    dark = (pixels.reshape(grid, side, grid, side) < threshold).sum(axis=(1, 3))
    return dark >= min_pixels


def test_every_style_asks_one_of_several_items(records):
    assert {r.style for r in records} == {"textvqa", "docvqa", "ocrbench"}
    for r in records:
        assert r.image.size == (128, 128) and len(r.meta["items"]) >= 3
        assert r.answers[0] in " ".join(r.meta["texts"])
        if r.style == "textvqa":
            assert r.question.removeprefix("what word is at the ").rstrip("?") in QUARTERS
        if r.style == "ocrbench":
            assert r.answers[0].isdigit() and r.meta["question_type"] == "Digit String Recognition"
    answers = {r.answers[0] for r in generate_records(400, CONFIG)}
    assert len(answers) >= 100  # a large answer vocabulary: words and numbers


def test_the_lite_level_asks_the_one_item_of_its_kind():
    config = SynthDocConfig(image_size=128, levels=("dense-lite",), seed=3)
    records = list(generate_records(300, config))
    assert {r.style for r in records} == {"textvqa", "docvqa", "ocrbench"}
    for r in records:
        texts, answer = r.meta["texts"], r.answers[0]
        assert r.image.size == (128, 128) and len(texts) == 3  # the answer and two distractors
        assert texts[0].endswith(answer) and not any(answer in t for t in texts[1:])
        # the answer is the only item of its kind: a word among numbers or the reverse
        kinds = [t.split(": ")[-1].isdigit() for t in texts]
        assert kinds[0] != kinds[1] and kinds[1] == kinds[2], texts
        if r.style == "textvqa":
            assert r.question == "what word is written on the page?" and answer.isalpha()
        if r.style == "docvqa":
            assert r.question == f"What is the {texts[0].split(':')[0]}?"
        if r.style == "ocrbench":
            assert answer.isdigit() and 2 <= len(answer) <= 4
    assert len({r.answers[0] for r in records}) >= 100  # words and numbers
    assert "items" in records[0].meta  # the dense stage 0's targets


@pytest.mark.parametrize("level", ["easy", "medium", "dense", "dense-lite"])
def test_form_values_choose_which_fields_a_form_question_asks(level):
    def forms(form_values):
        config = SynthDocConfig(
            image_size=128, levels=(level,), styles=("docvqa",), form_values=form_values, seed=5
        )
        return list(generate_records(40, config))

    words, numbers = forms("words"), forms("numbers")
    assert all(r.answers[0].isalpha() for r in words)
    assert all(r.answers[0].replace(".", "").isdigit() for r in numbers)
    assert {r.question.split()[-1].rstrip("?") for r in words} <= set(WORD_KEYS)
    assert {r.question.split()[-1].rstrip("?") for r in numbers} <= set(NUMBER_KEYS)
    if level != "easy":  # easy asks one word field either way; the others mix by default
        assert {r.answers[0].isalpha() for r in forms("any")} == {True, False}
    with pytest.raises(ValueError, match="form_values must be one of"):
        SynthDocConfig(form_values="digits")


def test_the_default_levels_do_not_include_dense():
    assert not {"dense", "dense-lite"} & set(SynthDocConfig().levels)


@pytest.mark.parametrize("level", ["dense", "dense-lite"])
def test_targets_line_up_with_the_rendered_ink(level):
    records = list(generate_records(60, SynthDocConfig(image_size=128, levels=(level,), seed=3)))
    labelled = blank_labelled = dark = dark_unlabelled = 0
    for r in records:
        labels = dense_targets(r.meta["items"], 128, 16) != BACKGROUND
        # solid: a stroke's worth of dark pixels (6 of 64), not a glyph's 1 px edge
        any_ink, solid = ink(r.image, 16), ink(r.image, 16, threshold=128, min_pixels=6)
        assert labels.shape == (16, 16)
        assert labels.sum() >= 0.5 * solid.sum()  # every page: most inked patches labelled
        labelled, blank_labelled = (
            labelled + labels.sum(),
            blank_labelled + (labels & ~any_ink).sum(),
        )
        dark, dark_unlabelled = dark + solid.sum(), dark_unlabelled + (solid & ~labels).sum()
    # a patch with no ink is background (a glyph box's blank corner: under 1 % of labels)
    assert blank_labelled <= 0.01 * labelled
    # a patch with solid ink carries a character (all but glyph slivers at patch edges)
    assert dark_unlabelled <= 0.25 * dark


def test_a_glyphs_patches_carry_its_class():
    # one item: "7" alone at a known place; its patches are "7", everything else background
    labels = dense_targets([["7", 40, 40, 12, None]], 128, 32)  # 4 px patches
    assert set(np.unique(labels)) == {BACKGROUND, CHAR_CLASSES.index("7")}
    rows, cols = np.nonzero(labels)
    left, top, right, bottom = (40 + v for v in font(12).getbbox("7", anchor="la"))
    assert cols.min() * 4 <= left + 1 and (cols.max() + 1) * 4 >= right - 1
    assert rows.min() * 4 <= top + 1 and (rows.max() + 1) * 4 >= bottom - 1
    assert ((cols + 1) * 4 > left).all() and (cols * 4 < right).all()
    # the same page seen at 256 px: the same glyph on a finer grid, same class
    assert set(np.unique(dense_targets([["7", 40, 40, 12, None]], 128, 64))) == set(
        np.unique(labels)
    )
    words = dense_targets([["ab: 9", 10, 10, 12, None]], 128, 64)
    assert {CHAR_CLASSES[i] for i in np.unique(words)} == {"<bg>", "a", "b", "<other>", "9"}

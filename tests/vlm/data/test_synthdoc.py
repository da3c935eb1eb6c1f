"""synthdoc: determinism, answerable questions in every style and level, the easy level."""

from __future__ import annotations

import numpy as np
import pytest

from vlm.data import (
    LEVELS,
    STYLES,
    WORDS,
    SynthDocConfig,
    generate_record,
    generate_records,
    plan_record,
    to_messages,
)
from vlm.data.synthdoc import POST_PROMPT


def same(a, b) -> bool:
    return (
        a.id == b.id
        and a.question == b.question
        and a.answers == b.answers
        and a.style == b.style
        and a.meta == b.meta
        and a.image.size == b.image.size
        and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    )


def test_same_config_same_records_however_many_are_drawn():
    config = SynthDocConfig(image_size=64, seed=3)
    ten = list(generate_records(10, config))
    again = list(generate_records(10, SynthDocConfig(image_size=64, seed=3)))
    assert all(same(a, b) for a, b in zip(ten, again, strict=True))
    four = list(generate_records(4, config))
    assert all(same(a, b) for a, b in zip(four, ten[:4], strict=True))
    assert same(generate_record(7, config), ten[7])
    assert same(next(generate_records(1, config, start=5)), ten[5])
    other = list(generate_records(10, SynthDocConfig(image_size=64, seed=4)))
    assert sum(same(a, b) for a, b in zip(ten, other, strict=True)) == 0
    assert len({r.id for r in ten}) == 10


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("style", STYLES)
def test_every_question_is_answerable_from_the_image(style, level):
    config = SynthDocConfig(image_size=96, styles=(style,), levels=(level,), seed=1, page_prob=0.5)
    for record in generate_records(12, config):
        assert record.style == style and record.meta["level"] == level
        answer = record.answers[0]
        assert answer and record.question.endswith("?")
        # the answer is one of the drawn lines (forms: the value part of "key: value")
        assert any(answer in text for text in record.meta["texts"]), (answer, record.meta)
        # ... and something was drawn where the answer is
        x0, y0, x1, y1 = record.meta["answer_box"]
        assert 0 <= x0 < x1 <= record.image.width and 0 <= y0 < y1 <= record.image.height
        patch = np.asarray(record.image.crop((x0, y0, x1, y1)), dtype=np.float32)
        assert patch.std() > 10, f"no visible text in the answer box of {record.id}"
        if level != "hard":
            assert record.image.size == (96, 96)


def test_the_easy_level_shows_one_vocabulary_word():
    vocabulary = list(WORDS[:20])
    config = SynthDocConfig(image_size=64, levels=("easy",), vocabulary=vocabulary, seed=0)
    records = list(generate_records(60, config))
    assert {r.style for r in records} == set(STYLES)
    for record in records:
        assert record.answers[0] in vocabulary
        assert record.image.size == (64, 64)
        assert len(record.meta["texts"]) == 1  # one word (docvqa: one "key: value" line)
    sizes = {item.size for i in range(60) for item in plan_record(i, config).page.items}
    assert min(sizes) >= 13  # large text: 0.2-0.28 of the image side


def test_questions_of_harder_levels_pin_down_one_answer():
    config = SynthDocConfig(image_size=128, styles=("textvqa",), levels=("medium", "hard"), seed=2)
    seen = set()
    for record in generate_records(40, config):
        words, question = record.meta["texts"], record.question
        if "written in" in question:
            colour = question.rsplit(" ", 1)[1].rstrip("?")
            assert record.meta["inks"][words.index(record.answers[0])] == colour
            assert len(set(record.meta["inks"])) == len(words)
            seen.add("colour")
        elif "at the top" in question:
            assert record.answers[0] == words[0]
            seen.add("top")
        elif "at the bottom" in question:
            assert record.answers[0] == words[-1]
            seen.add("bottom")
        else:
            pytest.fail(f"a harder-level question this test does not check: {question!r}")
    assert seen == {"colour", "top", "bottom"}  # every form was checked at least once


def test_to_messages_asks_what_lmms_eval_asks():
    record = next(generate_records(1, SynthDocConfig(image_size=64, styles=("textvqa",))))
    user, assistant = to_messages(record)
    assert user["role"] == "user" and assistant == {
        "role": "assistant",
        "content": record.answers[0],
    }
    assert user["content"][0] == {"type": "image"}
    assert user["content"][1]["text"] == record.question.capitalize() + POST_PROMPT
    plain = to_messages(record, lmms_eval_prompt=False)
    assert plain[0]["content"][1]["text"] == record.question
    ocr = next(generate_records(1, SynthDocConfig(image_size=64, styles=("ocrbench",))))
    assert to_messages(ocr)[0]["content"][1]["text"] == "What is written in the image?"


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="styles must be a non-empty subset"):
        SynthDocConfig(styles=("chartqa",))
    with pytest.raises(ValueError, match=r"words \['extraordinarily'\] do not fit a 48 px"):
        SynthDocConfig(image_size=48, vocabulary=["cat", "extraordinarily"], min_font_size=9)
    with pytest.raises(ValueError, match="single words without spaces"):
        SynthDocConfig(vocabulary=["two words"])
    with pytest.raises(ValueError, match="image_size must be >= 48"):
        SynthDocConfig(image_size=32)
    config = SynthDocConfig(styles=["docvqa"], levels=["easy"])  # YAML lists are fine
    assert config.styles == ("docvqa",)

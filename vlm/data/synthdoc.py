"""synthdoc: seeded synthetic documents with questions, learnable by a tiny model on CPU.

    >>> config = SynthDocConfig(image_size=64, levels=("easy",), vocabulary=WORDS[:20], seed=0)
    >>> records = list(generate_records(1000, config))      # SynthDocRecord(id, image, ...)
    >>> to_messages(records[0])                             # user: image + question; assistant

Three styles, modelled on the benchmarks the toolkit evaluates on:

- ``textvqa``  (read a word in a scene): words on signs or plain paper; "What word is written
  in red?", "What is the word at the top?".
- ``docvqa``   (answer from a form or table): "key: value" forms, small tables, large pages
  with much white space; "What is the total?", "What is the price of apple?".
- ``ocrbench`` (transcribe): a word, a digit string, random letters, a line of words,
  rotated text; "What is written in the image?".

Levels: ``easy`` = ONE vocabulary word per image (docvqa: one "key: value" line whose value
is a vocabulary word), large dark text on plain light paper, every answer a vocabulary word:
with ``image_size=64`` and ~20 words it is the set-up shared/notes/quickstart-calibration.md
found learnable in minutes on CPU (with an encoder warm-up); a 3-layer CNN reads its answer
word perfectly (held out) after ~200 steps. ``medium`` = 2 words / 3-4 form lines / digits /
random letters, smaller text, some noise. ``hard`` = up to 3 words, tables, 4-6 form lines,
prices, rotated lines, noisier backgrounds, large pages (``page_prob``).

Determinism: record ``i`` depends only on (``config``, ``i``): it is drawn from its own RNG,
so the same config gives the same records however many are drawn. ``meta`` holds what was
drawn (``texts``: every rendered line; ``answer_box``: where the answer is), so every answer
can be checked to be on the image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from .synthdoc_draw import Page, render, text_width
from .synthdoc_styles import (
    BUILDERS,
    DIGITS,
    IRREGULAR,
    LEVELS,
    NON_SEMANTIC,
    REGULAR,
    STYLES,
    WORDS,
    StyleContext,
    margin,
)

__all__ = [
    "DIGITS",
    "IRREGULAR",
    "LEVELS",
    "NON_SEMANTIC",
    "REGULAR",
    "STYLES",
    "WORDS",
    "Plan",
    "SynthDocConfig",
    "SynthDocRecord",
    "eval_prompt",
    "generate_record",
    "generate_records",
    "plan_record",
    "to_messages",
]


@dataclass
class SynthDocConfig:
    """What synthdoc draws. Lists from YAML are accepted for tuple fields.

    image_size:  side in px of every image (scenes, forms, transcriptions), >= 48; large pages
                 are ``page_scale`` x this, with text sized for ``image_size``.
    vocabulary:  the words drawn (None: the built-in ``WORDS``); a small closed list makes the
                 task learnable by a word-level tiny model. Each must fit one line of the image.
    styles / levels: what each record draws from, uniformly ("textvqa" | "docvqa" |
                 "ocrbench"; "easy" | "medium" | "hard").
    seed:        with the config, fixes every record.
    font_scale:  easy-level font size range as fractions of ``image_size`` (medium x0.8,
                 hard x0.65); never below ``min_font_size`` px.
    fonts:       .ttf/.otf files to draw with (one per record); empty: Pillow's bundled font.
    colors:      coloured inks/papers; False: near-black on near-white everywhere.
    noise_prob:  chance of a noisy background at hard level (half of it at medium).
    page_prob:   chance that a hard docvqa/ocrbench record is a large, mostly white page.
    """

    image_size: int = 128
    vocabulary: list[str] | None = None
    styles: tuple[str, ...] = STYLES
    levels: tuple[str, ...] = LEVELS
    seed: int = 0
    font_scale: tuple[float, float] = (0.2, 0.28)
    min_font_size: int = 7
    fonts: tuple[str, ...] = ()
    colors: bool = True
    noise_prob: float = 0.5
    page_prob: float = 0.3
    page_scale: int = 4

    def __post_init__(self) -> None:
        for name in ("styles", "levels", "fonts", "font_scale"):
            setattr(self, name, tuple(getattr(self, name)))
        for name, value in (("image_size", self.image_size), ("page_scale", self.page_scale)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SynthDocConfig.{name} must be a positive int; got {value!r}")
        if self.image_size < 48:
            raise ValueError(f"SynthDocConfig.image_size must be >= 48 px; got {self.image_size}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"SynthDocConfig.seed must be an int >= 0; got {self.seed!r}")
        for name, allowed in (("styles", STYLES), ("levels", LEVELS)):
            values = getattr(self, name)
            if not values or not set(values) <= set(allowed):
                raise ValueError(
                    f"SynthDocConfig.{name} must be a non-empty subset of {allowed}; got {values}"
                )
        lo, hi = self.font_scale
        if not 0 < lo <= hi < 1:
            raise ValueError(f"font_scale must be (lo, hi) with 0 < lo <= hi < 1; got {(lo, hi)}")
        for name in ("noise_prob", "page_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"SynthDocConfig.{name} must be in [0, 1]; got {getattr(self, name)}"
                )
        if self.vocabulary is not None:
            self.vocabulary = list(self.vocabulary)
            bad = [
                w
                for w in self.vocabulary
                if not isinstance(w, str) or not w or w != w.strip() or any(c.isspace() for c in w)
            ]
            if not self.vocabulary or bad:
                raise ValueError(
                    f"SynthDocConfig.vocabulary must be a non-empty list of single words without "
                    f"spaces; bad entries: {bad[:5]}"
                )
        room = self.image_size - 2 * margin(self.image_size)
        for path in self.fonts or (None,):
            if too_wide := [
                w for w in self.words if text_width(w, self.min_font_size, path) > room
            ]:
                raise ValueError(
                    f"words {too_wide[:5]} do not fit a {self.image_size} px image even at "
                    f"min_font_size={self.min_font_size} (font {path or 'default'}); use a larger "
                    "image_size or shorter words"
                )

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.vocabulary) if self.vocabulary is not None else WORDS


@dataclass
class SynthDocRecord:
    """One sample: ``image`` RGB; ``answers[0]`` is the training target (all are correct)."""

    id: str
    image: Image.Image
    question: str
    answers: list[str]
    style: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """A record before drawing: everything but the pixels (cheap: no image is made)."""

    id: str
    page: Page
    question: str
    answers: list[str]
    style: str
    meta: dict[str, Any]


def plan_record(index: int, config: SynthDocConfig) -> Plan:
    """The content, layout and question of record ``index`` (deterministic, no drawing)."""
    rng = random.Random(f"synthdoc/{config.seed}/{index}")  # str seeds hash stably (sha512)
    style, level = rng.choice(config.styles), rng.choice(config.levels)
    ctx = StyleContext(rng, config, level)
    page, question, answers, meta = BUILDERS[style](ctx)
    page.noise_seed = rng.getrandbits(63)
    meta = {"level": level, "index": index, "seed": config.seed, **meta}
    return Plan(f"synthdoc-{config.seed}-{index:07d}", page, question, answers, style, meta)


def generate_record(index: int, config: SynthDocConfig) -> SynthDocRecord:
    """Record ``index`` of the sequence ``config`` defines."""
    plan = plan_record(index, config)
    return SynthDocRecord(
        plan.id, render(plan.page), plan.question, plan.answers, plan.style, plan.meta
    )


def generate_records(num: int, config: SynthDocConfig, start: int = 0) -> Iterator[SynthDocRecord]:
    """Records ``start .. start+num-1``; the same config always gives the same records."""
    if num < 0 or start < 0:
        raise ValueError(f"num and start must be >= 0; got num={num}, start={start}")
    for index in range(start, start + num):
        yield generate_record(index, config)


# lmms-eval's prompts (tasks/{textvqa,docvqa}/*.yaml, utils.py): training on the same text
# means an evaluation asks exactly what the model was trained on
POST_PROMPT = "\nAnswer the question using a single word or phrase."


def eval_prompt(question: str, style: str) -> str:
    """The user text lmms-eval builds for a record of ``style`` (default model kwargs)."""
    if style == "textvqa":
        return question.capitalize() + POST_PROMPT
    if style == "docvqa":
        return question + POST_PROMPT
    return question.strip()


def to_messages(record: SynthDocRecord, *, lmms_eval_prompt: bool = True) -> list[dict]:
    """A user turn (an image item + the question) and an assistant turn (``answers[0]``).

    lmms_eval_prompt: phrase the question as lmms-eval's task does for this style (textvqa /
        docvqa add "Answer the question using a single word or phrase."); False: as is.
    The image item carries no image: pass ``record.image`` to the processor alongside.
    """
    text = eval_prompt(record.question, record.style) if lmms_eval_prompt else record.question
    return [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        {"role": "assistant", "content": record.answers[0]},
    ]

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
prices, rotated lines, noisier backgrounds, large pages (``page_prob``). ``dense`` = several
small items on a mostly blank page, one asked (``synthdoc_dense``; per-patch character targets
from ``dense_targets``): the level where what a token compressor keeps matters;
``dense-lite`` = the same pages, asking for the one item of its kind (a word among numbers).

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

from .synthdoc_config import (
    DIGITS,
    IRREGULAR,
    LEVELS,
    NON_SEMANTIC,
    REGULAR,
    STYLES,
    WORDS,
    StyleContext,
    SynthDocConfig,
)
from .synthdoc_dense import BUILDERS as DENSE_BUILDERS
from .synthdoc_dense import LITE_BUILDERS
from .synthdoc_draw import Page, render
from .synthdoc_styles import BUILDERS

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
    builders = {"dense": DENSE_BUILDERS, "dense-lite": LITE_BUILDERS}.get(level, BUILDERS)
    page, question, answers, meta = builders[style](ctx)
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

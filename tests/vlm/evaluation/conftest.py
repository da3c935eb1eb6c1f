"""Shared fixtures: a tiny saved VLM and a tiny local data folder in the official schemas.

The documents are chosen for the scoring tests: each has a prediction in ``PREDICTIONS``
(exact, case-changed, with punctuation, partially wrong, with a stop string), so the scores
lmms-eval computes are known.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from PIL import Image

import vlm
from encoder.tiny import write_tiny_radio
from vlm.evaluation.runner import FILELOCK_HINT
from vlm.evaluation.schemas import build_local_dataset
from vlm.tiny import tiny_llm, tiny_tokenizer

# simple_evaluate fails on filelock 4 (lmms-eval 0.7.3 imports filelock._api)
needs_runnable_lmms_eval = pytest.mark.skipif(
    importlib.util.find_spec("filelock._api") is None, reason=FILELOCK_HINT
)


def image(seed: int, height: int = 64, width: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


TEXTVQA = [
    {"question": "what brand is the phone?", "answers": ["nokia"] * 10},
    {"question": "what number is on the bus?", "answers": ["12"] * 7 + ["twelve"] * 3},
    {"question": "what drink is shown?", "answers": ["coca cola"] * 2 + ["coke"] * 8},
    {"question": "what does the sign say?", "answers": ["stop"] * 10},
]
DOCVQA = [
    {"question": "What is the date?", "answers": ["May 5, 1990"]},
    {"question": "Who signed the letter?", "answers": ["J. Smith", "John Smith"]},
    {"question": "What is the total?", "answers": ["42"]},
]
OCRBENCH = [
    ("What is written on the sign?", ["STOP"], "IIIT5K", "Regular Text Recognition"),
    ("Write the formula.", ["x^2+1"], "HME100k", "Handwritten Mathematical Expression Recognition"),
    (
        "Write the expression.",
        ["a+b"],
        "HME100k",
        "Handwritten Mathematical Expression Recognition",
    ),
    ("What digits are shown?", ["0042"], "Digit", "Digit String Recognition"),
]

# question -> raw model output (before the task's stop strings)
PREDICTIONS = {
    "what brand is the phone?": "Nokia",  # case: EvalAI lower-cases -> 1
    "what number is on the bus?": " 12.\n",  # punctuation, whitespace -> 1
    "what drink is shown?": "coca cola",  # 2 of 10 annotators -> 0.6
    "what does the sign say?": "stops",  # partially wrong -> 0
    "What is the date?": "may 5, 1990",  # case -> ANLS 1
    "Who signed the letter?": "John Smith.\n\nThe end.",  # cut at "\n\n"; 1 edit -> 10/11
    "What is the total?": "forty",  # wrong -> 0
    "What is written on the sign?": "The sign says stop",  # substring, any case -> 1
    "Write the formula.": "X^2 + 1",  # HME100k is case-sensitive -> 0
    "Write the expression.": "a + b",  # spaces removed -> 1
    "What digits are shown?": "42",  # partially wrong -> 0
}


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """(model, processor, saved folder) of a tiny random VLM (RADIO-style tower, Qwen2 LLM)."""
    root = tmp_path_factory.mktemp("tiny_vlm")
    radio = write_tiny_radio(root / "radio", preferred_resolution=64)
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)  # room for the image tokens
    model, processor = vlm.build_vlm(
        radio, llm, tokenizer=tokenizer, compressor="tome", num_tokens=4
    )
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return model, processor, root / "model"


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory):
    """A local data folder: DIR/textvqa, DIR/docvqa, DIR/ocrbench."""
    root = tmp_path_factory.mktemp("eval_data")
    textvqa = [
        {**row, "image": image(i), "question_id": i, "image_id": f"t{i}"}
        for i, row in enumerate(TEXTVQA)
    ]
    docvqa = [
        {**row, "image": image(10 + i, 48, 64), "questionId": str(100 + i), "docId": i}
        for i, row in enumerate(DOCVQA)
    ]
    ocrbench = [
        {"image": image(20 + i), "question": q, "answer": a, "dataset": d, "question_type": t}
        for i, (q, a, d, t) in enumerate(OCRBENCH)
    ]
    for kind, rows in (("textvqa", textvqa), ("docvqa", docvqa), ("ocrbench", ocrbench)):
        build_local_dataset(kind, rows).save_to_disk(str(root / kind))
    return root

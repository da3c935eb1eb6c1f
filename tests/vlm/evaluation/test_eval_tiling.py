"""lmms-eval with a tiling model: the plugin loads the saved tiling, generates and scores with
tiles, and `radio-vlm eval` runs the offline tasks on it."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from image_kit import noise
from lmms_eval.api.instance import Instance

import vlm
from encoder.tiny import write_tiny_radio
from recipes.cli import main
from vlm.evaluation.model import RadioVLM
from vlm.evaluation.runner import FILELOCK_HINT
from vlm.tiny import tiny_llm, tiny_tokenizer

# as conftest's (imported by name, ``from conftest import`` picks whichever conftest came first)
needs_runnable_lmms_eval = pytest.mark.skipif(
    importlib.util.find_spec("filelock._api") is None, reason=FILELOCK_HINT
)

TILING = {"tile_size": 32, "max_tiles": 4}  # 2x2 patches of 16 px per tile; K = 4 each
DOCS = [
    {"image": noise(64, 64, seed=1), "question": "What is written here?"},  # 2x2 + thumbnail
    {"image": noise(32, 96, seed=2), "question": "Read the line."},  # 3x1 + thumbnail
    {"image": noise(32, 32, seed=3), "question": "Colour?"},  # one tile
]


@pytest.fixture(scope="module")
def tiled_dir(tmp_path_factory):
    """A tiny random VLM with tiling, saved (model + processor)."""
    root = tmp_path_factory.mktemp("tiled_vlm")
    radio = write_tiny_radio(root / "radio", preferred_resolution=64)
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)
    model, processor = vlm.build_vlm(radio, llm, tokenizer=tokenizer, num_tokens=4, tiling=TILING)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model"


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [
        Instance(kind, a, 0, metadata={"task": "t", "doc_id": i, "repeats": 1})
        for i, a in enumerate(args)
    ]


def visuals(doc):
    return [doc["image"]]


def test_the_plugin_generates_and_scores_with_tiles(tiled_dir):
    lm = RadioVLM(pretrained=str(tiled_dir), device="cpu", batch_size=3)
    lm.task_dict = {"t": {"test": DOCS}}
    assert lm.processor.tiling.to_dict() == {**TILING, "min_tiles": 1, "thumbnail": True}
    calls = []
    generate = lm.model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return generate(**kwargs)

    lm.model.generate = spy
    settings = {"max_new_tokens": 3, "until": ["\n\n"], "do_sample": False}
    gen = [(d["question"], dict(settings), visuals, i, "t", "test") for i, d in enumerate(DOCS)]
    batched = lm.generate_until(requests("generate_until", gen))
    assert len(calls) == 1 and calls[0]["pixel_values"].shape == (5 + 4 + 1, 3, 32, 32)
    image_token = lm.model.config.image_token_id
    per_sample = sorted((calls[0]["input_ids"] == image_token).sum(1).tolist())
    assert per_sample == [1 * 4, 4 * 4, 5 * 4]  # the plugin sorts by prompt length
    one = RadioVLM(model=lm.model, processor=lm.processor, device="cpu", batch_size=1)
    one.task_dict = lm.task_dict
    assert one.generate_until(requests("generate_until", gen)) == batched
    # scoring: the plugin's log-likelihood equals a direct forward on the processor's tiles
    scores = lm.loglikelihood(
        requests("loglikelihood", [(DOCS[0]["question"], " cat", visuals, 0, "t", "test")])
    )
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DOCS[0]["question"]}]}]  # fmt: skip
    prompt = lm.processor(images=[DOCS[0]["image"]], conversations=chat, add_generation_prompt=True)
    target = lm.processor.tokenizer.encode(" cat", add_special_tokens=False)
    ids = torch.cat([prompt["input_ids"], torch.tensor([target])], dim=1)
    with torch.no_grad():
        logits = lm.model(input_ids=ids, pixel_values=prompt["pixel_values"]).logits
    start = prompt["input_ids"].shape[1]
    logprobs = logits[0, start - 1 : start - 1 + len(target)].log_softmax(-1)
    expected = -float(logprobs.gather(-1, torch.tensor(target)[:, None]).sum()) / len(target)
    assert scores[0][0] == pytest.approx(expected, abs=1e-4)


@needs_runnable_lmms_eval
def test_radio_vlm_eval_runs_a_tiling_model(tiled_dir, eval_data, tmp_path):
    out = tmp_path / "run"
    argv = ["eval", "--pretrained", str(tiled_dir), "--data", str(eval_data), "--out", str(out),
            "--device", "cpu", "--limit", "2", "--gen-kwargs", "max_new_tokens=2"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"textvqa_val_local", "docvqa_val_local", "ocrbench_local"}
    assert all(isinstance(v, float) for values in metrics.values() for v in values.values())

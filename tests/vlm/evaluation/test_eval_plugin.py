"""RadioVLM, the lmms-eval model: requests in, answers / log-likelihoods out, on a tiny VLM."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from conftest import image
from lmms_eval.api.instance import Instance
from lmms_eval.models.registry_v2 import ModelRegistryV2

from vlm.evaluation.manifest import MANIFEST
from vlm.evaluation.model import RadioVLM

DOCS = [
    {"image": image(1, 64, 64), "question": "What is written here?"},
    {"image": image(2, 48, 64), "question": "Read the second line of the page, please."},
    {"image": image(3, 64, 32), "question": "Colour?"},
    {"image": image(4, 32, 64), "question": "How many words are on the sign in this photo?"},
]


def visuals(doc):
    return [doc["image"]]


def generation_requests(gen_kwargs, docs=DOCS):
    return [
        Instance(
            "generate_until",
            (doc["question"], dict(gen_kwargs), visuals, i, "t", "test"),
            0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, doc in enumerate(docs)
    ]


def plugin(tiny_vlm, batch_size=1, **kwargs):
    model, processor, _ = tiny_vlm
    lm = RadioVLM(model=model, processor=processor, device="cpu", batch_size=batch_size, **kwargs)
    lm.task_dict = {"t": {"test": DOCS}}
    return lm


def test_batched_generation_equals_one_by_one(tiny_vlm):
    settings = {"until": ["\n\n"], "max_new_tokens": 6, "temperature": 0, "do_sample": False}
    alone = plugin(tiny_vlm, batch_size=1).generate_until(generation_requests(settings))
    batched = plugin(tiny_vlm, batch_size=3).generate_until(generation_requests(settings))
    assert batched == alone
    assert len(set(alone)) > 1  # different prompts and images give different answers


def test_gen_kwargs_reach_generate(tiny_vlm, monkeypatch):
    lm = plugin(tiny_vlm, batch_size=4, max_new_tokens=4)
    calls = []
    generate = lm.model.generate

    def spy(**kwargs):
        out = generate(**kwargs)
        calls.append((kwargs, out.shape[1] - kwargs["input_ids"].shape[1]))
        return out

    monkeypatch.setattr(lm.model, "generate", spy)
    greedy = {"max_new_tokens": 3, "temperature": 0, "until": ["zzz"]}
    first = lm.generate_until(generation_requests(greedy))
    assert lm.generate_until(generation_requests(greedy)) == first  # greedy: deterministic
    kwargs, new_tokens = calls[0]
    assert kwargs["max_new_tokens"] == 3 and new_tokens <= 3
    assert kwargs["do_sample"] is False and "temperature" not in kwargs
    assert kwargs["stop_strings"] == ["zzz"]
    assert kwargs["repetition_penalty"] == 1.0  # not the LLM's generation_config default
    calls.clear()
    lm.generate_until(generation_requests({"temperature": 0.7, "top_p": 0.9}))
    kwargs, new_tokens = calls[0]
    assert kwargs["do_sample"] is True and kwargs["temperature"] == 0.7
    assert kwargs["top_p"] == 0.9 and kwargs["max_new_tokens"] == lm.max_new_tokens
    assert "stop_strings" not in kwargs
    calls.clear()
    lm.generate_until(generation_requests({"temperature": 0.7, "do_sample": False}))
    assert calls[0][0]["do_sample"] is False


def test_requests_with_different_settings_are_not_batched_together(tiny_vlm, monkeypatch):
    lm = plugin(tiny_vlm, batch_size=4)
    seen = []
    monkeypatch.setattr(
        lm, "_generate_batch", lambda batch, until: seen.append(len(batch)) or ["x"] * len(batch)
    )
    requests = (
        generation_requests({"max_new_tokens": 2})[:2]
        + generation_requests({"max_new_tokens": 5})[2:]
    )
    assert lm.generate_until(requests) == ["x"] * 4
    assert sorted(seen) == [2, 2]


def direct_scores(model, processor, context, continuation, picture):
    """(mean NLL, greedy) by one forward per continuation token over a growing prefix."""
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": context}]}]
    prompt = processor(conversations=chat, images=[picture], add_generation_prompt=True)
    target = processor.tokenizer.encode(continuation, add_special_tokens=False)
    ids, total, greedy = prompt["input_ids"][0].tolist(), 0.0, True
    for token in target:
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor([ids]), pixel_values=prompt["pixel_values"]
            ).logits[0, -1]
        logprobs = logits.float().log_softmax(-1)
        total += float(logprobs[token])
        greedy &= int(logprobs.argmax()) == token
        ids.append(token)
    return -total / len(target), greedy


def test_loglikelihood_equals_a_direct_forward(tiny_vlm):
    model, processor, _ = tiny_vlm
    lm = plugin(tiny_vlm, batch_size=3)
    # a continuation the model would produce greedily, and two it would not
    alone = plugin(tiny_vlm).generate_until(
        generation_requests({"max_new_tokens": 3, "until": []})[:1]
    )[0]
    continuations = [alone, " The answer is 7.", "no"]
    requests = [
        Instance(
            "loglikelihood",
            (DOCS[i]["question"], cont, visuals, i, "t", "test"),
            0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, cont in enumerate(continuations)
    ]
    scores = lm.loglikelihood(requests)
    for (nll, greedy), i, cont in zip(scores, range(3), continuations, strict=True):
        expected, expected_greedy = direct_scores(
            model, processor, DOCS[i]["question"], cont, DOCS[i]["image"]
        )
        assert nll == pytest.approx(expected, abs=1e-4)
        assert greedy == expected_greedy
    assert scores[0][1] is True and scores[1][1] is False
    # a callable target (output_type loglikelihood) and lmms-eval's 2-argument requests
    callable_target = Instance(
        "loglikelihood",
        (DOCS[0]["question"], lambda doc: " yes", visuals, 0, "t", "test"),
        0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    unconditional = Instance(
        "loglikelihood", ("", "yes"), 0, metadata={"task": "t", "doc_id": 0, "repeats": 1}
    )
    (ll_callable, _), (ll_plain, _) = lm.loglikelihood([callable_target, unconditional])
    assert ll_callable == pytest.approx(
        direct_scores(model, processor, DOCS[0]["question"], " yes", DOCS[0]["image"])[0], abs=1e-4
    )
    assert ll_plain > 0


def test_clean_keeps_the_model_and_multi_round_says_no(tiny_vlm):
    lm = plugin(tiny_vlm)
    lm.clean()
    assert isinstance(lm.model, torch.nn.Module)
    assert lm.generate_until(generation_requests({"max_new_tokens": 2})[:1])
    with pytest.raises(NotImplementedError, match="multi-round"):
        lm.generate_until_multi_round([])


def test_bad_arguments_fail_clearly(tiny_vlm):
    model, _, folder = tiny_vlm
    with pytest.raises(TypeError, match=r"unknown RadioVLM model arguments \['temprature'\]"):
        RadioVLM(pretrained=str(folder), temprature=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 'auto'"):
        RadioVLM(pretrained=str(folder), batch_size="auto")
    with pytest.raises(ValueError, match="model= needs its processor="):
        RadioVLM(model=model)
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        RadioVLM(pretrained=str(folder), dtype="fp8")
    lm = plugin(tiny_vlm)
    bad = Instance(
        "generate_until",
        ("Hi", {}, lambda doc: ["clip.mp4"], 0, "t", "test"),
        0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    with pytest.raises(TypeError, match="gave a str visual"):
        lm.generate_until([bad])


def test_loaded_from_a_folder_with_dtype(tiny_vlm):
    lm = RadioVLM(pretrained=str(tiny_vlm[2]), device="cpu", dtype="bfloat16")
    assert lm.model.dtype == torch.bfloat16
    assert lm.config._name_or_path == str(tiny_vlm[2])


def test_manifest_resolves_to_the_plugin():
    registry = ModelRegistryV2()
    registry.register_manifest(MANIFEST)
    assert registry.get_model_class("radio_vlm") is RadioVLM
    assert registry.get_model_class("radio-vlm") is RadioVLM


def test_entry_point_is_installed():
    points = importlib.metadata.entry_points(group="lmms_eval.models")
    ours = [p for p in points if p.value == "vlm.evaluation.manifest:MANIFEST"]
    assert [p.name for p in ours] == ["radio_vlm"], "pyproject.toml's entry point: pip install -e ."
    assert ours[0].load() is MANIFEST

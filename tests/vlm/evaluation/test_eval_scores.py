"""Scores through the whole path (plugin -> offline tasks -> lmms-eval) equal lmms-eval's own
metric functions on the same predictions: the plugin does not change the answers."""

from __future__ import annotations

import copy
import json

import datasets
import pytest
import yaml
from conftest import PREDICTIONS, needs_runnable_lmms_eval
from lmms_eval.api.metrics import anls
from lmms_eval.tasks.ocrbench import utils as ocrbench_utils
from lmms_eval.tasks.textvqa import utils as textvqa_utils
from lmms_eval.utils import load_yaml_config

import vlm.evaluation
from vlm.evaluation.generation import cut_at_stop
from vlm.evaluation.local_tasks import TASKS
from vlm.evaluation.model import RadioVLM

STOPS = {"textvqa": ["ASSISTANT:"], "docvqa": ["\n\n"], "ocrbench": ["\n\n"]}


class FixedAnswers(RadioVLM):
    """RadioVLM whose model call returns the prepared raw output for the question in the
    prompt; everything around it (batching, stop strings, result order) is the plugin's."""

    def _generate_batch(self, batch, until):
        # TextVQA's prompt capitalises the question
        return [
            next(v for q, v in PREDICTIONS.items() if q.capitalize() in r.context.capitalize())
            for r in batch
        ]


def expected_scores(data_dir):
    """Each task's metrics from lmms-eval's functions on the predictions, cut at the task's
    stop strings and stripped as lmms-eval strips every response before scoring."""

    def rows(kind):
        split = {"textvqa": "validation", "docvqa": "validation", "ocrbench": "test"}[kind]
        return list(datasets.load_from_disk(str(data_dir / kind))[split])

    def answer(kind, doc):
        return cut_at_stop(PREDICTIONS[doc["question"]], STOPS[kind]).strip()

    textvqa = [
        textvqa_utils.textvqa_process_results(copy.deepcopy(d), [answer("textvqa", d)])
        for d in rows("textvqa")
    ]
    docvqa = [
        anls(references=d["answers"], predictions=[answer("docvqa", d)])["anls"]
        for d in rows("docvqa")
    ]
    ocr = [
        ocrbench_utils.ocrbench_process_results(d, [answer("ocrbench", d)])["ocrbench_accuracy"]
        for d in rows("ocrbench")
    ]
    return {
        "textvqa_val_local": {"exact_match": sum(r["exact_match"] for r in textvqa) / len(textvqa)},
        "docvqa_val_local": {"anls": sum(docvqa) / len(docvqa)},
        "ocrbench_local": {
            "ocrbench_accuracy": sum(r["score"] for r in ocr) / 1000,
            "ocrbench_item_accuracy": sum(r["score"] for r in ocr) / len(ocr),
        },
    }


@needs_runnable_lmms_eval
def test_scores_equal_lmms_eval_metric_functions(tiny_vlm, eval_data, tmp_path):
    model, processor, _ = tiny_vlm
    lm = FixedAnswers(model=model, processor=processor, device="cpu", batch_size=2)
    expected = expected_scores(eval_data)
    # the numbers the predictions were designed for (conftest.PREDICTIONS)
    assert expected["textvqa_val_local"]["exact_match"] == pytest.approx((1 + 1 + 0.6 + 0) / 4)
    assert expected["docvqa_val_local"]["anls"] == pytest.approx((1 + 10 / 11 + 0) / 3)
    assert expected["ocrbench_local"]["ocrbench_item_accuracy"] == 0.5
    for run in ("first", "again"):  # the same instance twice: clean() keeps the model, and
        out = tmp_path / run  # OCRBench's global score table does not carry over
        metrics = vlm.evaluation.evaluate(
            lm, ["textvqa", "docvqa", "ocrbench"], data_dir=eval_data, output_dir=out,
            log_samples=True,
        )  # fmt: skip
        assert list(metrics) == ["textvqa_val_local", "docvqa_val_local", "ocrbench_local"]
        for task, values in expected.items():
            assert metrics[task] == pytest.approx(values, abs=1e-9), task
    # the raw answers reach lmms-eval unchanged (only cut at the stop strings)
    logged = [json.loads(line) for line in (out / "samples_docvqa_val_local.jsonl").open()]
    assert logged[1]["resps"] == ["John Smith."]
    logged = [json.loads(line) for line in (out / "samples_textvqa_val_local.jsonl").open()]
    assert logged[1]["resps"] == [" 12.\n"]
    # files the tasks write land in the output folder, not the working directory
    assert "Final Score(Total 1000): 2\n" in (out / "results" / "ocrbench_results.txt").read_text()
    assert list((out / "submissions").glob("textvqa_submission_*.json"))
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (
        "| ocrbench_local | ocrbench_item_accuracy | 0.5000 | 4 |"
        in (out / "metrics.md").read_text()
    )


def test_the_plugin_returns_answers_unchanged_but_cut_at_stop_strings(tiny_vlm):
    model, processor, _ = tiny_vlm
    from lmms_eval.api.instance import Instance

    lm = FixedAnswers(model=model, processor=processor, device="cpu", batch_size=3)
    questions = list(PREDICTIONS)
    lm.task_dict = {"t": {"test": [{"q": q} for q in questions]}}
    requests = [
        Instance(
            "generate_until",
            (q, {"until": ["\n\n", "The end"]}, None, i, "t", "test"),
            0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, q in enumerate(questions)
    ]
    answers = lm.generate_until(requests)
    expected = [PREDICTIONS[q].split("\n\n")[0] for q in questions]
    assert answers == expected
    assert answers[questions.index("what number is on the bus?")] == " 12.\n"


def test_local_tasks_match_lmms_eval_builtin_tasks():
    """The shipped YAMLs keep the prompt, generation settings and scoring of lmms-eval's
    installed textvqa_val / docvqa_val / ocrbench (guards against drift on upgrades)."""
    import lmms_eval.tasks

    builtin_dir = lmms_eval.tasks.__path__[0]
    builtin = {
        "textvqa": load_yaml_config(f"{builtin_dir}/textvqa/textvqa_val.yaml"),
        "docvqa": load_yaml_config(f"{builtin_dir}/docvqa/docvqa_val.yaml"),
        "ocrbench": load_yaml_config(f"{builtin_dir}/ocrbench/ocrbench.yaml"),
    }

    def name(fn):  # the same function, whichever module object loaded it
        return (fn.__code__.co_filename, fn.__qualname__) if callable(fn) else fn

    for kind, theirs in builtin.items():
        ours = load_yaml_config(str(TASKS[kind].yaml))
        assert ours["task"] == TASKS[kind].local and theirs["task"] == TASKS[kind].hub
        for key in ("generation_kwargs", "test_split", "output_type", "doc_to_target"):
            assert ours[key] == theirs[key], (kind, key)
        specific = theirs["lmms_eval_specific_kwargs"]["default"]
        assert ours["lmms_eval_specific_kwargs"]["default"] == specific
        for key in ("doc_to_visual", "doc_to_text"):
            assert name(ours[key]) == name(theirs[key]), (kind, key)
        their_metrics = [m["metric"] for m in theirs["metric_list"]]
        assert [m["metric"] for m in ours["metric_list"]][: len(their_metrics)] == their_metrics
        assert ours["dataset_kwargs"] == {"load_from_disk": True}
    textvqa = load_yaml_config(str(TASKS["textvqa"].yaml))
    assert name(textvqa["process_results"]) == name(builtin["textvqa"]["process_results"])
    assert "process_results" not in load_yaml_config(str(TASKS["docvqa"].yaml))
    with open(TASKS["ocrbench"].yaml) as f:  # our wrappers around lmms-eval's functions
        raw = f.read()
    assert "vlm.evaluation.task_utils.ocrbench_process_results" in raw
    assert yaml.safe_load(raw.replace("!function", "")) is not None

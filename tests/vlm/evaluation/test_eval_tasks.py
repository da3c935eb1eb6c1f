"""Local data folders, offline task folders, and the gen_kwargs mapping (no model runs)."""

from __future__ import annotations

import datasets
import pytest
from conftest import image
from lmms_eval.tasks import TaskManager

from vlm.evaluation.generation import cut_at_stop, decoding_settings, stop_strings, user_turn
from vlm.evaluation.local_tasks import resolve_tasks, write_task_dir
from vlm.evaluation.runner import _gen_kwargs_string, metrics_from_results
from vlm.evaluation.schemas import (
    FEATURES,
    OCRBENCH_QUESTION_TYPES,
    build_local_dataset,
    check_data_dir,
)


def test_check_data_dir_names_what_is_wrong(eval_data, tmp_path):
    assert check_data_dir(eval_data) == {"textvqa": 4, "docvqa": 3, "ocrbench": 4}
    with pytest.raises(FileNotFoundError, match=r"no docvqa data: .*export-eval-data"):
        check_data_dir(tmp_path, ["docvqa"])
    row = {"image": image(0), "question": "q?", "answers": ["a"], "questionId": "1"}
    wrong_split = datasets.DatasetDict({"test": build_local_dataset("docvqa", [row])["validation"]})
    wrong_split.save_to_disk(str(tmp_path / "docvqa"))
    with pytest.raises(ValueError, match=r"split 'validation'.*found \['test'\]"):
        check_data_dir(tmp_path, ["docvqa"])
    bad_type = {"image": image(0), "question": "q", "answer": ["a"], "dataset": "x",
                "question_type": "Font Recognition"}  # fmt: skip
    build_local_dataset("ocrbench", [bad_type]).save_to_disk(str(tmp_path / "ocrbench"))
    with pytest.raises(ValueError, match=r"\['Font Recognition'\] are not OCRBench's"):
        check_data_dir(tmp_path, ["ocrbench"])
    no_answers = datasets.Dataset.from_dict({"question": ["q"], "image": [image(0)]})
    datasets.DatasetDict({"validation": no_answers}).save_to_disk(str(tmp_path / "textvqa"))
    with pytest.raises(ValueError, match=r"lacks the columns \['answers', 'question_id'\]"):
        check_data_dir(tmp_path, ["textvqa"])


def test_build_local_dataset_has_the_official_schema():
    ds = build_local_dataset(
        "textvqa", [{"image": image(0), "question": "q?", "answers": ["a"] * 10, "question_id": 3}]
    )
    assert list(ds) == ["validation"]
    assert ds["validation"].features == FEATURES["textvqa"]
    assert ds["validation"][0]["ocr_tokens"] == [] and ds["validation"][0]["set_name"] == ""
    with pytest.raises(ValueError, match=r"lacks the columns \['question_id'\]"):
        build_local_dataset("textvqa", [{"image": image(0), "question": "q", "answers": []}])
    with pytest.raises(ValueError, match=r"columns \['answer'\] that the official schema"):
        build_local_dataset(
            "docvqa",
            [{"image": image(0), "question": "q", "answers": [], "questionId": "1", "answer": 1}],
        )


def test_ocrbench_question_types_are_lmms_evals_score_table():
    from lmms_eval.tasks.ocrbench import utils

    assert tuple(utils.OCRBench_score) == OCRBENCH_QUESTION_TYPES


def test_written_task_folder_is_an_lmms_eval_include_path(eval_data, tmp_path):
    folder = write_task_dir(eval_data, tmp_path / "tasks")
    manager = TaskManager("WARNING", include_path=str(folder), include_defaults=False)
    assert manager.all_tasks == ["docvqa_val_local", "ocrbench_local", "textvqa_val_local"]
    from lmms_eval.tasks import get_task_dict

    task = get_task_dict(["docvqa_val_local"], manager)["docvqa_val_local"]
    assert task.config.dataset_path == str(eval_data.resolve() / "docvqa")
    doc = task.test_docs()[1]
    assert doc["answers"] == ["J. Smith", "John Smith"]
    assert task.doc_to_text(doc) == (
        "Who signed the letter?\nAnswer the question using a single word or phrase."
    )


def test_short_task_names():
    assert resolve_tasks(["textvqa", " docvqa", "ocrbench", "mme"], local=True) == [
        "textvqa_val_local", "docvqa_val_local", "ocrbench_local", "mme",
    ]  # fmt: skip
    assert resolve_tasks("textvqa,docvqa,ocrbench".split(","), local=False) == [
        "textvqa_val", "docvqa_val", "ocrbench",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="no tasks given"):
        resolve_tasks(["", " "], local=True)


def test_decoding_settings():
    greedy = decoding_settings({"temperature": 0, "do_sample": False, "max_new_tokens": 32}, 128)
    assert greedy == {"max_new_tokens": 32, "do_sample": False, "num_beams": 1,
                      "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}  # fmt: skip
    assert decoding_settings({}, 7)["max_new_tokens"] == 7
    assert decoding_settings({}, 7)["do_sample"] is False
    sampled = decoding_settings({"temperature": 0.5, "top_p": 0.9}, 7)
    assert sampled["do_sample"] and sampled["temperature"] == 0.5 and sampled["top_k"] == 0
    assert decoding_settings({"do_sample": True}, 7)["temperature"] == 1.0
    with pytest.warns(UserWarning, match="image_aspect_ratio"):
        decoding_settings({"image_aspect_ratio": "pad"}, 7)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        decoding_settings({"max_new_tokens": 0}, 7)
    assert stop_strings({"until": "\n\n"}) == ["\n\n"]
    assert stop_strings({"until": ["", "A:"]}) == ["A:"]
    with pytest.raises(ValueError, match="'until' must be a string or a list"):
        stop_strings({"until": 3})
    assert cut_at_stop(" x\n\ny ASSISTANT: z", ["ASSISTANT:", "\n\n"]) == " x"
    assert cut_at_stop(" x. ", ["\n\n"]) == " x. "


def test_user_turn():
    pics = [image(0), image(1)]
    items = user_turn("Q?", pics, "<image>", None)[0]["content"]
    assert [i["type"] for i in items] == ["image", "image", "text"]
    assert user_turn("<image> a <image> b", pics, "<image>", "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image> a <image> b"},
    ]
    with pytest.raises(ValueError, match="holds 1 image markers '<image>' but it gave 2 images"):
        user_turn("<image> a", pics, "<image>", None)


def test_metrics_and_gen_kwargs_helpers():
    results = {"results": {"t": {"alias": "t", "anls,none": 0.5, "anls_stderr,none": "N/A",
                                 "anls_stderr_clt,none": 0.1, "submission,none": None}}}  # fmt: skip
    assert metrics_from_results(results) == {"t": {"anls": 0.5}}
    assert _gen_kwargs_string({"max_new_tokens": 8, "temperature": 0}) == (
        "max_new_tokens=8,temperature=0"
    )
    with pytest.raises(ValueError, match="scalar overrides"):
        _gen_kwargs_string({"until": ["a", "b"]})

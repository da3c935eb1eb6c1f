"""write_lmms_eval: synthdoc records in the official splits, columns and types, scored by lmms-eval."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from vlm.data import SynthDocConfig, generate_records
from vlm.evaluation.export import write_lmms_eval

# the hub datasets' features (dataset cards of lmms-lab/textvqa, lmms-lab/DocVQA, echo840/OCRBench)
S, LIST, INT32, INT64, IMAGE = "string", "list:string", "int32", "int64", "image"
OFFICIAL = {
    "textvqa": (
        "validation",
        {
            "image_id": S,
            "question_id": INT32,
            "question": S,
            "question_tokens": LIST,
            "image": IMAGE,
            "image_width": INT32,
            "image_height": INT32,
            "flickr_original_url": S,
            "flickr_300k_url": S,
            "answers": LIST,
            "image_classes": LIST,
            "set_name": S,
            "ocr_tokens": LIST,
        },
    ),
    "docvqa": (
        "validation",
        {
            "questionId": S,
            "question": S,
            "question_types": LIST,
            "image": IMAGE,
            "docId": INT64,
            "ucsf_document_id": S,
            "ucsf_document_page_no": S,
            "answers": LIST,
            "data_split": S,
        },
    ),
    "ocrbench": (
        "test",
        {"dataset": S, "question": S, "question_type": S, "answer": LIST, "image": IMAGE},
    ),
}


def kind(feature) -> str:
    if isinstance(feature, datasets.Image):
        return IMAGE
    if isinstance(feature, datasets.Value):
        return feature.dtype
    inner = getattr(feature, "feature", None)
    return f"list:{inner.dtype}" if isinstance(inner, datasets.Value) else repr(feature)


@pytest.fixture(scope="module")
def records():
    return list(generate_records(18, SynthDocConfig(image_size=64, seed=5)))


@pytest.fixture(scope="module")
def eval_dir(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return out, write_lmms_eval(records, out)


def test_lmms_eval_folders_have_the_official_splits_columns_and_types(records, eval_dir):
    out, folders = eval_dir
    assert folders == {style: out / style for style in OFFICIAL}
    for style, (split, columns) in OFFICIAL.items():
        loaded = datasets.load_from_disk(str(out / style))
        assert list(loaded) == [split]
        data = loaded[split]
        assert {name: kind(f) for name, f in data.features.items()} == columns
        mine = [r for r in records if r.style == style]
        assert len(data) == len(mine) > 0
        row = data[0]
        assert row["image"].size == mine[0].image.size
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(mine[0].image))
        assert row["question"] == mine[0].question
    textvqa = datasets.load_from_disk(str(out / "textvqa"))["validation"]
    assert all(len(answers) == 10 for answers in textvqa["answers"])
    assert len(set(textvqa["question_id"])) == len(textvqa)


def test_lmms_eval_scores_the_right_answer_as_correct(records, eval_dir):
    """lmms-eval's own scoring code on our rows: a correct prediction gets full marks."""
    from lmms_eval.api.metrics import anls
    from lmms_eval.tasks.ocrbench import utils as ocrbench_utils  # a dependency: never skipped
    from lmms_eval.tasks.textvqa import utils as textvqa_utils

    out, _ = eval_dir
    tv = datasets.load_from_disk(str(out / "textvqa"))["validation"]
    for row in tv:
        right = dict(row, answers=list(row["answers"]))
        assert textvqa_utils.textvqa_process_results(right, [row["answers"][0]])["exact_match"] == 1
        assert textvqa_utils.textvqa_process_results(dict(row), ["zzz"])["exact_match"] == 0
    for row in datasets.load_from_disk(str(out / "docvqa"))["validation"]:
        assert anls(row["answers"], [row["answers"][0]])["anls"] == 1.0
    for row in datasets.load_from_disk(str(out / "ocrbench"))["test"]:
        assert row["question_type"] in ocrbench_utils.OCRBench_score
        result = ocrbench_utils.ocrbench_process_results(row, [f"It says {row['answer'][0]}."])
        assert result["ocrbench_accuracy"]["score"] == 1


def test_a_style_without_records_gets_no_folder(tmp_path, caplog):
    only = list(generate_records(3, SynthDocConfig(image_size=64, styles=("ocrbench",))))
    assert write_lmms_eval(only, tmp_path) == {"ocrbench": tmp_path / "ocrbench"}
    assert not (tmp_path / "docvqa").exists()
    assert "no docvqa records" in caplog.text

"""The official schemas of the three evaluation sets, and checks of a local data folder.

A local data folder (``radio-vlm eval --data DIR``) holds one ``datasets.DatasetDict`` per
benchmark, written by ``save_to_disk``, with the split names and columns of the hub copies
lmms-eval reads:

    DIR/textvqa   lmms-lab/textvqa          split "validation"
    DIR/docvqa    lmms-lab/DocVQA (DocVQA)  split "validation"
    DIR/ocrbench  echo840/OCRBench          split "test"

``FEATURES`` gives every official column with its type; ``REQUIRED`` the columns lmms-eval's
prompt and scoring functions read. ``build_local_dataset`` turns plain rows into such a
DatasetDict (filling the columns nobody reads with empty values); ``check_data_dir`` says
precisely what is wrong with a folder before lmms-eval starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import Features, Image, List, Value

from .local_tasks import KINDS

SPLITS = {"textvqa": "validation", "docvqa": "validation", "ocrbench": "test"}

_STRINGS = List(Value("string"))
FEATURES: dict[str, Features] = {
    # lmms-lab/textvqa
    "textvqa": Features(
        {
            "image_id": Value("string"),
            "question_id": Value("int32"),
            "question": Value("string"),
            "question_tokens": _STRINGS,
            "image": Image(),
            "image_width": Value("int32"),
            "image_height": Value("int32"),
            "flickr_original_url": Value("string"),
            "flickr_300k_url": Value("string"),
            "answers": _STRINGS,  # 10 human answers
            "image_classes": _STRINGS,
            "set_name": Value("string"),
            "ocr_tokens": _STRINGS,
        }
    ),
    # lmms-lab/DocVQA, config DocVQA
    "docvqa": Features(
        {
            "questionId": Value("string"),
            "question": Value("string"),
            "question_types": _STRINGS,
            "image": Image(),
            "docId": Value("int64"),
            "ucsf_document_id": Value("string"),
            "ucsf_document_page_no": Value("string"),
            "answers": _STRINGS,
            "data_split": Value("string"),
        }
    ),
    # echo840/OCRBench
    "ocrbench": Features(
        {
            "dataset": Value("string"),  # source set; "HME100k" is scored case-sensitively
            "question": Value("string"),
            "question_type": Value("string"),  # one of OCRBENCH_QUESTION_TYPES
            "answer": _STRINGS,
            "image": Image(),
        }
    ),
}

# the keys of lmms-eval's OCRBench score table (tasks/ocrbench/utils.py)
OCRBENCH_QUESTION_TYPES = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    "Handwritten Mathematical Expression Recognition",
)

# what lmms-eval's doc_to_visual / doc_to_text / process_results / aggregation read
REQUIRED = {
    "textvqa": ("image", "question", "answers", "question_id"),
    "docvqa": ("image", "question", "answers", "questionId"),
    "ocrbench": ("image", "question", "answer", "dataset", "question_type"),
}


def build_local_dataset(kind: str, rows: Iterable[Mapping[str, Any]]) -> datasets.DatasetDict:
    """Rows (dicts with at least ``REQUIRED[kind]``; images as PIL) -> a DatasetDict with the
    official split and ``FEATURES[kind]``; columns a row lacks get empty values."""
    features = _features(kind)
    empty = {"string": "", "int32": 0}
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for i, row in enumerate(rows):
        missing = [c for c in REQUIRED[kind] if c not in row]
        if missing:
            raise ValueError(
                f"{kind} row {i} lacks the columns {missing}; lmms-eval reads "
                f"{list(REQUIRED[kind])}"
            )
        unknown = sorted(set(row) - set(features))
        if unknown:
            raise ValueError(
                f"{kind} row {i} has columns {unknown} that the official schema does not "
                f"have; known: {list(features)}"
            )
        for name, feature in features.items():
            default = [] if isinstance(feature, List) else empty.get(getattr(feature, "dtype", ""))
            columns[name].append(row.get(name, default))
    if not columns["image"]:
        raise ValueError(f"no rows given for {kind}; pass at least one")
    split = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict({SPLITS[kind]: split})


def check_data_dir(data_dir: str | Path, kinds: Sequence[str] = KINDS) -> dict[str, int]:
    """Check ``data_dir/<kind>`` for each kind; returns the number of rows of each.

    Raises FileNotFoundError / ValueError naming the folder, what is wrong and how to fix it.
    """
    data_dir = Path(data_dir)
    fix = (
        "write the folder with `radio-vlm export-eval-data --out DIR` (synthetic data) or "
        "convert the real set with vlm.evaluation.schemas.build_local_dataset(...).save_to_disk"
    )
    counts = {}
    for kind in kinds:
        _features(kind)
        folder = data_dir / kind
        if not folder.is_dir():
            raise FileNotFoundError(f"no {kind} data: {folder} is not a folder; {fix}")
        try:
            loaded = datasets.load_from_disk(str(folder))
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{folder} is not a dataset written by save_to_disk ({err}); {fix}"
            ) from err
        split = SPLITS[kind]
        if not isinstance(loaded, datasets.DatasetDict) or split not in loaded:
            found = list(loaded) if isinstance(loaded, datasets.DatasetDict) else "a Dataset"
            raise ValueError(
                f"{folder} must be a DatasetDict with the split {split!r} (lmms-eval's task "
                f"reads that split); found {found}. Save DatasetDict({{{split!r}: ds}})."
            )
        table = loaded[split]
        missing = [c for c in REQUIRED[kind] if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{folder} split {split!r} lacks the columns {missing} (it has "
                f"{table.column_names}); the official {kind} schema is "
                f"vlm.evaluation.schemas.FEATURES[{kind!r}]"
            )
        if not isinstance(table.features["image"], Image):
            raise ValueError(
                f"{folder}: column 'image' is {table.features['image']}, not datasets.Image(); "
                "lmms-eval calls .convert('RGB') on it"
            )
        if kind == "ocrbench":
            known = set(OCRBENCH_QUESTION_TYPES)
            unknown = sorted(set(table["question_type"]) - known)
            if unknown:
                raise ValueError(
                    f"{folder}: question_type values {unknown} are not OCRBench's; its scorer "
                    f"counts only {sorted(known)}"
                )
        counts[kind] = len(table)
    return counts


def _features(kind: str) -> Features:
    if kind not in FEATURES:
        raise ValueError(f"unknown evaluation set {kind!r}; use one of {KINDS}")
    return FEATURES[kind]

"""Write synthdoc records as the lmms-eval datasets' own schemas (``write_lmms_eval``).

    >>> write_lmms_eval(records, "out/eval")       # out/eval/{textvqa,docvqa,ocrbench}

``write_lmms_eval`` saves one ``datasets.DatasetDict`` per style (``save_to_disk``) with the
split name and the columns (names and types) of the hub datasets lmms-eval's tasks read:

| folder   | hub dataset                 | split      | columns                                      |
|----------|-----------------------------|------------|----------------------------------------------|
| textvqa  | lmms-lab/textvqa            | validation | image_id, question_id (int32), question,     |
|          |                             |            | question_tokens, image, image_width/height   |
|          |                             |            | (int32), flickr_original_url, flickr_300k_url,|
|          |                             |            | answers (10), image_classes, set_name,       |
|          |                             |            | ocr_tokens                                   |
| docvqa   | lmms-lab/DocVQA (DocVQA)    | validation | questionId (str), question, question_types,  |
|          |                             |            | image, docId (int64), ucsf_document_id,      |
|          |                             |            | ucsf_document_page_no, answers, data_split   |
| ocrbench | echo840/OCRBench            | test       | dataset, question, question_type, answer     |
|          |                             |            | (list), image                                |

A task YAML then points ``dataset_path`` at the folder with ``dataset_kwargs:
{load_from_disk: true}`` (and ``token: false``). Records of each style go to that style's
folder; a style without records gets no folder (``datasets`` cannot load an empty saved
split back), with a warning. TextVQA needs ten
human answers per question: the answer is repeated, with case variants that lmms-eval's
EvalAI normalisation folds back (so a correct prediction scores 1.0).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from vlm.data.synthdoc import REGULAR, SynthDocRecord

from .schemas import OCRBENCH_QUESTION_TYPES, build_local_dataset

__all__ = ["write_lmms_eval"]

logger = logging.getLogger(__name__)


def write_lmms_eval(records: Iterable[SynthDocRecord], out_dir: str | Path) -> dict[str, Path]:
    """Write ``out_dir/{textvqa,docvqa,ocrbench}`` (``DatasetDict.save_to_disk``) in the
    official schemas (module docstring); returns {style: folder} for the styles written."""
    rows: dict[str, list[dict]] = {style: [] for style in _ROW}
    for record in tqdm(records, desc="write lmms-eval", unit="record", leave=False):
        if record.style not in rows:
            raise ValueError(
                f"record {record.id} has style {record.style!r}; write_lmms_eval knows "
                f"{sorted(rows)}"
            )
        rows[record.style].append(_ROW[record.style](record, len(rows[record.style])))
    folders = {}
    for style, style_rows in rows.items():
        if not style_rows:  # datasets cannot load an empty saved split back
            logger.warning("write_lmms_eval: no %s records; no %s folder written", style, style)
            continue
        folders[style] = Path(out_dir) / style
        build_local_dataset(style, style_rows).save_to_disk(str(folders[style]))
    return folders


def _textvqa_row(record: SynthDocRecord, n: int) -> dict:
    answer = record.answers[0]
    # ten "annotators": the answer repeated, a few case variants (EvalAI lower-cases them)
    variants = [answer] * 7 + [answer.upper(), answer.capitalize(), answer.lower()]
    others = record.answers[1:]
    answers = (others + variants)[:10] if others else variants
    return {
        "image_id": record.id,
        "question_id": n,
        "question": record.question,
        "question_tokens": record.question.rstrip("?").split(),
        "image": record.image,
        "image_width": record.image.width,
        "image_height": record.image.height,
        "flickr_original_url": "",
        "flickr_300k_url": "",
        "answers": answers,
        "image_classes": [],
        "set_name": "val",
        "ocr_tokens": list(record.meta.get("ocr_tokens", record.meta.get("texts", []))),
    }


def _docvqa_row(record: SynthDocRecord, n: int) -> dict:
    return {
        "questionId": str(n),
        "question": record.question,
        "question_types": list(record.meta.get("question_types", ["form"])),
        "image": record.image,
        "docId": n,
        "ucsf_document_id": record.id,
        "ucsf_document_page_no": "1",
        "answers": list(record.answers),
        "data_split": "val",
    }


def _ocrbench_row(record: SynthDocRecord, n: int) -> dict:
    question_type = record.meta.get("question_type", REGULAR)
    if question_type not in OCRBENCH_QUESTION_TYPES:  # lmms-eval would KeyError on it
        raise ValueError(
            f"record {record.id}: OCRBench question_type {question_type!r} is not one of "
            f"lmms-eval's {OCRBENCH_QUESTION_TYPES}"
        )
    return {
        "dataset": "synthdoc",
        "question": record.question,
        "question_type": question_type,
        "answer": list(record.answers),
        "image": record.image,
    }


_ROW = {"textvqa": _textvqa_row, "docvqa": _docvqa_row, "ocrbench": _ocrbench_row}

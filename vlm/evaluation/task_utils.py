"""Thin wrappers around lmms-eval's OCRBench scoring, referenced by ``tasks/ocrbench_local.yaml``.

No scoring is written here: each wrapper calls lmms-eval's own function and only

- adds ``ocrbench_item_accuracy`` = lmms-eval's per-question score, so a subset of OCRBench
  gives a fraction (lmms-eval's aggregate divides the number of correct answers by 1000
  whatever the number of questions), and
- resets lmms-eval's per-question-type score table before aggregating: it is a module global
  that otherwise keeps counting across evaluations in one process (a compare grid).

The other tasks reference lmms-eval's functions directly from their YAML files.
"""

from __future__ import annotations

from typing import Any


def ocrbench_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """lmms-eval's ``ocrbench_process_results`` plus its score as ``ocrbench_item_accuracy``."""
    from lmms_eval.tasks.ocrbench import utils

    scored = utils.ocrbench_process_results(doc, results)
    return {**scored, "ocrbench_item_accuracy": scored["ocrbench_accuracy"]["score"]}


def ocrbench_aggregate_accuracy(results: list[dict[str, Any]], args: Any) -> float:
    """lmms-eval's ``ocrbench_aggregate_accuracy`` on a zeroed score table (correct / 1000;
    it also writes ``<output_path>/results/ocrbench_results.txt``)."""
    from lmms_eval.tasks.ocrbench import utils

    for question_type in utils.OCRBench_score:
        utils.OCRBench_score[question_type] = 0
    return utils.ocrbench_aggregate_accuracy(results, args)

"""Evaluation with lmms-eval: the model plugin, offline tasks, and ``evaluate``.

    >>> from vlm.evaluation import evaluate
    >>> evaluate("runs/sft", ["textvqa", "docvqa", "ocrbench"], data_dir="eval_data")

- ``model.RadioVLM``: the lmms-eval model ("radio_vlm"), registered through the
  ``lmms_eval.models`` entry point (``manifest.MANIFEST``).
- ``tasks/*.yaml``: textvqa_val_local, docvqa_val_local, ocrbench_local, reusing lmms-eval's
  prompt and scoring functions; ``local_tasks`` points them at a local data folder whose
  layout ``schemas`` defines and checks.
- ``runner.evaluate``: ``lmms_eval.evaluator.simple_evaluate`` on a model or folder.

Importing this package stays light: lmms-eval and datasets are imported only when a model is
built, data is checked or an evaluation runs (``RadioVLM`` and the schema helpers load on
first access).
"""

from __future__ import annotations

from typing import Any

from .local_tasks import TASKS, resolve_tasks, task_manager, write_task_dir
from .runner import evaluate, markdown_table, metrics_from_results

__all__ = [
    "TASKS",
    "RadioVLM",
    "build_local_dataset",
    "check_data_dir",
    "evaluate",
    "markdown_table",
    "metrics_from_results",
    "resolve_tasks",
    "task_manager",
    "write_task_dir",
]


def __getattr__(name: str) -> Any:
    if name == "RadioVLM":
        from .model import RadioVLM

        return RadioVLM
    if name in ("build_local_dataset", "check_data_dir"):  # datasets takes seconds to import
        from . import schemas

        return getattr(schemas, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``evaluate``: lmms-eval's ``simple_evaluate`` on a model (object or folder) -> metrics.

    >>> metrics = vlm.evaluate("runs/sft", ["textvqa", "docvqa", "ocrbench"], data_dir="eval_data")
    >>> metrics["textvqa_val_local"]["exact_match"]

Everything the run writes goes under ``output_dir``: ``results.json`` (lmms-eval's full
results, without per-sample logs), ``metrics.json`` + ``metrics.md`` (the table),
``samples_<task>.jsonl`` (with ``log_samples``), ``tasks/`` (the offline task YAMLs used) and
the files lmms-eval's tasks write themselves (``submissions/``, ``results/``), which would
otherwise land in the working directory.

lmms-eval is imported inside the functions: importing it takes seconds, reconfigures loguru
and sets a 24 h process-group timeout, none of which ``import vlm`` should do.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .local_tasks import TASKS, kinds_of, resolve_tasks, task_manager, write_task_dir

Metrics = dict[str, dict[str, float]]

FILELOCK_HINT = (
    "lmms-eval 0.7.3's evaluator imports filelock._api, which filelock 4 removed; install "
    "filelock 3 (pip install 'filelock>=3.24.2,<4')"
)


def evaluate(
    model_or_dir: Any,
    tasks: Sequence[str] = tuple(TASKS),
    *,
    data_dir: str | Path | None = None,
    processor: Any = None,
    limit: int | float | None = None,
    batch_size: int = 1,
    gen_kwargs: str | Mapping[str, Any] | None = None,
    device: str | None = None,
    dtype: str | None = "auto",
    output_dir: str | Path | None = None,
    log_samples: bool = False,
    model_args: Mapping[str, Any] | None = None,
) -> Metrics:
    """Run lmms-eval tasks on a model; returns ``{task: {metric: value}}`` (empty on ranks > 0
    of a multi-process run).

    model_or_dir: a saved model folder / hub id, a ``VisionLanguageModel`` (then pass
        ``processor``), or a ready ``RadioVLM`` (reused as it is).
    tasks: short names (textvqa, docvqa, ocrbench) or lmms-eval task names. With ``data_dir``
        the short names run the offline tasks on ``data_dir/<name>`` (checked first, see
        ``vlm.evaluation.schemas``); without, lmms-eval's hub tasks.
    limit: at most this many documents per task (a float < 1: that fraction).
    gen_kwargs: overrides of every task's generation settings, "k=v,..." or a dict of scalars.
    output_dir: default ``runs/eval/<model>-<time>``.
    model_args: more ``RadioVLM`` arguments (max_new_tokens, system_prompt, ...).
    """
    from lmms_eval.evaluator import simple_evaluate

    from .model import RadioVLM

    names = resolve_tasks(tasks, local=data_dir is not None)
    local = kinds_of(names)
    if local:  # before loading the model: a wrong folder should fail in seconds
        from .schemas import check_data_dir

        check_data_dir(data_dir, local)
    out = Path(output_dir) if output_dir else default_output_dir(model_or_dir)
    out.mkdir(parents=True, exist_ok=True)
    include = write_task_dir(data_dir, out / "tasks", local) if local else None
    # built-in tasks need lmms-eval's own index (seconds); offline ones do not
    manager = task_manager(include, defaults=len(local) < len(names))
    check_task_names(names, manager.all_tasks)  # before the (slow) model load
    lm = _as_lmms(model_or_dir, processor, batch_size, device, dtype, dict(model_args or {}))
    try:
        results = simple_evaluate(
            model=lm,
            tasks=names,
            limit=limit,
            batch_size=lm.batch_size if isinstance(lm, RadioVLM) else batch_size,
            gen_kwargs=_gen_kwargs_string(gen_kwargs),
            task_manager=manager,
            bootstrap_iters=0,
            log_samples=log_samples,
            verbosity="WARNING",
            # tasks write submission / score files under cli_args.output_path (else the CWD)
            cli_args=_cli_args(
                output_path=str(out), tasks=",".join(names), limit=limit, log_samples=log_samples
            ),
        )
    except ModuleNotFoundError as err:
        if err.name != "filelock._api":
            raise
        raise RuntimeError(FILELOCK_HINT) from err
    if results is None:  # not the main process
        return {}
    samples = results.pop("samples", None) or {}
    for task, rows in samples.items():
        with open(out / f"samples_{task}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=str) + "\n")
    _write_json(out / "results.json", results)
    metrics = metrics_from_results(results)
    metrics = {t: metrics[t] for t in sorted(metrics, key=_order(names))}  # as asked
    _write_json(out / "metrics.json", metrics)
    (out / "metrics.md").write_text(markdown_table(metrics, results), encoding="utf-8")
    return metrics


def metrics_from_results(results: Mapping[str, Any]) -> Metrics:
    """lmms-eval's ``results["results"]`` -> ``{task: {metric: value}}``: numeric values only
    (no stderr, no submission placeholders), filter suffix dropped ("exact_match,none")."""
    metrics: Metrics = {}
    for task, values in results.get("results", {}).items():
        row = {}
        for key, value in values.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or "_stderr" in metric:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[metric if filter_name == "none" else f"{metric},{filter_name}"] = value
        metrics[task] = row
    return metrics


def markdown_table(metrics: Metrics, results: Mapping[str, Any] | None = None) -> str:
    """``| task | metric | value | samples |``, one row per metric."""
    counts = (results or {}).get("n-samples", {})
    lines = ["| task | metric | value | samples |", "|---|---|---|---|"]
    for task, row in metrics.items():
        n = counts.get(task, {}).get("effective", "")
        for metric, value in row.items():
            shown = "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"
            lines.append(f"| {task} | {metric} | {shown} | {n} |")
    return "\n".join(lines) + "\n"


def _as_lmms(
    model_or_dir: Any,
    processor: Any,
    batch_size: int,
    device: str | None,
    dtype: str | None,
    model_args: dict[str, Any],
) -> Any:
    from lmms_eval.api.model import lmms

    from .model import RadioVLM

    if isinstance(model_or_dir, lmms):
        return model_or_dir
    settings = {"batch_size": batch_size, "device": device, "dtype": dtype, **model_args}
    if isinstance(model_or_dir, (str, Path)):
        return RadioVLM(pretrained=str(model_or_dir), **settings)
    if processor is None:
        raise ValueError(
            f"evaluate() got a {type(model_or_dir).__name__} object without its processor; "
            "pass processor=<the VLMProcessor>, or a saved folder instead of the model"
        )
    return RadioVLM(model=model_or_dir, processor=processor, **settings)


def _cli_args(**values: Any) -> argparse.Namespace:
    """lmms-eval's CLI arguments at their defaults, with ``values`` set: the evaluator and
    the tasks read several of them (output_path, process_with_media, ...) when given any."""
    import sys

    from lmms_eval.__main__ import parse_eval_args

    argv, sys.argv = sys.argv, ["lmms-eval"]  # parse_eval_args parses sys.argv
    try:
        _, args = parse_eval_args()
    finally:
        sys.argv = argv
    args.model = "radio_vlm"
    for key, value in values.items():
        setattr(args, key, value)
    return args


def _gen_kwargs_string(gen_kwargs: str | Mapping[str, Any] | None) -> str | None:
    """lmms-eval takes overrides as "k=v,..." (it parses the values' types itself)."""
    if gen_kwargs is None or isinstance(gen_kwargs, str):
        return gen_kwargs or None
    parts = []
    for key, value in gen_kwargs.items():
        if not isinstance(value, (str, int, float, bool)) or "," in str(value):
            raise ValueError(
                f"gen_kwargs {key}={value!r}: lmms-eval takes only scalar overrides without "
                "commas (it parses 'k=v,k=v'); set lists such as 'until' in the task YAML"
            )
        parts.append(f"{key}={value}")
    return ",".join(parts) or None


def default_output_dir(model_or_dir: Any) -> Path:
    """``runs/eval/<model folder name>-<YYYYmmdd-HHMMSS>``."""
    name = Path(str(model_or_dir)).name if isinstance(model_or_dir, (str, Path)) else "model"
    return Path("runs") / "eval" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _order(names: Sequence[str]) -> Any:
    return lambda task: names.index(task) if task in names else len(names)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def check_task_names(names: list[str], known: list[str]) -> None:
    """A ValueError naming every task lmms-eval does not know (with the closest names)."""
    import difflib

    unknown = [name for name in names if name not in set(known)]
    if unknown:
        hints = {name: difflib.get_close_matches(name, known, n=3) for name in unknown}
        detail = "; ".join(f"{n!r} (close: {', '.join(c) or 'none'})" for n, c in hints.items())
        raise ValueError(
            f"unknown lmms-eval task(s): {detail}. Use textvqa, docvqa, ocrbench or a task "
            "name from `lmms-eval --tasks list`"
        )

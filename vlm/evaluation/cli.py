"""`radio-vlm eval`: TextVQA / DocVQA / OCRBench (or any lmms-eval task) on a saved model.

    radio-vlm eval --pretrained runs/sft --data eval_data --tasks textvqa,docvqa,ocrbench
    radio-vlm eval --pretrained runs/sft --tasks textvqa,docvqa,ocrbench   # lmms-eval's hub data
    radio-vlm eval --pretrained runs/sft --data eval_data --write-tasks runs/eval_tasks

With ``--data DIR`` the short task names run the offline tasks on ``DIR/textvqa``,
``DIR/docvqa``, ``DIR/ocrbench`` (``radio-vlm export-eval-data`` writes such a folder);
without it, lmms-eval's own hub tasks. Prints a Markdown table of the metrics and writes
``metrics.json``, ``metrics.md`` and lmms-eval's ``results.json`` under ``--out``.
``--write-tasks`` only writes the offline task YAMLs and prints the plain ``lmms-eval``
command (e.g. for ``accelerate launch -m lmms_eval`` on several GPUs).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

SUMMARY = (
    "evaluate a saved model with lmms-eval on TextVQA / DocVQA / OCRBench (a local folder "
    "with --data, else the hub); print and save a metrics table"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pretrained", required=True, help="model folder (save_pretrained: model + processor)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="local data folder (textvqa/, docvqa/, ocrbench/); default: lmms-eval's hub datasets",
    )
    parser.add_argument(
        "--tasks",
        default="textvqa,docvqa,ocrbench",
        help="comma-separated: textvqa, docvqa, ocrbench and/or lmms-eval task names",
    )
    parser.add_argument("--limit", type=_limit, help="documents per task (testing only)")
    parser.add_argument("--out", type=Path, help="output folder (default runs/eval/<model>-<time>)")
    parser.add_argument("--batch-size", type=int, default=1, help="prompts per forward pass")
    parser.add_argument("--device", help="cuda / cuda:1 / cpu (default: cuda if present)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (as saved) | bfloat16 | float16 | float32"
    )
    parser.add_argument(
        "--gen-kwargs", help="override every task's generation settings, e.g. max_new_tokens=16"
    )
    parser.add_argument("--log-samples", action="store_true", help="write samples_<task>.jsonl")
    parser.add_argument(
        "--write-tasks",
        type=Path,
        metavar="DIR",
        help="only write the offline task YAMLs for --data into DIR and print the lmms-eval "
        "command that uses them",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vlm.evaluation.local_tasks import kinds_of, resolve_tasks

    names = resolve_tasks(args.tasks.split(","), local=args.data is not None)
    if args.write_tasks is not None:
        return _write_tasks(args, names, kinds_of(names))
    from vlm.evaluation.runner import default_output_dir, evaluate

    out = args.out or default_output_dir(args.pretrained)
    metrics = evaluate(
        args.pretrained,
        names,
        data_dir=args.data,
        limit=args.limit,
        batch_size=args.batch_size,
        gen_kwargs=args.gen_kwargs,
        device=args.device,
        dtype=args.dtype,
        output_dir=out,
        log_samples=args.log_samples,
    )
    if metrics:  # empty on ranks > 0 of a multi-process run
        print((out / "metrics.md").read_text(encoding="utf-8"), end="")
        print(f"results: {out}")
    return 0


def _write_tasks(args: argparse.Namespace, names: list[str], kinds: list[str]) -> int:
    from vlm.evaluation.local_tasks import write_task_dir
    from vlm.evaluation.manifest import MODEL_ID
    from vlm.evaluation.schemas import check_data_dir

    if args.data is None or not kinds:
        print("--write-tasks needs --data and at least one offline task", file=sys.stderr)
        return 2
    check_data_dir(args.data, kinds)
    folder = write_task_dir(args.data, args.write_tasks, kinds)
    command = [
        "lmms-eval",
        "--model", MODEL_ID,
        "--model_args", f"pretrained={args.pretrained}",
        "--include_path", str(folder),
        "--tasks", ",".join(names),
        "--batch_size", str(args.batch_size),
        "--output_path", str(args.out or "runs/eval"),
    ]  # fmt: skip
    print(f"wrote {len(kinds)} task YAMLs to {folder}; run:\n{shlex.join(command)}")
    return 0


def _limit(text: str) -> int | float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--limit must be > 0; got {text}")
    return int(value) if value >= 1 else value

"""`radio-vlm train RECIPE`: run one training stage from a YAML recipe.

    radio-vlm train recipes/tiny/stage1_align.yaml                      # this process
    radio-vlm train recipes/stage2_pretrain.yaml --resume \\
        --accelerate recipes/accelerate/zero3.yaml --num-processes 8    # via accelerate launch

The same as ``accelerate launch --config_file CFG recipes/train.py RECIPE [...]``, which calls
``main`` below in every process.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import NoReturn

from vlm.cli_errors import add_debug_flag, run_reporting_errors
from vlm.schema import add_override_argument

SUMMARY = "train one stage (align / pretrain / sft) from a YAML recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/)")
    add_override_argument(parser, "recipe", "train.max_steps=10 or model.init_from=runs/s1")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the latest complete checkpoint in train.output_dir (or the given "
        "checkpoint folder); starts fresh when there is none",
    )
    parser.add_argument(
        "--accelerate",
        metavar="CONFIG",
        help="start through `accelerate launch --config_file CONFIG` (e.g. "
        "recipes/accelerate/zero2.yaml) instead of in this process",
    )
    parser.add_argument(
        "--num-processes", type=int, help="with --accelerate: override the config's count"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.accelerate:
        return _launch(args)
    from vlm.training import load_recipe, train

    overrides = list(args.override)
    if args.resume is not None:
        overrides.append(f"train.resume={args.resume}")
    try:
        train(load_recipe(args.recipe, overrides))
    finally:
        _close_process_group()
    return 0


def exit_process(code: int) -> NoReturn:
    """End a process that ran ``main`` as its entry point with ``code``. In a launched rank
    (WORLD_SIZE > 1) skip the interpreter's teardown: there DeepSpeed's CPU communication
    threads can still abort a rank ("terminate called without an active exception", SIGABRT)
    after the stage is saved, which fails the whole launch. Flushes first; only entry points
    call this, so a caller of ``main`` (benchmarks/zero3_memory.py) keeps its process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise SystemExit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _close_process_group() -> None:
    """Tear the process group down before the interpreter exits: left to exit, its
    communication threads can abort a rank ("terminate called without an active exception")
    after the stage has finished, failing the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _launch(args: argparse.Namespace) -> int:
    """Re-run this command in every process of `accelerate launch`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", args.accelerate]
    if args.num_processes is not None:
        command += ["--num_processes", str(args.num_processes)]
    command += ["-m", "vlm.training.cli", args.recipe]
    for item in args.override:
        command += ["--override", item]
    if args.resume is not None:
        command += ["--resume", args.resume]
    if getattr(args, "debug", False):
        command.append("--debug")
    return subprocess.call(command)


def main(argv: list[str] | None = None) -> int:
    """Entry for `accelerate launch recipes/train.py` and `python -m vlm.training.cli`."""
    parser = argparse.ArgumentParser(prog="train", description=SUMMARY)
    add_arguments(parser)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return run_reporting_errors(args.run, args, "radio-vlm train")


if __name__ == "__main__":
    exit_process(main())

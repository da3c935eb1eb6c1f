"""The `radio-vlm` command: one subcommand per job, each defined beside the code it runs.

A subcommand module provides ``add_arguments(parser)``, which also sets ``run`` (a function
of the parsed arguments returning an exit code).
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

from recipes import chat, encoder_analysis, merge_demo
from recipes.compare import runner as compare
from recipes.quickstart import runner as quickstart
from recipes.ui import cli as ui
from vlm.cli_errors import add_debug_flag, run_reporting_errors
from vlm.evaluation import cli as eval_cli
from vlm.evaluation import export_cli as eval_data_cli
from vlm.training import cli as train_cli
from vlm.training import merge_cli as merge_lora

# name -> (module, one-line help); later issues add train, eval, compare, quickstart, ...
SUBCOMMANDS = {
    "merge-demo": (
        merge_demo,
        "compress a document page with ToMe / avg-pool / unshuffle; "
        "write merge pictures and a reconstruction-error table",
    ),
    "encoder": (
        encoder_analysis,
        "analyse a vision encoder across resolutions: PCA pictures (pca), "
        "scale equivariance (equivariance)",
    ),
    "train": (train_cli, train_cli.SUMMARY),
    "merge-lora": (merge_lora, merge_lora.SUMMARY),
    "eval": (eval_cli, eval_cli.SUMMARY),
    "export-eval-data": (eval_data_cli, eval_data_cli.SUMMARY),
    "quickstart": (quickstart, quickstart.SUMMARY),
    "compare": (compare, compare.SUMMARY),
    "chat": (chat, chat.SUMMARY),
    "ui": (ui, ui.SUMMARY),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radio-vlm",
        description="RADIOv2.5 vision encoder + output token merging + any Hugging Face LLM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        add_debug_flag(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(args.run, args, f"radio-vlm {args.command}")


def _version() -> str:
    try:
        return version("radio-vlm")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

"""`radio-vlm export-eval-data`: a synthetic local evaluation folder for `radio-vlm eval --data`.

    radio-vlm export-eval-data --out eval_data --num 300 --seed 0

Writes ``OUT/textvqa``, ``OUT/docvqa``, ``OUT/ocrbench`` (``datasets.DatasetDict`` folders in
the official schemas, see ``vlm.evaluation.schemas``; --num shared evenly between them) from
``vlm.data``'s synthdoc documents
(``generate_records`` + ``write_lmms_eval``), then checks the folder the way ``radio-vlm eval``
will and prints the row counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUMMARY = (
    "write synthetic TextVQA / DocVQA / OCRBench sets in the official schemas for "
    "radio-vlm eval --data"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument(
        "--num",
        type=_positive,
        default=300,
        help="synthetic documents to generate, shared evenly by the three tasks (default 300, "
        "at least 3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from vlm.data import STYLES, SynthDocConfig, generate_records
        from vlm.evaluation.export import write_lmms_eval
    except ImportError as err:
        print(
            f"radio-vlm export-eval-data needs vlm.data's synthdoc generator and lmms-eval "
            f"writer, which are not importable ({err}); update the toolkit",
            file=sys.stderr,
        )
        return 2
    from vlm.evaluation.schemas import check_data_dir

    if args.num < len(STYLES):
        raise ValueError(
            f"--num {args.num} cannot give each of the {len(STYLES)} tasks ({', '.join(STYLES)}) "
            f"a document; use --num {len(STYLES)} or more"
        )
    records = []
    for i, style in enumerate(STYLES):  # every task gets its share, whatever the draw
        share = args.num // len(STYLES) + (i < args.num % len(STYLES))
        records += generate_records(share, SynthDocConfig(styles=(style,), seed=args.seed))
    write_lmms_eval(records, args.out)
    counts = check_data_dir(args.out)
    rows = ", ".join(f"{kind} {n}" for kind, n in counts.items())
    print(f"wrote {args.out}: {rows} rows; evaluate with radio-vlm eval --data {args.out}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
    return value

"""`radio-vlm merge-lora IN OUT`: a LoRA stage (or checkpoint) -> a plain merged model.

OUT holds config.json + weights + the processor and loads with
``VisionLanguageModel.from_pretrained(OUT)`` / ``AutoModelForImageTextToText`` like any
stage; the next stage can name it in ``model.init_from``.
"""

from __future__ import annotations

import argparse

SUMMARY = "merge a LoRA stage's adapter into its base model: a plain from_pretrained folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter_dir", metavar="IN", help="LoRA stage output_dir or checkpoint")
    parser.add_argument("out_dir", metavar="OUT", help="folder for the merged model")
    parser.add_argument(
        "--base",
        metavar="DIR",
        help="base model folder, when it moved from the path recorded in adapter_config.json",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vlm.training.lora import merge_lora

    out = merge_lora(args.adapter_dir, args.out_dir, base=args.base)
    print(f"[radio-vlm] merged model written to {out}", flush=True)
    return 0

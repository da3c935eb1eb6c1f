"""`radio-vlm ui`: serve the web page (``recipes.ui.app``) for a trained model.

    make demo && radio-vlm ui                      # the demo's ToMe model, http://127.0.0.1:7860
    radio-vlm ui --pretrained DIR --port 8000      # any saved model

gradio is an optional extra (``pip install 'radio-vlm[ui]'``), imported only here, so the
base install works without it. The server binds to 127.0.0.1 unless ``--host`` says otherwise:
anyone who can reach the page can make the model run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from recipes.chat_model import DEMO_MODEL, ChatInputError, load_chat_model
from token_merge import BUDGETED_METHODS

SUMMARY = "a web page: ask a trained model about a page, see its merge map and the baselines'"
INSTALL_HINT = "pip install 'radio-vlm[ui]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
NUM_SAMPLES = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pretrained",
        default=str(DEMO_MODEL),
        help=f"a saved model's folder (default: {DEMO_MODEL}, the model `make demo` trains)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when there is one)")
    parser.add_argument("--compressor", choices=BUDGETED_METHODS, help="run with another merger")
    parser.add_argument("--num-tokens", type=int, metavar="K", help="run with another budget K")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest answer (tokens)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # gradio reports usage to its makers unless told not to; a local tool stays local
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from recipes.ui.app import build_app, launch_options  # the one place gradio loads
    except ImportError as err:
        if (err.name or "").partition(".")[0] != "gradio":
            raise
        print(
            f"radio-vlm ui: error: the web page needs gradio, an optional extra: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model, processor, warning = load_chat_model(
            args.pretrained,
            device=args.device,
            compressor=args.compressor,
            num_tokens=args.num_tokens,
        )
    except ChatInputError as err:
        print(f"radio-vlm ui: error: {err}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    if args.host not in LOOPBACK:
        print(
            f"radio-vlm ui: serving on {args.host}: anyone who can reach it can run the model",
            file=sys.stderr,
        )
    app = build_app(
        model,
        processor,
        name=str(args.pretrained),
        warning=warning,
        max_new_tokens=args.max_new_tokens,
        samples=sample_pages(processor.image_processor.resolution),
    )
    print(f"radio-vlm ui: http://{args.host}:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    app.queue().launch(**launch_options(args.host, args.port))
    return 0


def sample_pages(resolution: int, count: int = NUM_SAMPLES) -> list[tuple[Any, str]]:
    """(page, question) pairs to pick from: held-out pages of the demo's synthdoc (the eval
    split's seed), drawn at the model's resolution, asked as lmms-eval asks them."""
    from recipes.quickstart.model import TinySettings
    from recipes.quickstart.training import synthdoc_config
    from vlm.data import generate_records
    from vlm.data.synthdoc import eval_prompt

    settings = dataclasses.replace(TinySettings(), image_size=resolution)
    records = generate_records(count, synthdoc_config(settings, seed=1000))
    return [(r.image, eval_prompt(r.question, r.style)) for r in records]

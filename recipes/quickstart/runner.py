"""`radio-vlm quickstart` (= `make demo`): a tiny VLM learns to read on CPU, then the
paper's comparison at an equal visual-token budget.

    radio-vlm quickstart                 # full demo (calibrated for <= 10 min on 2 cores)
    radio-vlm quickstart --ci            # everything with a few steps (no accuracy claim)

Steps (one summary line each; outputs under --out, default runs/quickstart):
 1. data:     synthdoc train split (LLaVA JSON, + a blank-image twin) and eval split in the
              three lmms-eval schemas (``radio-vlm export-eval-data`` layout, + blank twin).
 2. model:    tiny RADIO-architecture encoder, MLP projector, tiny Qwen2, local tokenizer.
 3. stage 0:  supervised encoder warm-up (word classification; see recipes.quickstart.model).
 4. train:    per compared setting, align -> pretrain -> SFT through vlm.training.train (the
              code behind recipes/train.py); the ToMe model is the demo's main model.
 5. evaluate: lmms-eval (vlm.evaluate) on textvqa_val_local, docvqa_val_local, ocrbench_local.
 6. report:   report.md, results.json, accuracy.png, tome_merge.png, encoder_pca.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recipes.quickstart.model import TinySettings, tiny_parts
from recipes.quickstart.stage0 import run_stage0
from recipes.quickstart.training import Schedule, train_cell, write_data
from recipes.threads import machine_facts, set_threads

SUMMARY = (
    "train a tiny VLM to read synthetic documents on CPU, evaluate it with lmms-eval and "
    "compare ToMe / unshuffle / avg-pool / image-blind at an equal visual-token budget"
)
METHODS = ("tome", "unshuffle", "avgpool", "blind", "none")
# "none" keeps all 64 patches: it does not fit the 16-token budget, so it is opt-in
DEFAULT_METHODS = ("tome", "unshuffle", "avgpool", "blind")
TASKS = ("textvqa", "docvqa", "ocrbench")


@dataclass
class QuickstartOptions:
    """Everything a quickstart run depends on (saved in results.json)."""

    out: str = "runs/quickstart"
    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    num_train: int = 3000
    num_eval: int = 300
    eval_limit: int | None = None
    settings: TinySettings = field(default_factory=TinySettings)
    schedule: Schedule = field(default_factory=Schedule)
    ci: bool = False
    threads: int | None = None  # torch CPU threads (None: the cores this process may use)

    @classmethod
    def small(cls, **kwargs: Any) -> QuickstartOptions:
        """The --ci sizes: every step runs, with a handful of samples and steps."""
        schedule = Schedule(warmup_steps=4, steps=(2, 2, 2), batch_size=4)
        base = {"num_train": 32, "num_eval": 12, "schedule": schedule, "ci": True}
        return cls(**(base | kwargs))


class StepLog:
    """Numbered steps, each closed by one summary line with its wall time."""

    def __init__(self, total: int, echo: Callable[[str], None] = print) -> None:
        self.total, self.index, self.echo = total, 0, echo
        self.started = time.perf_counter()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any], summary: Callable[[Any], str]) -> Any:
        self.index += 1
        self.echo(f"[quickstart {self.index}/{self.total}] {name} ...")
        start = time.perf_counter()
        value = fn()
        self.times[name] = seconds = time.perf_counter() - start
        self.echo(
            f"[quickstart {self.index}/{self.total}] {name}: {summary(value)} ({seconds:.0f}s)"
        )
        return value

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_quickstart(options: QuickstartOptions, echo: Callable[[str], None] = print) -> dict:
    """Run the demo; returns (and writes) results.json's content."""
    from recipes.quickstart import report

    unknown = sorted(set(options.methods) - set(METHODS))
    if unknown or "tome" not in options.methods:
        raise ValueError(
            f"methods must include 'tome' and come from {METHODS}; got {list(options.methods)}"
        )
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    options.threads = set_threads(options.threads, echo)
    settings, schedule = options.settings, options.schedule
    torch.manual_seed(options.seed)
    steps = StepLog(6, echo)

    data = steps.run(
        "data",
        lambda: write_data(
            settings,
            out / "data",
            num_train=options.num_train,
            num_eval=options.num_eval,
            seed=options.seed,
        ),
        lambda d: (
            f"{len(d.train_records)} train pages (LLaVA JSON + blank twin), "
            f"{len(d.eval_records)} eval pages in the textvqa/docvqa/ocrbench schemas -> {d.eval_dir}"
        ),
    )
    parts = steps.run(
        "model",
        lambda: tiny_parts(settings, out, seed=options.seed),
        lambda p: (
            f"encoder {_millions(p.encoder)} (RADIO, patch {settings.patch_size}, "
            f"{settings.image_size} px), LLM {_millions(p.llm)} (Qwen2), tokenizer {len(p.tokenizer)} ids"
        ),
    )
    blind_parts = copy.deepcopy(parts)  # the blind model never sees a page, warm-up included
    warm = steps.run(
        "stage 0 (encoder warm-up)",
        lambda: run_stage0(
            parts.encoder, data.train_records, settings, schedule, seed=options.seed
        ),
        lambda w: (
            f"{w['objective']} objective, {w['steps']} steps: loss {w['loss']:.2f}, "
            f"train accuracy {100 * w['train_accuracy']:.0f}%"
        ),
    )

    def train_all() -> dict[str, Any]:
        runs = {}
        for method in options.methods:
            blind = method == "blind"
            runs[method] = train_cell(
                blind_parts if blind else parts,
                settings,
                "tome" if blind else method,
                data,
                out / "runs" / method,
                schedule,
                blind=blind,
                warmup=None if blind else warm,
                log=echo,
            )
        return runs

    runs = steps.run(
        "train (align -> pretrain -> SFT per method)",
        train_all,
        lambda r: ", ".join(f"{m} {sum(c.seconds.values()):.0f}s" for m, c in r.items()),
    )

    def evaluate_all() -> dict[str, dict]:
        from vlm.evaluation import evaluate

        metrics = {}
        for method, cell in runs.items():
            data_dir = data.eval_blank_dir if cell.blind else data.eval_dir
            metrics[method] = evaluate(
                str(cell.final),
                list(TASKS),
                data_dir=data_dir,
                limit=options.eval_limit,
                batch_size=16,
                output_dir=out / "runs" / method / "eval",
                model_args={"max_new_tokens": 8},
            )
        return metrics

    metrics = steps.run(
        "evaluate (lmms-eval, local tasks)",
        evaluate_all,
        lambda m: "; ".join(f"{k} {report.headline(v)}" for k, v in m.items()),
    )
    results = {
        "options": _jsonable(asdict(options)),
        "stage0": warm,
        "cells": {
            method: {
                "visual_tokens": settings.visual_tokens("tome" if method == "blind" else method),
                "blind": cell.blind,
                "model_dir": str(cell.final),
                "train_seconds": cell.seconds,
                "metrics": metrics[method],
                "scores": report.scores(metrics[method]),
            }
            for method, cell in runs.items()
        },
        "step_seconds": steps.times,
        "machine": machine_facts(),
    }
    steps.run(
        "report",
        lambda: report.write_report(results, runs["tome"].final, data, out, elapsed=steps.elapsed),
        lambda files: ", ".join(str(Path(f).name) for f in files),
    )
    echo(
        "[quickstart] on one-word pages the compressors tie (any summary keeps one large word); "
        "for pages where what they keep matters: radio-vlm compare "
        "recipes/compare/dense_word.yaml --seeds 0,1,2 (README, the dense world)"
    )
    echo(f"[quickstart] done in {steps.elapsed:.0f}s: {out / 'report.md'}")
    return json.loads((out / "results.json").read_text(encoding="utf-8"))


def _millions(module: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f}M params"


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output folder")
    parser.add_argument("--ci", action="store_true", help="tiny sizes: checks every step runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        help="settings compared at an equal visual-token budget (tome is required; 'none' keeps "
        "all 64 patches, over the budget)",
    )
    parser.add_argument("--num-train", type=int, default=None, help="synthdoc training pages")
    parser.add_argument("--num-eval", type=int, default=None, help="synthdoc eval pages")
    parser.add_argument("--eval-limit", type=int, default=None, help="docs per lmms-eval task")
    parser.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every training step count (e.g. 0.5 for a quicker, weaker demo)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: the cores this process may use; 1 on a shared machine)",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    sizes = {k: v for k, v in (("num_train", args.num_train), ("num_eval", args.num_eval)) if v}
    common = {
        "out": args.out,
        "seed": args.seed,
        "methods": tuple(args.methods),
        "eval_limit": args.eval_limit,
        "threads": args.threads,
        **sizes,
    }
    options = QuickstartOptions.small(**common) if args.ci else QuickstartOptions(**common)
    options.schedule = options.schedule.scaled(args.steps_scale)
    options.schedule.seed = args.seed
    run_quickstart(options)
    return 0

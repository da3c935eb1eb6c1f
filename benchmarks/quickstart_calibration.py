"""Calibrate the quickstart: does the tiny ToMe VLM learn to read synthdoc on 2 CPU cores
within minutes, and by how much does it beat the image-blind baseline?

    python benchmarks/quickstart_calibration.py --seeds 0 1 2 [--warmup 300 --steps 60 120 240]

Per seed: fresh synthdoc data, a fresh tiny model, stage 0 (encoder warm-up), the three
stages through vlm.training.train for ToMe and for the image-blind twin (same model, same
data with blank images), then greedy exact-match accuracy on held-out records. Prints one
JSON line per seed and a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/token_merge.py would shadow the token_merge package when run as a script from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from recipes.quickstart.model import TinySettings, tiny_parts  # noqa: E402
from recipes.quickstart.stage0 import run_stage0  # noqa: E402
from recipes.quickstart.training import Schedule, quick_accuracy, train_cell, write_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--warmup", type=int, default=Schedule.warmup_steps)
    parser.add_argument("--warmup-lr", type=float, default=Schedule.warmup_lr)
    parser.add_argument("--steps", type=int, nargs=3, default=list(Schedule.steps))
    parser.add_argument("--lr", type=float, nargs=3, default=[2e-3, 1e-3, 1e-3])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-train", type=int, default=3000)
    parser.add_argument("--num-eval", type=int, default=300)
    parser.add_argument("--num-tokens", type=int, default=16)
    parser.add_argument("--no-blind", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings = TinySettings(num_tokens=args.num_tokens)
    rows = []
    for seed in args.seeds:
        root = Path(args.out or tempfile.mkdtemp(prefix="qs-cal-")) / f"seed{seed}"
        schedule = Schedule(
            warmup_steps=args.warmup,
            warmup_lr=args.warmup_lr,
            steps=tuple(args.steps),
            lr=tuple(args.lr),
            batch_size=args.batch,
            seed=seed,
        )
        t0 = time.perf_counter()
        data = write_data(
            settings, root / "data", num_train=args.num_train, num_eval=args.num_eval, seed=seed
        )
        t_data = time.perf_counter() - t0
        parts = tiny_parts(settings, root, seed=seed)
        blind_parts = copy.deepcopy(parts)  # blind: same (un-warmed) start, blank pages
        t0 = time.perf_counter()
        warm = run_stage0(parts.encoder, data.train_records, settings, schedule, seed=seed)
        t_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        tome = train_cell(parts, settings, "tome", data, root / "tome", schedule, warmup=warm)
        t_tome = time.perf_counter() - t0
        acc = quick_accuracy(tome.final, data.eval_records)
        row = {
            "seed": seed,
            "data_s": t_data,
            "warmup": warm,
            "warmup_s": t_warm,
            "stages_s": t_tome,
            "tome": acc,
        }
        if not args.no_blind:
            t0 = time.perf_counter()
            blind = train_cell(
                blind_parts, settings, "tome", data, root / "blind", schedule, blind=True
            )
            row["blind_stages_s"] = time.perf_counter() - t0
            row["blind"] = quick_accuracy(blind.final, data.eval_records, blind=True)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| seed | warm-up s | stages s | ToMe all | ToMe textvqa | blind all | blind textvqa |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b = r.get("blind", {})
        print(
            f"| {r['seed']} | {r['warmup_s']:.0f} | {r['stages_s']:.0f} | {r['tome']['all']:.1f} | "
            f"{r['tome'].get('textvqa', 0):.1f} | {b.get('all', float('nan')):.1f} | "
            f"{b.get('textvqa', float('nan')):.1f} |"
        )


if __name__ == "__main__":
    main()

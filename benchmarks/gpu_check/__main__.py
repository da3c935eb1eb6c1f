"""One command that proves the CUDA paths and measures the training step on a lent GPU.

    python -m benchmarks.gpu_check --out runs/gpu_check            # on a CUDA machine
    python -m benchmarks.gpu_check --dry-run --out /tmp/gpu_check  # CPU, tiny sizes, seconds

Sections, each recorded even when another fails:
  tests  ``pytest -m cuda`` over the files holding CUDA tests (cuda_tests.py);
  step   a training step of a random ViT-H RADIO at 768 px + a ~1.5B Qwen2-architecture LLM
         in bf16, with ToMe K = 256 and with ``compressor: none`` (2304 visual tokens):
         step time, tokens/s, peak memory, MFU (step.py states the FLOP count);
  merge  ``compress(grid, "tome")`` on [B, 48, 48, 1280] grids against its matmul bound.
Writes report.json, report.md, cuda_tests.log and cuda_tests.xml into --out. The dry run
takes the same code paths at tiny dims on the CPU; what needs CUDA says "skipped: no CUDA".
Exit code: 0 when every section ran and no test failed, else 1 (2: no CUDA, no --dry-run).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: put the project root first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[2])

import torch
import transformers
from transformers.utils import is_flash_attn_2_available

from benchmarks.gpu_check.cuda_tests import run_cuda_tests
from benchmarks.gpu_check.merge import merge_rows
from benchmarks.gpu_check.report import SKIPPED, write
from benchmarks.gpu_check.step import FLOPS_FORMULA, StepSizes, measure_step
from benchmarks.gpu_check.timing import datasheet_peak_tflops, matmul_tflops

# Qwen2-1.5B's shape (1.54B parameters with its tied 151936-word embedding)
QWEN2_1_5B = {
    "hidden_size": 1536,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "intermediate_size": 8960,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
}
# RADIOv2.5-H's ViT (vit_huge_patch16_224: 1280 wide, 32 blocks, 16 heads), 2048 px table
VIT_H = {
    "hidden_size": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "patch_size": 16,
    "max_img_size": 2048,
}
FULL = StepSizes(VIT_H, 768, 256, QWEN2_1_5B, 151936, 4, 128, warmup=3, repeats=10)
TINY_LLM = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_VIT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "patch_size": 16}
TINY = StepSizes(TINY_VIT, 96, 9, TINY_LLM, 2048, 2, 16, warmup=1, repeats=2)
# output merge: (grid side, channels, K, batches, repeats)
MERGE_FULL = (48, 1280, 256, (4, 32), 50)
MERGE_TINY = (12, 64, 16, (2,), 3)


def environment(device: str, peak_override: float | None) -> dict:
    cuda = device == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()})"
    peak = peak_override or (datasheet_peak_tflops(name) if cuda else None)
    source = "--peak-tflops" if peak_override else ("datasheet" if peak else "unknown")
    flash = None
    if is_flash_attn_2_available():
        import flash_attn

        flash = flash_attn.__version__
    return {
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "flash_attn": flash,
        "peak_tflops": peak,
        "peak_source": source,
        "matmul_tflops": matmul_tflops(device) if cuda else None,
    }


def run_section(name: str, fn) -> dict:
    """``fn()``'s rows, or the error it raised (printed, recorded; the next section runs)."""
    print(f"[{name}] ...", flush=True)
    start = time.perf_counter()
    try:
        section = {"rows": fn()}
    except Exception as err:  # one broken section must not cost the others' device time
        traceback.print_exc()
        section = {"error": f"{type(err).__name__}: {err}"}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    section["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[{name}] done in {section['seconds']} s", flush=True)
    return section


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, seconds")
    parser.add_argument("--batch", type=int, help="images per training step (default 4)")
    parser.add_argument("--peak-tflops", type=float, help="bf16 peak for a card not listed")
    parser.add_argument("--skip", nargs="*", default=[], choices=["tests", "step", "merge"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device here; run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    sizes = TINY if args.dry_run else FULL
    if args.batch:
        sizes = dataclasses.replace(sizes, batch=args.batch)
    side, channels, k, batches, repeats = MERGE_TINY if args.dry_run else MERGE_FULL
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(device, args.peak_tflops)
    print(env, flush=True)
    if device == "cpu":
        print(f"device: CPU; peak memory, MFU and the bf16 matmul ceiling: {SKIPPED}")

    sections: dict[str, dict] = {}
    report = {"environment": env, "sizes": dataclasses.asdict(sizes), "sections": sections}
    if "tests" not in args.skip:
        sections["tests"] = run_section("tests", lambda: run_cuda_tests(args.out))
        write(report, args.out)  # after every section: a killed run still leaves its results
    if "step" not in args.skip:
        with tempfile.TemporaryDirectory() as folder:
            sections["step"] = run_section(
                "step",
                lambda: [measure_step(sizes, c, Path(folder), device) for c in ("none", "tome")],
            )
        sections["step"]["formula"] = FLOPS_FORMULA
        sections["step"]["description"] = (
            f"B = {sizes.batch} images of {sizes.image} px, {sizes.text_tokens} text tokens, "
            f"ToMe K = {sizes.num_tokens}, bf16, sdpa; forward + loss + backward, no optimizer; "
            f"median of {sizes.repeats} after {sizes.warmup} warm-up steps"
        )
        write(report, args.out)
    if "merge" not in args.skip:
        sections["merge"] = run_section(
            "merge", lambda: merge_rows(side, channels, k, batches, repeats, device)
        )
    print(write(report, args.out), flush=True)
    tests = sections.get("tests", {}).get("rows", {})
    broken = any("error" in s for s in sections.values())
    failed = tests.get("failed", 0) + tests.get("errors", 0)
    return 1 if broken or failed else 0


if __name__ == "__main__":
    sys.exit(main())

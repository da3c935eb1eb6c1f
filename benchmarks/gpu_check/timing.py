"""Timing that is right on both devices: CUDA events around each call on a GPU (work there
is asynchronous), the wall clock on the CPU; warm-up first, then the median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

# Dense bf16 peak (TFLOP/s, no sparsity) by datasheet, matched against the device name in
# order; MFU is taken against this. Override with --peak-tflops for a card not listed.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.4),
    ("H200", 989.4),
    ("H20", 148.0),
    ("A100", 312.0),
    ("L40S", 362.1),
)


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):  # allocator growth, kernel selection, lazy module loading
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def datasheet_peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the device called ``name``, if listed."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key in name:
            return peak
    return None


def matmul_tflops(device: str, n: int = 8192, repeats: int = 10) -> float:
    """Achieved TFLOP/s of one n x n x n bf16 product on random data (the practical ceiling
    an MFU can be read against besides the datasheet)."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    ms = median_ms(lambda: a @ b, repeats, warmup=3, device=device)
    return 2 * n**3 / (ms / 1e3) / 1e12

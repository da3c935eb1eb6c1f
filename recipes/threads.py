"""torch's CPU thread count, set on purpose by every long job (quickstart, compare).

torch's OpenMP threads thrash when another busy process shares the cores: on a 2-core machine
stage 0 ran 20-30x slower with torch's default 2 threads beside one other busy process. Each
job therefore takes ``--threads N`` (default: the cores this process may use), prints it and
saves it with its results; pass --threads 1 when the machine is shared.
Measured (recipes/quickstart/calibration.md): the dense stage 0 at 128 px, batch 32, 0.18 s a
step with 2 threads vs 0.32 s with 1 on 2 quiet cores.
"""

from __future__ import annotations

import os
import platform

import torch


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None, echo=print) -> int:
    """Set torch's intra-op threads to ``threads`` (None: ``default_threads()``); says so."""
    threads = default_threads() if threads is None else threads
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    torch.set_num_threads(threads)
    echo(f"[radio-vlm] torch threads: {threads} (set with --threads)")
    return threads


def machine_facts() -> dict[str, str | int]:
    """What a result was computed on, saved beside it: the same seed can round differently on
    another CPU or torch build (a dense_word cell moved by 33 points between two machines), so
    numbers from different machines are compared knowing it."""
    return {
        "cpu": _cpu_model(),
        "cores": default_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the kernels torch picked
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()

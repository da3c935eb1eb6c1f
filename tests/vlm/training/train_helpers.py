"""Helpers shared by the training tests: tiny recipes in a temp dir, loss logs, subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from vlm.training import Recipe, load_recipe

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "recipes" / "tiny"
STAGES = ("stage1_align", "stage2_pretrain", "stage3_sft")


def tiny_recipe(stage: str, output_dir: Path, *overrides: str) -> Recipe:
    """recipes/tiny/<stage>.yaml writing into ``output_dir``, plus ``overrides``."""
    return load_recipe(TINY / f"{stage}.yaml", [f"train.output_dir={output_dir}", *overrides])


def losses(output_dir: Path) -> dict[int, float]:
    """step -> logged training loss, from the run's trainer_state.json."""
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return {h["step"]: h["loss"] for h in state["log_history"] if "loss" in h}


def state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def child_env(threads: int = 1) -> dict[str, str]:
    """Environment of a training subprocess: one thread (bitwise reproducible, and two
    children fit on two cores), DeepSpeed's ops built once into a reused cache folder."""
    env = dict(os.environ)
    env.setdefault(
        "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "radio-vlm" / "torch_extensions")
    )
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)  # it would silently turn DeepSpeed into DDP
    return env


def train_command(recipe: Path, *args: str) -> list[str]:
    """`python -m vlm.training.cli RECIPE ARGS` (what `radio-vlm train` runs)."""
    return [sys.executable, "-m", "vlm.training.cli", str(recipe), *args]


def accelerate_command(config: str, recipe: Path, *args: str, processes: int = 2) -> list[str]:
    """`accelerate launch --config_file recipes/accelerate/<config>.yaml recipes/train.py ...`"""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes" / "accelerate" / f"{config}.yaml"),
        "--num_processes",
        str(processes),
        str(REPO / "recipes" / "train.py"),
        str(recipe),
        *args,
    ]


def run(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run from the repository root (the DeepSpeed JSON paths are relative to it); on failure
    raise with the output's tail."""
    result = subprocess.run(
        command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
            f"{result.stderr[-6000:]}"
        )
    return result

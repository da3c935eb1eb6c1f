"""The loss curve of a run as a PNG beside its trainer_state.json (the JSON log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def loss_plot(log_history: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Training loss (and learning rate, right axis) per step; None when nothing was logged."""
    points = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    if not points:
        return None
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(6, 3.5), dpi=100)
    ax = figure.add_subplot()
    ax.plot(*zip(*points, strict=True), color="tab:blue", label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    rates = [(h["step"], h["learning_rate"]) for h in log_history if "learning_rate" in h]
    if rates:
        right = ax.twinx()
        right.plot(*zip(*rates, strict=True), color="tab:gray", linestyle=":", label="lr")
        right.set_ylabel("learning rate (first group)")
    figure.tight_layout()
    figure.savefig(path)
    return path

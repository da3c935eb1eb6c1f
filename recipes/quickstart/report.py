"""The quickstart's report: results.json, report.md and three PNGs.

- accuracy.png:     the headline score of every task per compared setting (bars).
- tome_merge.png:   a synthdoc page, what ToMe merged on the trained encoder's features, and
                    what each merged token 'sees' (its members' mean colour).
- encoder_pca.png:  first three principal components of the encoder's patch features, for a
                    few pages (one basis shared by all, so colours compare).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from PIL import Image

# task -> (metric key in vlm.evaluate's output, column title, scale to 0..100)
HEADLINE = {
    "textvqa_val_local": ("exact_match", "TextVQA acc", 100.0),
    "docvqa_val_local": ("anls", "DocVQA ANLS", 100.0),
    # item accuracy (share of pages read right); ocrbench_accuracy is the score / 1000
    "ocrbench_local": ("ocrbench_item_accuracy", "OCRBench acc", 100.0),
}


def scores(metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """{column title: score in 0..100} from ``vlm.evaluate``'s metrics (missing: NaN)."""
    out = {}
    for task, (key, title, scale) in HEADLINE.items():
        value = metrics.get(task, {}).get(key)
        out[title] = float("nan") if value is None else scale * float(value)
    return out


def headline(metrics: Mapping[str, Mapping[str, float]]) -> str:
    return " / ".join(f"{v:.0f}" for v in scores(metrics).values())


def markdown_table(results: Mapping[str, Any]) -> str:
    """| setting | visual tokens / image | TextVQA | DocVQA | OCRBench | train s |"""
    titles = [title for _, title, _ in HEADLINE.values()]
    lines = [
        "| setting | visual tokens / image | " + " | ".join(titles) + " | train s |",
        "|---" * (len(titles) + 3) + "|",
    ]
    for method, cell in results["cells"].items():
        name = "image-blind (ToMe, blank pages)" if cell["blind"] else method
        values = " | ".join(_fmt(cell["scores"][t]) for t in titles)
        train_s = sum(cell["train_seconds"].values())
        lines.append(f"| {name} | {cell['visual_tokens']} | {values} | {train_s:.0f} |")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def write_report(
    results: dict[str, Any], tome_dir: Path, data: Any, out: Path, *, elapsed: float
) -> list[Path]:
    """Write results.json, report.md and the PNGs; returns the paths written."""
    out = Path(out)
    results["elapsed_seconds"] = elapsed
    files = [
        accuracy_plot(results, out / "accuracy.png"),
        *encoder_pictures(tome_dir, data.eval_records[:4], out),
    ]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "report.md").write_text(report_text(results), encoding="utf-8")
    return [out / "report.md", out / "results.json", *files]


def report_text(results: Mapping[str, Any]) -> str:
    options, warm = results["options"], results["stage0"]
    sched, settings = options["schedule"], options["settings"]
    cells = results["cells"]
    tome = cells["tome"]["scores"]["TextVQA acc"]
    blind = cells.get("blind", {}).get("scores", {}).get("TextVQA acc", float("nan"))
    gap = (
        ""
        if math.isnan(blind)
        else f" ToMe beats the image-blind baseline by {tome - blind:.1f} points on TextVQA-style accuracy."
    )
    ci = (
        "\n> **CI-sized run** (`--ci`): a few steps only; the numbers mean nothing.\n"
        if options["ci"]
        else ""
    )
    steps = "\n".join(f"| {name} | {sec:.0f} |" for name, sec in results["step_seconds"].items())
    none = (
        " `none` keeps every patch (more tokens than the budget), for reference."
        if "none" in cells
        else ""
    )
    return f"""# radio-vlm quickstart
{ci}
A tiny RADIO-architecture encoder ({settings["encoder_depth"]} layers, width {settings["encoder_hidden"]}, patch {settings["patch_size"]}, {settings["image_size"]} px pages),
an output-level token compressor at **{settings["num_tokens"]} visual tokens per image**, an MLP projector and a tiny Qwen2
LLM ({settings["llm_layers"]} layers, width {settings["llm_hidden"]}, locally trained BPE tokenizer) learn to read synthetic documents
(synthdoc, easy level, {len(settings["vocabulary"] or ())}-word vocabulary) on the CPU. Scores are lmms-eval's own metrics on the
offline tasks textvqa_val_local / docvqa_val_local / ocrbench_local ({options["num_eval"]} held-out pages).{gap}

## Results at an equal visual-token budget

{markdown_table(results)}
![accuracy per setting](accuracy.png)

The image-blind row is the same ToMe model trained and evaluated on blank pages: what the LLM
guesses from the question alone.{none}

On these one-word pages the compressors tie: any 16-token summary of a page keeps its one large
word (a negative control for the method). Where what a compressor keeps matters (small text
on a mostly blank page, a per-patch stage 0 that keeps the features local) is the dense
world: `radio-vlm compare recipes/compare/dense_word.yaml --seeds 0,1,2` (see the README).

## How it was trained

| step | what | steps | LR |
|---|---|---|---|
| stage 0 (warm-up) | encoder + throw-away linear head classify the page's word (mean-pooled patches) | {sched["warmup_steps"]} | {sched["warmup_lr"]} |
| 1 align | projector | {sched["steps"][0]} | {sched["lr"][0]} |
| 2 pretrain | projector + LLM | {sched["steps"][1]} | {sched["lr"][1]} |
| 3 SFT | everything (encoder LR {sched["encoder_lr"]}) | {sched["steps"][2]} | {sched["lr"][2]} |

Batch {sched["batch_size"]}; stages 1-3 run through `vlm.training.train`, the code behind
`recipes/train.py` / `radio-vlm train` (each cell's resolved recipes: `runs/<setting>/stage*/recipe.yaml`).
**Stage 0 is an extra step of this demo**: trained jointly from scratch, the tiny random encoder
never starts to carry the word, and the LLM learns to ignore the image
(recipes/quickstart/calibration.md). Stage 0 ended at loss {warm.get("loss", float("nan")):.2f},
train accuracy {100 * warm.get("train_accuracy", float("nan")):.0f}%. All settings share the warmed encoder; the
blind baseline starts from the un-warmed one (it never sees a page).

## What ToMe merged, and what the encoder sees

![ToMe merge](tome_merge.png)

![encoder PCA](encoder_pca.png)

## Time

| step | seconds |
|---|---|
{steps}
| total | {results["elapsed_seconds"]:.0f} |
"""


def accuracy_plot(results: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: settings x tasks (headline score, 0..100)."""
    cells = results["cells"]
    names = [
        ("blind" if c["blind"] else m) + f"\n{c['visual_tokens']} tok" for m, c in cells.items()
    ]
    titles = [title for _, title, _ in HEADLINE.values()]
    fig = Figure(figsize=(7, 3.6), dpi=110)
    ax = fig.subplots()
    width = 0.8 / len(titles)
    x = np.arange(len(cells))
    for i, title in enumerate(titles):
        values = [np.nan_to_num(c["scores"][title]) for c in cells.values()]
        ax.bar(x + (i - (len(titles) - 1) / 2) * width, values, width, label=title)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("score (0-100)")
    ax.set_title("synthdoc held-out, equal visual-token budget")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    return path


@torch.no_grad()
def encoder_pictures(model_dir: Path, records: Sequence[Any], out: Path) -> list[Path]:
    """tome_merge.png and encoder_pca.png from the trained ToMe model's encoder."""
    from encoder.analysis import fit_pca, pca_image
    from recipes.quickstart.model import to_pixels
    from token_merge import compress, visualize
    from vlm.training import load_stage

    model, processor = load_stage(model_dir)
    size = processor.image_processor.resolution
    grids = model.vision_tower(to_pixels([r.image for r in records], size)).grid.float()
    k = model.config.compressor["num_tokens"]
    merged = compress(grids, "tome", k)
    big = [r.image.convert("RGB").resize((256, 256), Image.NEAREST) for r in records]
    fig = Figure(figsize=(3 * len(records), 6.2), dpi=100)
    axes = fig.subplots(2, len(records), squeeze=False)
    for i in range(len(records)):
        axes[0][i].imshow(visualize(big[i], merged, index=i, alpha=0.55))
        axes[0][i].set_title(f"ToMe {grids.shape[1]}x{grids.shape[2]} -> {k}", fontsize=9)
        axes[1][i].imshow(visualize(big[i], merged, index=i, style="mean"))
        axes[1][i].set_title(f"'{records[i].answers[0]}': token means", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    merge_path = out / "tome_merge.png"
    fig.savefig(merge_path)

    basis = fit_pca(list(grids))
    fig = Figure(figsize=(3 * len(records), 6.2), dpi=100)
    axes = fig.subplots(2, len(records), squeeze=False)
    for i in range(len(records)):
        axes[0][i].imshow(big[i])
        axes[0][i].set_title(records[i].question[:28], fontsize=8)
        axes[1][i].imshow(pca_image(grids[i], basis).numpy(), interpolation="nearest")
        axes[1][i].set_title("encoder features, PCA", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    pca_path = out / "encoder_pca.png"
    fig.savefig(pca_path)
    return [merge_path, pca_path]

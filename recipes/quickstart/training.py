"""Quickstart data and training: synthdoc splits on disk, stage 0, the three recipe stages.

    >>> data = write_data(settings, "runs/quickstart/data", num_train=4000, num_eval=300)
    >>> cell = train_cell(parts, settings, "tome", data, "runs/quickstart/tome", schedule)
    >>> quick_accuracy(cell.final, data.eval_records)       # greedy exact match, no lmms-eval

The three stages go through ``vlm.training.train`` with recipes built here (the same code
``recipes/train.py`` / ``radio-vlm train`` run); stage 0 is saved as a finished stage
(``complete.json``) so stage 1 starts from it with ``model.init_from``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image

from recipes.quickstart.model import TinyParts, TinySettings, assemble
from vlm.data import SynthDocConfig, generate_records, to_messages, write_llava
from vlm.evaluation.export import write_lmms_eval
from vlm.schema import STRICT

STAGES = ("align", "pretrain", "sft")


@dataclass
class Schedule:
    """Steps and learning rates of stage 0 and the three stages (one recipe each)."""

    __pydantic_config__ = STRICT

    warmup_steps: int = 800
    warmup_lr: float = 2e-3
    warmup_objective: Literal["mean", "dense"] = "mean"  # one-word pages | per patch: stage0.py
    # input sizes (px) stage 0 alternates between, RADIO-style multi-resolution training;
    # empty: the data's image size only
    warmup_sizes: tuple[int, ...] = ()
    steps: tuple[int, int, int] = (20, 120, 300)
    lr: tuple[float, float, float] = (2e-3, 1e-3, 1e-3)
    encoder_lr: float = 3e-4  # SFT: the (partly warmed) encoder keeps learning
    batch_size: int = 32
    seed: int = 0

    def scaled(self, factor: float) -> Schedule:
        """Every step count times ``factor`` (>= 2 steps each): the --ci sizes."""
        return dataclasses.replace(
            self,
            warmup_steps=max(2, round(self.warmup_steps * factor)),
            steps=tuple(max(2, round(s * factor)) for s in self.steps),
        )


@dataclass
class DataSplits:
    """Where ``write_data`` put things (+ the records, for stage 0 and quick checks)."""

    train_json: Path
    train_blank_json: Path
    eval_dir: Path
    eval_blank_dir: Path
    train_records: list[Any] = field(repr=False)
    eval_records: list[Any] = field(repr=False)


def synthdoc_config(settings: TinySettings, seed: int) -> SynthDocConfig:
    """synthdoc pages of ``settings.levels`` (the quickstart: easy, over its vocabulary; the
    dense world: dense, over every built-in word), of ``settings.styles``."""
    return SynthDocConfig(
        image_size=settings.image_size,
        levels=settings.levels,
        styles=settings.styles,
        form_values=settings.form_values,
        vocabulary=None if settings.vocabulary is None else list(settings.vocabulary),
        font_scale=settings.font_scale,
        colors=settings.colors,
        seed=seed,
    )


def blank(record: Any) -> Any:
    """The record with its image replaced by a blank page of the same size (image-blind)."""
    return dataclasses.replace(record, image=Image.new("RGB", record.image.size, (255, 255, 255)))


def write_data(
    settings: TinySettings, out: str | Path, *, num_train: int, num_eval: int, seed: int = 0
) -> DataSplits:
    """Train split as LLaVA JSON (+ a blank-image twin for the image-blind baseline); eval
    split (another synthdoc seed) in the three lmms-eval schemas (+ its blank twin)."""
    out = Path(out)
    done = out / "done.json"  # written last: a finished data folder is reused as it is
    train = list(generate_records(num_train, synthdoc_config(settings, seed)))
    evals = list(generate_records(num_eval, synthdoc_config(settings, seed + 1000)))
    splits = DataSplits(
        train_json=out / "train" / "llava.json",
        train_blank_json=out / "train_blank" / "llava.json",
        eval_dir=out / "eval",
        eval_blank_dir=out / "eval_blank",
        train_records=train,
        eval_records=evals,
    )
    wanted = {
        "num_train": num_train,
        "num_eval": num_eval,
        "seed": seed,
        **dataclasses.asdict(settings),
    }
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")) == json.loads(
        json.dumps(wanted)
    ):
        return splits
    write_llava(train, splits.train_json.parent)
    write_llava([blank(r) for r in train], splits.train_blank_json.parent)
    write_lmms_eval(evals, splits.eval_dir)
    write_lmms_eval([blank(r) for r in evals], splits.eval_blank_dir)
    done.write_text(json.dumps(wanted) + "\n", encoding="utf-8")
    return splits


def save_stage(model: Any, processor: Any, folder: Path, steps: int, info: dict) -> Path:
    """Save a model as a finished stage (``complete.json``) that ``init_from`` accepts."""
    from vlm.training.checkpoints import write_marker

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "stage0.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    write_marker(folder, "stage", steps, recursive=False)
    return folder


def stage_recipe(
    stage: str, init_from: Path, data_json: Path, output_dir: Path, schedule: Schedule
) -> dict[str, Any]:
    """One tiny stage's recipe (the mapping ``radio-vlm train`` reads from YAML)."""
    i = STAGES.index(stage)
    train: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": schedule.batch_size,
        "max_steps": schedule.steps[i],
        "learning_rate": schedule.lr[i],
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": max(1, schedule.steps[i] // 3),
        "save_steps": 10**6,  # only the final model: checkpoints cost time on 2 cores
        "save_total_limit": 1,
        "seed": schedule.seed + i,
        "use_cpu": True,
        "resume": "auto",  # a finished stage is skipped on re-runs
        "training_arguments": {"disable_tqdm": False},  # a progress bar per stage
    }
    if stage == "sft":
        train["modules"] = {"encoder": {"lr": schedule.encoder_lr}}
    return {
        "stage": stage,
        "model": {"init_from": str(init_from)},
        "data": {
            "kind": "llava",
            "path": str(data_json),
            "num_samples": None,
            "max_length": 1024,  # batches pad to their longest sample; none at 128 px: 256+
        },
        "train": train,
    }


@dataclass
class CellRun:
    """A trained comparison cell: its folders and timings."""

    method: str
    blind: bool
    stage0: Path
    stages: list[Path]
    seconds: dict[str, float]
    warmup: dict[str, float]

    @property
    def final(self) -> Path:
        return self.stages[-1]


def train_cell(
    parts: TinyParts,
    settings: TinySettings,
    method: str,
    data: DataSplits,
    out: str | Path,
    schedule: Schedule,
    *,
    blind: bool = False,
    num_tokens: int | None = None,
    resolution: int | None = None,
    tiling: dict[str, Any] | None = None,
    image_mode: str | None = None,
    dst: str | None = None,
    warmup: dict[str, float] | None = None,
    log: Any = print,
) -> CellRun:
    """Assemble the VLM around ``parts`` (an encoder already warmed up, or not), save it as
    stage 0 and run align -> pretrain -> SFT through ``vlm.training.train``; finished stages
    are kept (re-runs skip them). tiling, image_mode, dst: ``assemble``'s (saved with the
    model, so the stages keep them)."""
    import time

    from vlm.training import recipe_from_dict, train
    from vlm.training.checkpoints import is_complete

    out = Path(out)
    stage0, seconds = out / "stage0", {}
    if not is_complete(stage0):
        model, processor = assemble(
            parts,
            settings,
            method,
            num_tokens=num_tokens,
            resolution=resolution,
            tiling=tiling,
            image_mode=image_mode,
            dst=dst,
            seed=schedule.seed,
        )
        save_stage(model, processor, stage0, schedule.warmup_steps, {"warmup": warmup or {}})
    previous, finals = stage0, []
    data_json = data.train_blank_json if blind else data.train_json
    for i, stage in enumerate(STAGES):
        folder = out / f"stage{i + 1}_{stage}"
        start = time.perf_counter()
        if not is_complete(folder):
            train(recipe_from_dict(stage_recipe(stage, previous, data_json, folder, schedule)))
        seconds[stage] = time.perf_counter() - start
        log(f"  {method}{' (blind)' if blind else ''}: stage {stage} {seconds[stage]:.0f}s")
        previous = folder
        finals.append(folder)
    return CellRun(method, blind, stage0, finals, seconds, warmup or {})


@torch.no_grad()
def quick_accuracy(
    model_dir: str | Path, records: Sequence[Any], *, blind: bool = False, batch_size: int = 64
) -> dict[str, float]:
    """Greedy exact-match accuracy per style (lower-cased, stripped) on ``records``: a fast
    check for calibration; the demo's numbers come from lmms-eval."""
    from vlm.training import load_stage

    model, processor = load_stage(model_dir)
    model.eval()
    hits: dict[str, list[float]] = {}
    for start in range(0, len(records), batch_size):
        chunk = [blank(r) if blind else r for r in records[start : start + batch_size]]
        convs = [to_messages(r)[:1] for r in chunk]  # the question turn only
        batch = processor(
            images=[[r.image] for r in chunk], conversations=convs, add_generation_prompt=True
        )
        out = model.generate(**batch, max_new_tokens=6, do_sample=False)
        texts = processor.batch_decode(
            out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for r, text in zip(chunk, texts, strict=True):
            ok = text.strip().lower() in [a.lower() for a in r.answers]
            hits.setdefault(r.style, []).append(float(ok))
    result = {style: 100 * sum(v) / len(v) for style, v in hits.items()}
    result["all"] = 100 * sum(sum(v) for v in hits.values()) / len(records)
    return result

"""One compare cell: build (tiny) -> train -> evaluate -> speed; and the shared context
(data, the stage-0 encoder, reconstruction errors) all cells of a grid use."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.compare.probe import fit_char_probe
from recipes.quickstart.model import TinyParts, tiny_parts, to_pixels
from recipes.quickstart.stage0 import run_stage0
from recipes.quickstart.training import DataSplits, train_cell, write_data
from recipes.threads import machine_facts

CELL_FILE = "cell.json"  # a cell's record, written when the cell is finished


class Context:
    """What the cells of one grid share, made once on first use. ``parts``: the tiny parts
    with the stage-0 encoder already warmed (a parallel job gets its parent's)."""

    def __init__(
        self,
        grid: Any,
        out: Path,
        echo: Callable[[str], None],
        parts: TinyParts | None = None,
    ) -> None:
        self.grid, self.out, self.echo = grid, out, echo
        self.settings, self.schedule = grid.settings_obj, grid.schedule_obj
        self._data: DataSplits | None = None
        self._parts = parts

    @property
    def data(self) -> DataSplits:
        if self._data is None:
            self._data = write_data(
                self.settings, self.out / "data", seed=self.grid.seed, **self.grid.data
            )
        return self._data

    @property
    def parts(self) -> TinyParts:
        """The tiny parts with the stage-0 encoder (warmed once; saved for re-runs)."""
        if self._parts is None:
            parts = tiny_parts(self.settings, self.out, seed=self.grid.seed)
            saved = self.out / "stage0_encoder.pt"
            if saved.is_file():
                parts.encoder.load_state_dict(torch.load(saved, weights_only=True))
            else:
                warm = run_stage0(
                    parts.encoder,
                    self.data.train_records,
                    self.settings,
                    self.schedule,
                    seed=self.grid.seed,
                )
                self.echo(f"[compare] stage 0: loss {warm['loss']:.2f} in {warm['seconds']:.0f}s")
                torch.save(parts.encoder.state_dict(), saved)
            self._parts = parts
        return self._parts

    def reconstruction(self, budgets: list[int] | None = None) -> list[dict[str, Any]]:
        """Reconstruction error (per-channel normalised MSE) of the stage-0 encoder's features
        on 64 eval pages, for each (K, input resolution) the grid's cells use: the paper's
        Table A10, ToMe's sink layout (top-left, random) x matching metric (the features, as
        the paper; the attention keys, as ToMe, or values of the grid's
        ``reconstruction_block``) and avg-pool (``recipes.compare.reconstruction``). Pixel
        unshuffle only regroups channels, so it has none. On dense pages also ``char_*``: how
        many ink patches a linear probe (fitted on uncompressed training features, ``probe``)
        still names right after each compressor's tokens are unmerged (``char_none``: no
        compression). ``budgets``: these K at the data's own size instead of the cells'
        (K, size) pairs."""
        from recipes.compare.reconstruction import matching_metrics, measure

        encoder = self.parts.encoder  # (warms stage 0 up first if needed: outside no_grad)
        block = self.grid.reconstruction_block
        evals = self.data.eval_records[:64]
        dense = all("items" in r.meta for r in evals)
        default = self.settings.image_size
        pairs = sorted({(c.resolution or default, c.num_tokens) for c in self.grid.expand()})
        if budgets:
            pairs = [(default, k) for k in sorted(set(budgets))]
        rows = []
        for size in sorted({size for size, _ in pairs}):
            pixels = to_pixels([r.image for r in evals], size)
            grids, metrics = matching_metrics(encoder, pixels, block=block)  # [N, h, w, C]
            probe = self._char_probe(size) if dense else None
            labels = _labels(evals, grids.shape[1]) if dense else None
            for k in [k for s, k in pairs if s == size]:
                row: dict[str, Any] = {
                    "num_tokens": k,
                    "resolution": size,
                    "grid": list(grids.shape[1:3]),
                    "block": block,
                }
                row |= measure(grids, k, metrics, seed=self.grid.seed, probe=probe, labels=labels)
                rows.append(row)
        return rows

    def merge_picture(self, path: Path, num_pages: int = 3) -> Path:
        """Eval pages beside what ToMe and avg-pool make of the stage-0 features at the grid's
        smallest K: each patch coloured by the token it went to (``token_merge.visualize``),
        titled with the reconstruction error. ToMe spends tokens on the text; pooling cuts
        the page into equal cells whatever they hold."""
        from matplotlib.figure import Figure

        from token_merge import compress, reconstruction_error, visualize

        k = min(c.num_tokens for c in self.grid.expand() if c.compressor != "none")
        records = self.data.eval_records[:num_pages]
        size = self.settings.image_size
        with torch.no_grad():
            grids = self.parts.encoder(to_pixels([r.image for r in records], size)).grid
        merged = {"ToMe": compress(grids, "tome", k), "avg-pool": compress(grids, "avgpool", k)}
        errors = {  # per page, normalised over the pages shown
            name: reconstruction_error(grids, out, normalize=True, reduction="none")
            for name, out in merged.items()
        }
        fig = Figure(figsize=(9, 3 * len(records)), dpi=100)
        axes = fig.subplots(len(records), 3, squeeze=False)
        for i, record in enumerate(records):
            page = record.image.convert("RGB").resize((256, 256))
            axes[i][0].imshow(page)
            axes[i][0].set_title(f"{record.question[:34]} ({record.answers[0]})", fontsize=8)
            for j, (name, out) in enumerate(merged.items(), start=1):
                error = float(errors[name][i])
                axes[i][j].imshow(visualize(page, out, index=i, alpha=0.55))
                axes[i][j].set_title(
                    f"{name}, {grids.shape[1]}x{grids.shape[2]} -> {k}: error {error:.2f}",
                    fontsize=8,
                )
        for ax in axes.flat:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path)
        return path

    def _char_probe(self, size: int) -> torch.nn.Module:
        """The linear character probe on 256 training pages' stage-0 features at ``size`` px."""
        train = [r for r in self.data.train_records if "items" in r.meta][:256]
        with torch.no_grad():
            grids = self.parts.encoder(to_pixels([r.image for r in train], size)).grid
        return fit_char_probe(grids, _labels(train, grids.shape[1]), seed=self.grid.seed)


def _labels(records: list[Any], grid: int) -> torch.Tensor:
    """[N, grid, grid] character classes of dense records (``dense_targets``)."""
    from vlm.data.synthdoc_dense import dense_targets

    rows = [dense_targets(r.meta["items"], r.image.width, grid) for r in records]
    return torch.from_numpy(np.stack(rows))


def run_and_save(context: Context, cell: Any) -> dict[str, Any]:
    """``run_cell``, timed; its record is written to ``cells/<key>/cell.json`` and returned."""
    start = time.perf_counter()
    record = run_cell(context, cell)
    record["seconds"] = time.perf_counter() - start
    record["threads"] = torch.get_num_threads()  # what this cell ran with, and where
    record["machine"] = machine_facts()
    folder = context.out / "cells" / cell.key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CELL_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def run_cell(context: Context, cell: Any) -> dict[str, Any]:
    """Train (train: tiny) and evaluate one cell; returns its record (cell.json)."""
    from vlm.evaluation import evaluate

    grid, settings = context.grid, context.settings
    folder = context.out / "cells" / cell.key
    if cell.model is not None:
        model_dir, train_seconds = Path(cell.model), {}
    elif grid.train == "none":
        raise ValueError(
            f"cell {cell.key}: train is 'none', so the cell needs model: <trained folder>"
        )
    else:
        if cell.encoder != "tiny":
            raise ValueError(
                f"cell {cell.key}: train 'tiny' builds the quickstart's tiny encoder only; got "
                f"encoder {cell.encoder!r}. Train real encoders with recipes/ and pass model: DIR"
            )
        parts = _cell_parts(context, cell)
        run = train_cell(
            parts,
            settings,
            cell.compressor,
            context.data,
            folder / "train",
            context.schedule,
            num_tokens=cell.num_tokens,
            resolution=cell.resolution,
            blind=cell.blind,
            tiling=cell.tiling,
            image_mode=cell.image_mode,
            dst=cell.dst,
            log=context.echo,
        )
        model_dir, train_seconds = run.final, run.seconds
    ev = grid.eval
    metrics = evaluate(
        str(model_dir),
        grid.eval_tasks,
        data_dir=context.data.eval_blank_dir if cell.blind else context.data.eval_dir,
        limit=ev.get("limit"),
        batch_size=ev.get("batch_size", 16),
        output_dir=folder / "eval",
        model_args={"max_new_tokens": 8},
    )
    visual, speed = tokens_and_speed(model_dir, context.data.eval_records[:32])
    return {
        "cell": {k: getattr(cell, k) for k in cell.__dataclass_fields__},
        "key": cell.key,
        "model_dir": str(model_dir),
        "train_seconds": train_seconds,
        "metrics": metrics,
        "visual_tokens": visual,
        "llm_tokens_per_s": speed,
    }


def _cell_parts(context: Context, cell: Any) -> TinyParts:
    parts = context.parts
    options = {
        "blockwise_tome": cell.num_tokens if cell.blockwise else None,
        "feature_layers": list(cell.feature_layers) if cell.feature_layers else None,
        "aggregation": cell.aggregation,
    }
    if not (options := {k: v for k, v in options.items() if v is not None}):
        return parts
    from encoder import build_encoder

    # the same (warmed) weights in a tower that merges inside its blocks to K tokens or
    # hands on other blocks' features
    encoder = build_encoder(context.out / "tiny_radio", **options)
    encoder.load_state_dict(parts.encoder.state_dict())
    return TinyParts(encoder, parts.llm, copy.deepcopy(parts.tokenizer))


@torch.no_grad()
def tokens_and_speed(model_dir: Path, records: list[Any], repeats: int = 3) -> tuple[int, float]:
    """(visual tokens per image, LLM prefill tokens/s on a batch of eval prompts; the encoder
    and compressor are not timed)."""
    from vlm.data import to_messages
    from vlm.training import load_stage

    model, processor = load_stage(model_dir)
    convs = [to_messages(r)[:1] for r in records]  # the question turn only
    batch = processor(
        images=[[r.image] for r in records], conversations=convs, add_generation_prompt=True
    )
    visual = int((batch["input_ids"][0] == model.config.image_token_id).sum())
    # the LLM alone (visual tokens already in place): what the token budget changes
    embeds = model.get_input_embeddings()(batch["input_ids"])
    embeds = model.insert_images(batch["input_ids"], embeds, batch["pixel_values"])
    mask = batch["attention_mask"]
    model.language_model(inputs_embeds=embeds, attention_mask=mask)  # warm
    start = time.perf_counter()
    for _ in range(repeats):
        model.language_model(inputs_embeds=embeds, attention_mask=mask)
    seconds = (time.perf_counter() - start) / repeats
    return visual, float(mask.sum()) / seconds

"""Host memory per process under ZeRO-3: the old build against the model born partitioned.

    python benchmarks/zero3_memory.py [--layers 17 --hidden 2048 --intermediate 5632]

A random Qwen2-style LLM (default 1.0B parameters) is written to disk the way hub LLMs ship
(save_pretrained: bfloat16 safetensors, 1 GB shards, with a tokenizer). Then the stage-1
recipe (align: encoder and LLM frozen, the projector trains; recipes/tiny's data and tiny
RADIO, ``model.llm`` = that LLM, ``model.dtype: float32``) runs ONE training step and its
final save, twice, each time with 2 CPU processes through ``accelerate launch`` and the
shipped recipes/accelerate/zero3.yaml:

- ``before``: the model built whole in every process outside ``deepspeed.zero.Init`` (what
  vlm.training.run did before: ``build_model``; DeepSpeed partitions it when the Trainer
  starts) and saved with the Trainer's own 16-bit gather;
- ``after``: the shipped path (``vlm.training.run.stage_model``): assembled to disk tensor by
  tensor by the main process, loaded partitioned by ``from_pretrained``, saved by
  ``composite.save_in_dtype``.

Each process reports its peak resident memory (VmHWM: anonymous + file-backed pages, e.g. a
memory-mapped checkpoint) after the model is loaded, after the training step and at the end
(the save included), plus the peak of its anonymous memory alone (sampled every 10 ms; what
the kernel cannot drop under pressure), each as a ratio to the full model's float32 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: put the project root first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
PHASES = ("start", "loaded", "engine", "stepped", "end")


def status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class AnonPeak(threading.Thread):
    """Samples RssAnon every 10 ms (the kernel records no peak for it)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, status("RssAnon"))
            time.sleep(0.01)


def rank_main(mode: str, report: Path, recipe_args: list[str]) -> None:
    """One process of a launch: train the stage with the ``mode`` build, then write this
    rank's measurements to ``report``-<rank>.json."""
    from vlm.training import cli, run
    from vlm.training.composite import outside_zero3
    from vlm.training.loading import build_model
    from vlm.training.trainer import VLMTrainer

    sampler = AnonPeak()
    sampler.start()
    marks: dict = {}

    def mark(phase: str) -> None:
        sampler.peak = max(sampler.peak, status("RssAnon"))
        marks[phase] = {"vmhwm": status("VmHWM"), "anon_peak": sampler.peak}

    def old_stage_model(recipe, args, quant, main, resuming):
        with outside_zero3():  # as before: built before TrainingArguments existed
            model, processor = build_model(recipe.model, seed=args.seed, llm_loader_kwargs=quant)
        return model, processor, None  # None: the Trainer's own save

    new_stage_model = run.stage_model

    def stage_model(*args, **kwargs):
        mark("start")  # imports, process group, data: before any model exists
        model, processor, source = (
            new_stage_model if mode.startswith("after") else old_stage_model
        )(*args, **kwargs)
        marks["model_bytes"] = 4 * sum(
            getattr(p, "ds_numel", p.numel()) for p in model.parameters()
        )
        mark("loaded")
        return model, processor, source

    save_model = VLMTrainer.save_model

    def first_save_marks(self, *args, **kwargs):
        if "stepped" not in marks:
            mark("stepped")
        return save_model(self, *args, **kwargs)

    begin = run.RunInfoCallback.on_train_begin

    def engine_marks(self, *args, **kwargs):
        mark("engine")  # the Trainer's DeepSpeed engine and optimizer exist, no step yet
        return begin(self, *args, **kwargs)

    run.stage_model = stage_model
    run.RunInfoCallback.on_train_begin = engine_marks
    VLMTrainer.save_model = first_save_marks
    started = time.time()
    code = cli.main(recipe_args)
    mark("end")
    marks["seconds"] = time.time() - started
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{report}-{rank}.json").write_text(json.dumps(marks), encoding="utf-8")
    raise SystemExit(code)


def write_llm(folder: Path, layers: int, hidden: int, intermediate: int, vocab: int) -> int:
    """A random Qwen2 LLM + tokenizer saved like a hub model (bf16 shards); its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlm.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer("chatml")
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 128,
        num_key_value_heads=hidden // 128,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    llm.save_pretrained(folder, max_shard_size="1GB")
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in llm.parameters())


def launch(mode: str, llm: Path, work: Path) -> tuple[list[dict], float]:
    out = work / mode
    overrides = {
        "model.llm": str(llm),
        "model.dtype": "float32",
        "train.output_dir": str(out),
        "train.max_steps": 1,
        "train.save_steps": 1000,
        "train.per_device_train_batch_size": 1,
        "data.num_samples": 8,
        "data.max_length": 128,
    }
    config = REPO / "recipes" / "accelerate" / "zero3.yaml"
    if mode == "after-capped":
        config = capped_config(work)
    recipe = [str(REPO / "recipes" / "tiny" / "stage1_align.yaml")]
    recipe += [x for k, v in overrides.items() for x in ("--override", f"{k}={v}")]
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config),
        "--num_processes", "2",
        str(Path(__file__).resolve()), "--rank-entry", mode, str(work / f"report-{mode}"), *recipe,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_USE_CPU", None)
    started = time.time()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.time() - started
    if result.returncode != 0:
        sys.exit(f"{mode} launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    reports = [json.loads((work / f"report-{mode}-{r}.json").read_text()) for r in (0, 1)]
    return reports, seconds


def capped_config(work: Path) -> Path:
    """zero3.yaml with ZeRO-3's gathered parameters released after every module
    (stage3_max_live_parameters 2e7, stage3_max_reuse_distance 0): on a CPU the device is
    the host, so the parameters a step gathers (up to 1e9 live in the shipped JSON, kept for
    the backward pass) count in host memory here; on GPUs they live in GPU memory."""
    ds = json.loads((REPO / "recipes" / "deepspeed" / "zero3.json").read_text(encoding="utf-8"))
    zero = ds["zero_optimization"]
    zero.update(stage3_max_live_parameters=20_000_000, stage3_max_reuse_distance=0)
    (work / "zero3_capped.json").write_text(json.dumps(ds), encoding="utf-8")
    text = (REPO / "recipes" / "accelerate" / "zero3.yaml").read_text(encoding="utf-8")
    text = text.replace("recipes/deepspeed/zero3.json", str(work / "zero3_capped.json"))
    (work / "zero3_capped.yaml").write_text(text, encoding="utf-8")
    return work / "zero3_capped.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=17)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--modes", default="before,after,after-capped")
    args = parser.parse_args()
    if args.hidden < 128 or args.hidden % 128:  # the LLM has heads of 128 channels
        parser.error(f"--hidden must be a multiple of 128 (heads of 128); got {args.hidden}")
    with tempfile.TemporaryDirectory(prefix="zero3-memory-") as tmp:
        work = Path(tmp)
        llm = work / "llm"
        # a child process writes it, so this one stays small while the launches run
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.zero3_memory import "
            "write_llm; from pathlib import Path; print(write_llm(Path(sys.argv[2]), "
            f"{args.layers}, {args.hidden}, {args.intermediate}, {args.vocab}))"
        )
        written = subprocess.run(
            [sys.executable, "-c", code, str(REPO), str(llm)],
            check=True, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
        )  # fmt: skip
        llm_params = int(written.stdout.strip().splitlines()[-1])
        print(f"random Qwen2 LLM: {llm_params / 1e9:.3f}B parameters, saved in bf16")
        rows = []
        for mode in args.modes.split(","):
            reports, seconds = launch(mode, llm, work)
            rows.append((mode, reports, seconds))
        full = rows[0][1][0]["model_bytes"]
        print(f"full VLM in float32: {full / GIB:.2f} GiB; 2 processes, ZeRO-3, 1 step + save")
        print(
            "VmHWM at each point, GiB (ratio to the full float32 model); 'start': before any "
            "model exists (imports, process group); 'above start': end - start"
        )
        print(
            "| build | rank | start | model loaded | engine ready | after the step | end (save) "
            "| above start "
            "| anon peak | launch |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for mode, reports, seconds in rows:
            for rank, marks in enumerate(reports):
                cells = [cell(marks[p]["vmhwm"], full) for p in PHASES]
                above = cell(marks["end"]["vmhwm"] - marks["start"]["vmhwm"], full)
                anon = cell(marks["end"]["anon_peak"], full)
                print(
                    f"| {mode} | {rank} | {' | '.join(cells)} | {above} | {anon} | {seconds:.0f} s |"
                )


def cell(size: int, full: int) -> str:
    return f"{size / GIB:.2f} ({size / full:.2f}x)"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-entry":
        rank_main(sys.argv[2], Path(sys.argv[3]), sys.argv[4:])
    else:
        main()

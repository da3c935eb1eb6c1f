"""DeepSpeed ZeRO-2 / ZeRO-3 with 2 CPU processes through `accelerate launch` and the shipped
configs (recipes/accelerate/zero*.yaml): a few steps, stop, resume; the resumed run's losses
and final weights equal an uninterrupted run's exactly. The stage is SFT, so the encoder, the
projector and the LLM all have sharded weights and optimizer state to restore.

Wrong launch setups degrade SILENTLY on CPU (ACCELERATE_USE_CPU turns DeepSpeed into DDP, a
MULTI_CPU config starts one process, without use_cpu every process is rank 0 of 1), so every
launch asserts what it really got, from the run_info.json the run writes at train start.
Slow (~20-50 s per launch; the first ever also builds DeepSpeed's shm op, ~50 s, cached in
TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import TINY, accelerate_command, losses, run

from vlm.training import load_stage
from vlm.training.checkpoints import MARKER, latest_checkpoint

pytestmark = pytest.mark.distributed

OPTIMIZER = {2: "DeepSpeedZeroOptimizer", 3: "DeepSpeedZeroOptimizer_Stage3"}


def launched(out):
    return json.loads((out / "run_info.json").read_text())


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_with_two_cpu_processes_then_resume(tmp_path, stage):
    out = tmp_path / f"zero{stage}"
    overrides = [
        f"train.output_dir={out}",
        "train.max_steps=6",
        "train.save_steps=2",
        "train.per_device_train_batch_size=4",
        "stage=sft",  # every module trains
    ]
    args = [a for o in overrides for a in ("--override", o)]
    recipe = TINY / "stage1_align.yaml"

    first = run(
        accelerate_command(f"zero{stage}", recipe, *args, "--override", "train.stop_at_step=4")
    )
    for info in [launched(out)]:
        assert info["distributed_type"] == "DEEPSPEED"
        assert info["num_processes"] == 2
        assert info["zero_stage"] == stage
        assert info["engine"] == "DeepSpeedEngine"
        assert OPTIMIZER[stage] in info["optimizer"] and info["optimizer"][-1] == "AdamW"
        assert {g["name"] for g in info["param_groups"]} >= {"encoder", "projector", "llm"}
    assert "stopped at step 4 of 6" in first.stdout
    assert latest_checkpoint(out).name == "checkpoint-4" and not (out / MARKER).exists()
    assert (out / "checkpoint-4" / "global_step4").is_dir()  # DeepSpeed's own shards

    (out / "run_info.json").unlink()
    if stage == 2:
        second = run(accelerate_command("zero2", recipe, *args, "--resume"))
    else:  # the same launch through `radio-vlm train --accelerate`
        accelerate = ["--accelerate", "recipes/accelerate/zero3.yaml", "--num-processes", "2"]
        second = run(
            [
                sys.executable,
                "-m",
                "recipes.cli",
                "train",
                str(recipe),
                *args,
                *accelerate,
                "--resume",
            ]
        )
    info = launched(out)
    assert (info["distributed_type"], info["num_processes"], info["zero_stage"]) == (
        "DEEPSPEED",
        2,
        stage,
    )
    assert info["engine"] == "DeepSpeedEngine" and OPTIMIZER[stage] in info["optimizer"]
    assert f"resuming from {out / 'checkpoint-4'}" in second.stdout
    assert sorted(losses(out)) == list(range(1, 7))
    assert (out / MARKER).is_file()
    model, _ = load_stage(out)  # the gathered final weights load as a plain model
    assert sum(p.numel() for p in model.parameters()) > 0

    # the same stage without the interruption: identical losses and final weights
    full = tmp_path / f"zero{stage}-uninterrupted"
    reference = [a if a != f"train.output_dir={out}" else f"train.output_dir={full}" for a in args]
    run(accelerate_command(f"zero{stage}", recipe, *reference))
    assert losses(out) == losses(full)
    final, expected = (load_file(d / "model.safetensors") for d in (out, full))
    assert set(final) == set(expected)
    assert {k.split(".")[0] for k in final} == {"vision_tower", "projector", "language_model"}
    assert [k for k in final if not torch.equal(final[k], expected[k])] == []

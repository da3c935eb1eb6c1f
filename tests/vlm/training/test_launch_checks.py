"""Launch-time checks that need no launch: silent DeepSpeed fallback, bf16 agreement, batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from vlm.schema import RecipeError
from vlm.training import TrainSpec
from vlm.training.run import launch_settings, resolve_bf16
from vlm.training.trainer import RunInfoCallback, describe_run


def fake_trainer(kind: DistributedType, processes: int):
    optimizer = SimpleNamespace(optimizer=torch.optim.SGD([torch.zeros(1)], lr=0.1))
    optimizer.param_groups = [{"name": "projector", "lr": 0.1}]
    return SimpleNamespace(
        accelerator=SimpleNamespace(
            distributed_type=kind,
            num_processes=processes,
            mixed_precision="no",
            state=SimpleNamespace(deepspeed_plugin=None),
        ),
        args=SimpleNamespace(device="cpu"),
        model_wrapped=torch.nn.Linear(1, 1),
        optimizer=optimizer,
    )


def test_a_deepspeed_launch_that_got_ddp_is_refused(monkeypatch, tmp_path):
    trainer = fake_trainer(DistributedType.MULTI_CPU, 2)
    info = describe_run(trainer)
    assert info["optimizer"] == ["SimpleNamespace", "SGD"] and info["engine"] == "Linear"
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # set by accelerate for zero*.yaml
    state = SimpleNamespace(is_world_process_zero=True)
    with pytest.raises(RuntimeError, match=r"configured for DeepSpeed but the run got MULTI_CPU"):
        RunInfoCallback(trainer).on_train_begin(SimpleNamespace(output_dir=tmp_path), state, None)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    RunInfoCallback(trainer).on_train_begin(SimpleNamespace(output_dir=tmp_path), state, None)
    assert (tmp_path / "run_info.json").is_file()


def test_bf16_follows_or_must_agree_with_the_accelerate_config(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert resolve_bf16(None, use_cpu=True) is False
    assert resolve_bf16(True, use_cpu=True) is True
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_bf16(None, use_cpu=True) is True
    with pytest.raises(RecipeError, match=r"train.bf16=False but .* mixed_precision 'bf16'"):
        resolve_bf16(False, use_cpu=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # DeepSpeed JSON "auto" decides
    assert resolve_bf16(True, use_cpu=False) is True


def test_global_batch_size_sets_accumulation_per_process_count(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    spec = TrainSpec(per_device_train_batch_size=4, global_batch_size=128, use_cpu=True)
    assert launch_settings(spec)["gradient_accumulation_steps"] == 4
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(RecipeError, match=r"not a multiple of .* 4 x 3 = 12"):
        launch_settings(spec)

"""FSDP2 as the second engine (recipes/accelerate/fsdp2.yaml): what can be checked on a CPU.

accelerate 1.15 cannot run FSDP on CPU processes, although torch 2.14's FSDP2 (fully_shard)
itself trains on the CPU over gloo: accelerate's PartialState._prepare_backend gives CPU
processes the distributed type MULTI_CPU (train.use_cpu) or NO (without it, each process
then being rank 0 of 1), and AcceleratorState switches to FSDP only from GPU-type
distributed types (MULTI_GPU, MULTI_NPU, ...; accelerate/state.py). So the config is checked
for validity here, and a CPU launch of it must stop with that explanation instead of training
silently as plain data parallel. The stop/resume test of test_deepspeed.py has no FSDP twin.
"""

from __future__ import annotations

import subprocess

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.dataclasses import get_module_class_from_name
from accelerate.utils.launch import prepare_multi_gpu_env
from train_helpers import REPO, TINY, accelerate_command, child_env, tiny_recipe

from vlm.training.loading import build_model

CONFIG = REPO / "recipes" / "accelerate" / "fsdp2.yaml"


def test_fsdp2_config_is_what_accelerate_launch_turns_into_an_fsdp2_plugin(tmp_path, monkeypatch):
    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(CONFIG), str(REPO / "recipes" / "train.py")])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)  # what every process of `accelerate launch` gets
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.cpu_ram_efficient_loading
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # the final save: one loadable model
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    # transformer-based wrapping shards per block: the model names its blocks, and they exist
    model, _ = build_model(tiny_recipe("stage1_align", tmp_path).model)
    blocks = model._no_split_modules
    assert blocks and all(get_module_class_from_name(model, name) for name in blocks)


@pytest.mark.distributed
def test_an_fsdp_launch_on_cpu_stops_and_says_why(tmp_path):
    """2 processes (~15 s): accelerate turns the FSDP config into MULTI_CPU on a CPU."""
    out = tmp_path / "fsdp"
    command = accelerate_command(
        "fsdp2", TINY / "stage1_align.yaml", "--override", f"train.output_dir={out}"
    )
    result = subprocess.run(
        command, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert "configured for FSDP but the run got MULTI_CPU" in result.stdout + result.stderr

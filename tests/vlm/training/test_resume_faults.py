"""Faults a long run meets: a checkpoint corrupted after its save (same size, so only the
content hash can tell) and a loss or gradient that turns non-finite. Every module trains (SFT),
in this process, on the tiny stage-1 recipe."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import losses, tiny_recipe

from vlm.projector import Projector
from vlm.schema import RecipeError
from vlm.training import train
from vlm.training.checkpoints import MARKER, latest_checkpoint
from vlm.training.trainer import NonFiniteError

SFT = ["stage=sft", "train.max_steps=8", "train.save_steps=2", "train.save_total_limit=3"]


def test_a_corrupted_checkpoint_resumes_from_the_previous_good_one(tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_recipe("stage1_align", full, *SFT))
    train(tiny_recipe("stage1_align", split, *SFT, "train.stop_at_step=6"))
    weights = split / "checkpoint-6" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x7f" * 8  # bit rot: same size, new bytes
    weights.write_bytes(bytes(data))
    assert latest_checkpoint(split).name == "checkpoint-6"  # sizes alone still trust it
    capsys.readouterr()

    train(tiny_recipe("stage1_align", split, *SFT, "train.resume=auto"))
    out = capsys.readouterr().out
    assert "checkpoint-6 is corrupted: model.safetensors changed after the save" in out
    assert f"resuming from {split / 'checkpoint-4'}" in out
    assert (split / "corrupt-checkpoint-6" / "model.safetensors").is_file()  # kept aside
    assert losses(split) == losses(full)  # steps 5-8 redone exactly
    final, expected = (load_file(d / "model.safetensors") for d in (split, full))
    assert [k for k in final if not torch.equal(final[k], expected[k])] == []


@pytest.fixture
def nan_at_step_4(monkeypatch):
    """The projector's output turns NaN in the 4th training forward (one forward a step)."""
    calls = {"n": 0}
    forward = Projector.forward

    def poisoned(self, tokens):
        out = forward(self, tokens)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                return out * float("nan")
        return out

    monkeypatch.setattr(Projector, "forward", poisoned)


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path, nan_at_step_4):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"training loss is nan at step 4 .*nonfinite=skip"):
        train(tiny_recipe("stage1_align", out, *SFT))
    assert latest_checkpoint(out).name == "checkpoint-2"  # the last good state is on disk
    assert not (out / MARKER).exists()


def test_skip_drops_the_step_counts_it_and_goes_on(tmp_path, nan_at_step_4, capsys):
    out = tmp_path / "run"
    skip = ["train.nonfinite=skip", "train.max_steps=4", "train.save_steps=3"]
    train(tiny_recipe("stage1_align", out, *SFT, *skip))
    assert "1 optimizer step(s) skipped for a non-finite gradient" in capsys.readouterr().out
    assert (out / MARKER).is_file()
    # step 4 changed nothing: the final weights are step 3's
    final = load_file(out / "model.safetensors")
    at_3 = load_file(out / "checkpoint-3" / "model.safetensors")
    assert [k for k in final if not torch.equal(final[k], at_3[k])] == []
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any(h.get("nonfinite_skipped_steps") == 1 for h in logged)
    assert all(torch.isfinite(v).all() for v in final.values())


def test_a_kill_during_the_final_save_redoes_only_the_save(tmp_path, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    steps = [*SFT, "train.max_steps=4"]
    train(tiny_recipe("stage1_align", full, *steps))
    train(tiny_recipe("stage1_align", killed, *steps))
    for name in (MARKER, "model.safetensors", "trainer_state.json"):  # the save that was cut
        (killed / name).unlink()
    capsys.readouterr()
    train(tiny_recipe("stage1_align", killed, *steps, "train.resume=auto"))
    assert "finished from checkpoint-4 (its last step" in capsys.readouterr().out
    assert (killed / MARKER).is_file()
    assert sorted(losses(killed)) == [1, 2, 3, 4]  # no fifth step at learning rate 0
    assert losses(killed) == losses(full)
    final, expected = (load_file(d / "model.safetensors") for d in (killed, full))
    assert set(final) == set(expected)
    assert [k for k in final if not torch.equal(final[k], expected[k])] == []


def test_a_longer_schedule_continues_from_the_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_recipe("stage1_align", out, *SFT, "train.max_steps=4"))
    capsys.readouterr()
    longer = [*SFT, "train.max_steps=6", f"train.resume={out / 'checkpoint-4'}"]
    train(tiny_recipe("stage1_align", out, *longer))
    assert "finished from" not in capsys.readouterr().out
    assert sorted(losses(out)) == [1, 2, 3, 4, 5, 6]  # steps 5 and 6 were trained


def test_resume_true_with_only_corrupted_checkpoints_is_an_error(tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe("stage1_align", out, *SFT, "train.stop_at_step=2"))
    weights = out / "checkpoint-2" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    with pytest.raises(RecipeError, match="no uncorrupted checkpoint is left"):
        train(tiny_recipe("stage1_align", out, *SFT, "train.resume=true"))


def test_copy_model_files_makes_the_folder_and_clears_a_killed_saves_files(tmp_path):
    # what the DeepSpeed final-save redo copies from the last checkpoint (run.finish_from)
    from safetensors.torch import save_file

    from vlm.training.composite import weight_files
    from vlm.training.run import copy_model_files

    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    for name in ("config.json", "generation_config.json", "trainer_state.json"):
        (checkpoint / name).write_text("{}")
    shards = {"model-00001-of-00002.safetensors": "a", "model-00002-of-00002.safetensors": "b"}
    for name, key in shards.items():
        save_file({key: torch.ones(2)}, checkpoint / name)
    index = {"metadata": {}, "weight_map": {key: name for name, key in shards.items()}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))

    fresh = tmp_path / "new_output_dir"  # a resume into another output_dir: not there yet
    copy_model_files(checkpoint, fresh)
    assert sorted(p.name for p in fresh.iterdir()) == [
        "config.json",
        "generation_config.json",
        *shards,
        "model.safetensors.index.json",
    ]

    killed = tmp_path / "killed"  # a save killed mid-way: ShardWriter's staged files, a shard
    killed.mkdir()
    for name in (
        ".part-0",
        ".part-1.data",
        "model-00001-of-00003.safetensors",
        "model.safetensors",
    ):
        (killed / name).write_bytes(b"junk")
    copy_model_files(checkpoint, killed)
    assert [p.name for p in weight_files(killed)] == list(shards)
    assert sorted(p.name for p in killed.glob("*safetensors*")) == sorted(
        [*shards, "model.safetensors.index.json"]
    )
    assert not list(killed.glob(".part-*"))

"""Completion markers: a checkpoint counts only when its save finished (vlm.training.checkpoints)."""

from __future__ import annotations

import hashlib
import json

import pytest

from vlm.training.checkpoints import (
    MARKER,
    discard_newer,
    is_complete,
    latest_checkpoint,
    remove_incomplete,
    require_complete_stage,
    rotate,
    verified_resume_point,
    write_marker,
)


def fake_checkpoint(run, step, complete=True):
    folder = run / f"checkpoint-{step}"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "global_step1" / "shard.pt").write_bytes(b"o" * 50)
    if complete:
        write_marker(folder, "checkpoint", step)
    return folder


def test_latest_checkpoint_skips_saves_that_did_not_finish(tmp_path):
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20)
    fake_checkpoint(tmp_path, 30, complete=False)  # killed during its save
    assert latest_checkpoint(tmp_path).name == "checkpoint-20"
    assert latest_checkpoint(tmp_path / "missing") is None
    record = json.loads((tmp_path / "checkpoint-20" / MARKER).read_text())
    assert record["files"] == {
        "global_step1/shard.pt": {"size": 50, "sha256": hashlib.sha256(b"o" * 50).hexdigest()},
        "model.safetensors": {"size": 100, "sha256": hashlib.sha256(b"w" * 100).hexdigest()},
    }


def test_a_file_that_changed_after_the_marker_invalidates_it(tmp_path):
    folder = fake_checkpoint(tmp_path, 10)
    (folder / "global_step1" / "shard.pt").write_bytes(b"o" * 10)  # truncated
    assert not is_complete(folder)
    (folder / "global_step1" / "shard.pt").unlink()
    assert not is_complete(folder)
    (folder / MARKER).write_text("{not json")
    assert not is_complete(folder)


def test_remove_incomplete_and_rotate(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 40, complete=False)
    (tmp_path / "checkpoint-5.deleting").mkdir()  # a rotation that was interrupted
    removed = remove_incomplete(tmp_path)
    assert sorted(p.name for p in removed) == ["checkpoint-40", "checkpoint-5.deleting"]
    rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-30"]
    rotate(tmp_path, keep=None)
    assert latest_checkpoint(tmp_path).name == "checkpoint-30"


def test_next_stage_needs_a_finished_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; run the previous stage"):
        require_complete_stage(tmp_path / "nope")
    fake_checkpoint(tmp_path, 10)
    with pytest.raises(FileNotFoundError, match=r"no finished stage \(its latest .* checkpoint-10"):
        require_complete_stage(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    write_marker(tmp_path, "stage", 10, recursive=False)
    require_complete_stage(tmp_path)


def test_resuming_from_an_earlier_checkpoint_discards_the_newer_ones(tmp_path):
    for step in (10, 20, 30):
        fake_checkpoint(tmp_path, step)
    assert [p.name for p in discard_newer(tmp_path, tmp_path / "checkpoint-10")] == [
        "checkpoint-20",
        "checkpoint-30",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]
    assert discard_newer(tmp_path, tmp_path / "elsewhere" / "checkpoint-1") == []


def test_a_same_size_corruption_falls_back_to_the_previous_good_checkpoint(tmp_path, capsys):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    target = tmp_path / "checkpoint-6" / "model.safetensors"
    target.write_bytes(b"w" * 40 + b"XXXXXXXX" + b"w" * 52)  # 8 bytes flipped, same size
    assert is_complete(tmp_path / "checkpoint-6")  # sizes alone cannot tell
    assert verified_resume_point(tmp_path / "checkpoint-6") == tmp_path / "checkpoint-4"
    out = capsys.readouterr().out
    assert "checkpoint-6 is corrupted: model.safetensors changed after the save" in out
    assert "corrupt-checkpoint-6" in out and "Falling back" in out
    assert (tmp_path / "corrupt-checkpoint-6" / "model.safetensors").is_file()  # kept, not resumed
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"
    # every checkpoint corrupted: nothing to resume
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "global_step1" / "shard.pt").write_bytes(b"x" * 50)
    assert verified_resume_point(tmp_path / "checkpoint-4") is None


def test_a_corrupted_stage_is_refused_as_init_from(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "model.safetensors").write_bytes(b"w" * 100)
    write_marker(stage, "stage", 10, recursive=False)
    require_complete_stage(stage)
    (stage / "model.safetensors").write_bytes(b"w" * 99 + b"v")
    with pytest.raises(ValueError, match=r"model\.safetensors changed after the stage saved it"):
        require_complete_stage(stage)


def test_markers_written_before_hashes_still_count_by_size(tmp_path):
    folder = fake_checkpoint(tmp_path, 10)
    record = json.loads((folder / MARKER).read_text())
    record["files"] = {name: entry["size"] for name, entry in record["files"].items()}
    (folder / MARKER).write_text(json.dumps(record))
    assert is_complete(folder) and verified_resume_point(folder) == folder


def test_a_named_checkpoint_must_be_good_itself_and_is_never_moved(tmp_path):
    for step in (2, 4):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-4" / "model.safetensors").write_bytes(b"v" * 100)
    with pytest.raises(ValueError, match=r"checkpoint-4 is corrupted: model\.safetensors"):
        verified_resume_point(tmp_path / "checkpoint-4", fall_back=False)
    assert (tmp_path / "checkpoint-4").is_dir() and not (tmp_path / "corrupt-checkpoint-4").exists()

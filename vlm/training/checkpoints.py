"""Checkpoints that never look complete unless they are.

transformers' Trainer (5.24) writes ``checkpoint-N/`` in place (model, optimizer, scheduler,
RNG, trainer_state.json, one after another) and its ``get_last_checkpoint`` picks the highest
N that exists, so a kill during a save leaves a directory that looks like the latest
checkpoint but is not. Here, after every rank has finished a save, the main process writes
``complete.json`` into it (atomically: a temp file renamed), listing every file with its size
and SHA-256; a checkpoint counts only when that marker is there and every listed file still
has its size (``is_complete``, cheap). Before a checkpoint is resumed or a stage is loaded,
the contents are checked against the hashes too (``corrupted_files``): bit rot or a same-size
overwrite is caught there, and ``--resume`` falls back to the previous good checkpoint.
The Trainer's own rotation (``save_total_limit``) runs BEFORE the new marker exists, so it is
switched off and ``rotate`` below runs after the marker (marker first, then delete old ones:
some complete checkpoint exists at every moment).

The same marker at the top of a stage's output_dir says that the final model was saved;
``init_from`` of the next stage requires it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback

MARKER = "complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_DELETING = ".deleting"
CORRUPT_PREFIX = "corrupt-"

log = logging.getLogger(__name__)


def write_marker(folder: Path, kind: str, step: int, recursive: bool = True) -> None:
    """List ``folder``'s files (recursively, or its top level) with size and SHA-256 in
    ``complete.json``."""
    files = folder.rglob("*") if recursive else folder.iterdir()
    listing = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(files)
        if p.is_file() and p.name != MARKER
    }
    record = {"kind": kind, "step": step, "time": time.time(), "files": listing}
    tmp = folder / f".{MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)  # atomic: the marker is there whole or not at all
    _fsync_dir(folder)


def is_complete(folder: Path) -> bool:
    """The marker is there and every file it lists exists with the listed size."""
    try:
        files = _listing(folder)
        return all((folder / name).stat().st_size == entry["size"] for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def corrupted_files(folder: Path) -> list[str]:
    """Files of a complete ``folder`` whose contents no longer match the SHA-256 its marker
    recorded (a marker from before hashes were recorded is checked by size only)."""
    files = _listing(folder)
    return [
        name
        for name, entry in files.items()
        if "sha256" in entry and file_sha256(folder / name) != entry["sha256"]
    ]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _listing(folder: Path) -> dict[str, dict]:
    """The marker's files as {name: {"size": ..., "sha256": ...}} (older markers: sizes only)."""
    record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    return {
        name: entry if isinstance(entry, dict) else {"size": entry}
        for name, entry in record["files"].items()
    }


def checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-N`` directory, complete or not, by step."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    complete = [path for _, path in checkpoints(Path(output_dir)) if is_complete(path)]
    return complete[-1] if complete else None


def verified_resume_point(checkpoint: Path, fall_back: bool = True) -> Path | None:
    """``checkpoint`` if its files match their recorded hashes. Else, with ``fall_back`` (the
    run's own latest checkpoint), the newest earlier complete checkpoint beside it that
    matches (or None), each rejected one moved aside as ``corrupt-checkpoint-N`` (kept for a
    look, never resumed) with a message naming its bad files; without ``fall_back`` (a
    checkpoint the user named), a ValueError and nothing moved. Main process only: it reads
    every file once."""
    checkpoint = Path(checkpoint)
    match = _CHECKPOINT.match(checkpoint.name)
    candidates = [checkpoint]
    if fall_back and match is not None:
        earlier = checkpoints(checkpoint.parent)
        candidates += [p for step, p in reversed(earlier) if step < int(match.group(1))]
    for path in candidates:
        if not is_complete(path):
            continue
        bad = corrupted_files(path)
        if not bad:
            return path
        if not fall_back:
            raise ValueError(
                f"{path} is corrupted: {', '.join(bad)} changed after the save (content hash "
                f"differs from {MARKER}); resume from another checkpoint, or use --resume "
                "(auto), which falls back to the latest good one"
            )
        aside = path.with_name(f"{CORRUPT_PREFIX}{path.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(path, aside)
        print(
            f"[radio-vlm] {path} is corrupted: {', '.join(bad)} changed after the save (content "
            f"hash differs from {MARKER}); moved aside to {aside.name}. Falling back to the "
            "previous complete checkpoint.",
            flush=True,
        )
    return None


def remove_incomplete(output_dir: str | Path) -> list[Path]:
    """Delete checkpoints without a valid marker (a save that was killed) and leftovers of an
    interrupted rotation; returns what was removed. Main process only."""
    output_dir = Path(output_dir)
    removed = [path for _, path in checkpoints(output_dir) if not is_complete(path)]
    if output_dir.is_dir():
        removed += [p for p in output_dir.iterdir() if p.name.endswith(_DELETING)]
    for path in removed:
        log.warning("removing %s: an incomplete checkpoint (its save was interrupted)", path)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def discard_newer(output_dir: Path, resume_from: Path) -> list[Path]:
    """Delete checkpoints of ``output_dir`` with a higher step than ``resume_from`` (resuming
    from an earlier point starts a new timeline: a later ``--resume`` must not pick them, and
    the Trainer would write the same step's files into them). Main process only."""
    match = _CHECKPOINT.match(Path(resume_from).name)
    if match is None or Path(resume_from).resolve().parent != output_dir.resolve():
        return []
    newer = [path for step, path in checkpoints(output_dir) if step > int(match.group(1))]
    for path in newer:
        log.warning("discarding %s: newer than the resume point %s", path, resume_from)
        doomed = path.with_name(path.name + _DELETING)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return newer


def rotate(output_dir: Path, keep: int | None) -> None:
    """Keep the ``keep`` newest complete checkpoints; never the only one. A doomed checkpoint
    is renamed first (so it stops being a checkpoint at once), then deleted."""
    if keep is None or keep <= 0:
        return
    complete = [path for _, path in checkpoints(output_dir) if is_complete(path)]
    for path in complete[: max(0, len(complete) - max(keep, 1))]:
        doomed = path.with_name(path.name + _DELETING)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def require_complete_stage(folder: str | Path) -> None:
    """Raise unless ``folder`` holds a stage's final save (its marker)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model.init_from={str(folder)!r} does not exist; run the previous stage first (its "
            "train.output_dir is what init_from names)"
        )
    if not is_complete(folder):
        latest = latest_checkpoint(folder)
        hint = f" (its latest checkpoint is {latest.name})" if latest else ""
        raise FileNotFoundError(
            f"{folder} holds no finished stage{hint}: {MARKER} is missing or lists files that "
            "changed. Finish that stage (rerun it with --resume) before starting the next."
        )
    # the main process reads every file once; the other ranks load what it vouched for
    bad = corrupted_files(folder) if int(os.environ.get("RANK", "0")) == 0 else []
    if bad:
        raise ValueError(
            f"{folder} is corrupted: {', '.join(bad)} changed after the stage saved it (content "
            f"hash differs from {MARKER}). Restore it from a copy, or rerun that stage from its "
            "last good checkpoint"
        )


class CompletionMarkerCallback(TrainerCallback):
    """Writes the checkpoint marker after every save (all ranks done), then rotates."""

    def __init__(self, save_total_limit: int | None) -> None:
        self.save_total_limit = save_total_limit

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        _barrier()  # every rank's shards are on disk before the marker says so
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_marker(folder, "checkpoint", state.global_step)
            rotate(Path(args.output_dir), self.save_total_limit)
        _barrier()


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

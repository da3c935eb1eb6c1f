"""kill -9 in the middle of training, then --resume: the losses continue exactly as an
uninterrupted run's (same seed), step for step, and the final weights of every module are
bit-identical. The stage is SFT: the encoder, projector and LLM all train, so a resume that
restored only some of them (the Trainer's own loader drops the RADIO tower's keys) fails. Runs `python -m vlm.training.cli` (what
`radio-vlm train` runs) in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import torch
from safetensors.torch import load_file
from train_helpers import REPO, TINY, child_env, losses, run, train_command

from vlm.training.checkpoints import MARKER, is_complete

ARGS = [
    "--override",
    "stage=sft",  # every module trains: each has weights and optimizer state to restore
    "--override",
    "train.max_steps=10",
    "--override",
    "train.save_steps=2",
]


def test_kill_9_then_resume_gives_the_uninterrupted_losses(tmp_path):
    recipe = TINY / "stage1_align.yaml"
    full, killed = tmp_path / "full", tmp_path / "killed"

    def command(out, *extra):
        return train_command(recipe, "--override", f"train.output_dir={out}", *ARGS, *extra)

    # the uninterrupted reference runs beside the one that is killed (one thread each)
    reference = subprocess.Popen(
        command(full), cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    victim = subprocess.Popen(
        command(killed),
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not is_complete(killed / "checkpoint-4"):  # mid-run: past the second save
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint-4 within 300 s"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not (killed / MARKER).exists()  # the stage did not finish

    resumed = run(command(killed, "--resume"))
    assert "resuming from" in resumed.stdout
    start = int(resumed.stdout.split("resuming from")[1].split("checkpoint-")[1].split()[0])
    assert 4 <= start < 10
    assert reference.wait(timeout=300) == 0, reference.stderr.read().decode()[-3000:]

    expected, got = losses(full), losses(killed)
    assert sorted(expected) == sorted(got) == list(range(1, 11))
    after = [step for step in expected if step > start]
    assert after and [got[s] for s in after] == [expected[s] for s in after]  # exact
    assert got == expected
    assert (killed / MARKER).is_file()
    final, reference_final = (load_file(d / "model.safetensors") for d in (killed, full))
    assert set(final) == set(reference_final)
    assert {k.split(".")[0] for k in final} == {"vision_tower", "projector", "language_model"}
    assert [k for k in final if not torch.equal(final[k], reference_final[k])] == []

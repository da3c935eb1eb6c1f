"""The command lines: lmms-eval's own CLI with the plugin, `radio-vlm eval`, and
`radio-vlm export-eval-data`."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import needs_runnable_lmms_eval

from recipes.cli import main
from vlm.evaluation.local_tasks import write_task_dir

THREE = {
    "textvqa_val_local": "exact_match,none",
    "docvqa_val_local": "anls,none",
    "ocrbench_local": "ocrbench_accuracy,none",
}


def plugin_env() -> dict[str, str]:
    """The environment for an lmms-eval subprocess that finds the plugin through the
    ``lmms_eval.models`` entry point pyproject.toml declares (installed with the project)."""
    points = importlib.metadata.entry_points(group="lmms_eval.models")
    assert any(p.value == "vlm.evaluation.manifest:MANIFEST" for p in points), (
        "the lmms_eval.models entry point of pyproject.toml is not installed: pip install -e ."
    )
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@needs_runnable_lmms_eval
def test_lmms_eval_cli_runs_the_plugin_on_the_offline_tasks(tiny_vlm, eval_data, tmp_path):
    env = plugin_env()
    tasks = write_task_dir(eval_data, tmp_path / "tasks")
    out = tmp_path / "out"
    lmms_eval = Path(sys.executable).with_name("lmms-eval")
    command = [
        str(lmms_eval),
        "--model", "radio_vlm",
        "--model_args", f"pretrained={tiny_vlm[2]},device=cpu,max_new_tokens=2",
        "--tasks", ",".join(THREE),
        "--include_path", str(tasks),
        "--batch_size", "4",
        "--output_path", str(out),
        "--verbosity", "WARNING",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    log = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    # lmms-eval's CLI exits 0 even when the evaluation failed: the results file tells
    found = list(out.glob("*/*_results.json"))
    assert len(found) == 1, log
    results = json.loads(found[0].read_text())["results"]
    for task, metric in THREE.items():
        assert isinstance(results[task][metric], float), (task, results[task])
    assert (out / "results" / "ocrbench_results.txt").exists()
    assert not (tmp_path / "submissions").exists()  # all under --output_path


@needs_runnable_lmms_eval
def test_radio_vlm_eval_prints_and_saves_the_table(tiny_vlm, eval_data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["eval", "--pretrained", str(tiny_vlm[2]), "--data", str(eval_data), "--out", str(out),
            "--device", "cpu", "--limit", "2", "--gen-kwargs", "max_new_tokens=2"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| task | metric | value | samples |" in printed
    assert "| docvqa_val_local | anls |" in printed and "| 2 |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == set(THREE)
    assert json.loads((out / "results.json").read_text())["config"]["limit"] == 2
    assert sorted(p.name for p in (out / "tasks").iterdir()) == sorted(f"{t}.yaml" for t in THREE)


def test_radio_vlm_eval_write_tasks_prints_the_lmms_eval_command(eval_data, tmp_path, capsys):
    argv = ["eval", "--pretrained", "runs/sft", "--data", str(eval_data), "--tasks",
            "textvqa,ocrbench", "--write-tasks", str(tmp_path / "t")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lmms-eval --model radio_vlm --model_args pretrained=runs/sft" in printed
    assert f"--include_path {tmp_path / 't'} --tasks textvqa_val_local,ocrbench_local" in printed
    text = (tmp_path / "t" / "ocrbench_local.yaml").read_text()
    assert f'dataset_path: "{eval_data.resolve() / "ocrbench"}"' in text
    assert not (tmp_path / "t" / "docvqa_val_local.yaml").exists()


def test_export_eval_data_writes_a_folder_eval_accepts(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["export-eval-data", "--out", str(out), "--num", "9", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: textvqa" in printed
    from vlm.evaluation.schemas import check_data_dir

    counts = check_data_dir(out)
    assert sum(counts.values()) == 9

"""benchmarks/gpu_check's dry run: the whole script on the CPU at tiny sizes, so the command
prepared for a lent GPU cannot rot between loans."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dry_run_runs_every_section_and_writes_the_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))  # the benchmarks package lives beside the sources
    from benchmarks.gpu_check.__main__ import main

    assert main(["--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    sections = report["sections"]
    assert set(sections) == {"tests", "step", "merge"}
    assert not any("error" in s for s in sections.values())

    tests = sections["tests"]["rows"]
    assert "tests/gpu/test_cuda_paths.py" in tests["files"]
    assert "tests/encoder/test_blockwise_tome.py" in tests["files"]
    assert tests["failed"] == tests["errors"] == 0
    names = [case["test"] for case in tests["cases"]]
    assert any("cuda-flash" in n for n in names) and any(
        "test_cuda_matches_cpu" in n for n in names
    )

    none, tome = sections["step"]["rows"]
    assert (none["compressor"], tome["compressor"]) == ("none", "tome")
    assert none["visual_tokens"] == (96 // 16) ** 2 and tome["visual_tokens"] == 9
    assert 0 < tome["flops"]["total"] < none["flops"]["total"]
    assert all(row["tome_ms"] > 0 and row["bound_ms"] > 0 for row in sections["merge"]["rows"])

    markdown = (tmp_path / "report.md").read_text()
    assert "skipped: no CUDA" in markdown and "| tome | 9 |" in markdown
    assert (tmp_path / "cuda_tests.xml").exists() and (tmp_path / "cuda_tests.log").exists()
    assert "skipped: no CUDA" in capsys.readouterr().out

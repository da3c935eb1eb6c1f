"""Run the suite's CUDA tests (``pytest -m cuda``) in a subprocess and count the outcomes.

Only the test files that hold CUDA tests are collected (found by their text): collecting the
whole suite would import modules that need packages the GPU image lacks (datasets,
lmms-eval) and report those as errors that say nothing about the GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CUDA_TEST = re.compile(r"mark\.cuda\b")  # how tests/conftest.py knows a CUDA test


def cuda_test_files(root: Path = ROOT) -> list[str]:
    """Test files (relative to ``root``) that hold a CUDA test."""
    files = sorted((root / "tests").rglob("test_*.py"))
    return [str(f.relative_to(root)) for f in files if CUDA_TEST.search(f.read_text())]


def run_cuda_tests(out: Path, timeout_s: int = 300) -> dict:
    """pytest -m cuda over ``cuda_test_files()``; its log and JUnit XML go into ``out``.

    Returns counts (passed, failed, errors, skipped), each case's outcome and message, and
    pytest's exit code.
    """
    xml, log = out / "cuda_tests.xml", out / "cuda_tests.log"
    files = cuda_test_files()
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q"]
    command += ["-rs", f"--junitxml={xml}", *files]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        log.write_text(done.stdout + done.stderr)
        code = done.returncode
    except subprocess.TimeoutExpired as err:
        log.write_text(f"timed out after {timeout_s} s\n{err.stdout or ''}{err.stderr or ''}")
        code = None
    result = {"files": files, "exit_code": code, **junit_counts(xml)}
    return result


def junit_counts(xml: Path) -> dict:
    """Outcome counts and cases from pytest's JUnit XML (empty when pytest wrote none)."""
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    if not xml.exists():
        return {**counts, "cases": []}
    cases = []
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome, message = name, found.get("message", "")
                break
        counts[outcome] += 1
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        cases.append({"test": name, "outcome": outcome, "message": message[:300]})
    return {**counts, "cases": cases}

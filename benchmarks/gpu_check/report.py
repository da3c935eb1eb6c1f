"""The check's report: report.json (everything) and report.md (the tables README takes)."""

from __future__ import annotations

import json
from pathlib import Path

SKIPPED = "skipped: no CUDA"


def fmt(value, spec: str = ".2f") -> str:
    return SKIPPED if value is None else format(value, spec)


def tflops(value: float | None) -> str:
    return SKIPPED if value is None else f"{value:.0f} TFLOP/s"


def tests_table(tests: dict) -> list[str]:
    lines = [
        f"CUDA tests (`pytest -m cuda` over {', '.join(tests.get('files', []))}): "
        f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
        f"{tests['skipped']} skipped",
        "",
        "| test | outcome | message |",
        "|---|---|---|",
    ]
    for case in tests["cases"]:
        message = case["message"].replace("|", "/").replace("\n", " ")[:120]
        lines.append(f"| `{case['test']}` | {case['outcome']} | {message} |")
    return lines


def step_table(steps: list[dict], peak_tflops: float | None) -> list[str]:
    lines = [
        "| compressor | visual tokens | LLM tokens/step | step (ms) | images/s | LLM tokens/s "
        "| TFLOP/s | MFU | peak memory (GiB) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = next((s["step_ms"] for s in steps if s["compressor"] == "none"), None)
    for s in steps:
        mfu = None if peak_tflops is None else s["tflops_per_s"] / peak_tflops
        speedup = f"{base / s['step_ms']:.2f}x" if base else "-"
        lines.append(
            f"| {s['compressor']} | {s['visual_tokens']} | {s['llm_tokens_per_step']} "
            f"| {s['step_ms']:.1f} | {s['images_per_s']:.2f} | {s['llm_tokens_per_s']:.0f} "
            f"| {s['tflops_per_s']:.1f} | {fmt(mfu, '.1%')} | {fmt(s['peak_memory_gib'], '.1f')} "
            f"| {speedup} |"
        )
    return lines


def merge_table(rows: list[dict]) -> list[str]:
    lines = [
        "| grid | B | grid dtype | r | bound: src@dstT fp32 (ms) | bound TFLOP/s | tome (ms) "
        "| tome / bound |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['grid']} | {r['batch']} | {r['dtype']} | {r['merged']} | {r['bound_ms']:.3f} "
            f"| {r['bound_tflops']:.1f} | {r['tome_ms']:.3f} | {r['tome_over_bound']:.2f}x |"
        )
    return lines


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"## GPU check: {env['device_name']}",
        "",
        f"torch {env['torch']}, transformers {env['transformers']}, flash_attn "
        f"{env['flash_attn'] or 'not installed'}; bf16 peak: {tflops(env['peak_tflops'])} "
        f"({env['peak_source']}); measured 8192^3 bf16 matmul: {tflops(env['matmul_tflops'])}",
        "",
    ]
    for name, section in report["sections"].items():
        if "error" in section:
            lines += [f"{name}: ERROR {section['error']}", ""]
    if "rows" in report["sections"].get("tests", {}):
        lines += [*tests_table(report["sections"]["tests"]["rows"]), ""]
    step = report["sections"].get("step", {})
    if "rows" in step:
        lines += [f"Training step: {step['description']}", "", f"{step['formula']}", ""]
        lines += [*step_table(step["rows"], env["peak_tflops"]), ""]
    if "rows" in report["sections"].get("merge", {}):
        lines += ["Output merge (`compress(grid, 'tome')`) against its matmul bound:", ""]
        lines += [*merge_table(report["sections"]["merge"]["rows"]), ""]
    return "\n".join(lines)


def write(report: dict, out: Path) -> str:
    """report.json + report.md into ``out``; returns the Markdown."""
    text = markdown(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(text + "\n")
    return text

"""Bad samples: ``SkipSample`` (raised), ``SkipReport`` (collected), ``SkipReportCallback``.

Every skipped sample, and every sample fixed by a rule ("handled": a mode conversion, a
padding), is one JSON line ``{"id", "reason", "detail", "kind"}`` (+ ``"index"``, the sample's
position in its source, when known) appended to a file of the
report's directory: one file per process (``<host>-<pid>.jsonl``), so DataLoader workers and
distributed ranks report without talking to each other, and ``SkipReport.summary()`` in any
process aggregates them all. Give every rank the same directory (e.g. ``<output_dir>/skips``)
to see all of them.

Skip reasons (``SKIP_REASONS``) and handling rules (``HANDLED``) are listed below; the
dataset module docstring says which input leads to which.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

__all__ = ["HANDLED", "SKIP_REASONS", "SkipReport", "SkipReportCallback", "SkipSample"]

logger = logging.getLogger("vlm.data")

SKIP_REASONS = {
    "missing_image": "the image file does not exist or cannot be read",
    "corrupt_image": "the bytes are not an image Pillow can decode",
    "truncated_image": "the image file ends early",
    "image_too_large": "more pixels than the image processor's max_pixels (or Pillow's limit)",
    "unsupported_image": "an image kind or mode that cannot be converted to RGB, or NaN pixels",
    "path_escapes_root": "the image path (or a symlink on it) leads outside the image root",
    "image_too_small": "no padding makes the patch grid big enough for the token budget",
    "image_count_mismatch": "the number of <image> markers differs from the number of images",
    "empty_conversation": "no messages, or only empty ones",
    "no_assistant_reply": "no non-empty assistant message to learn from",
    "malformed_sample": "the entry or a message does not have the expected fields/types",
    "too_long": "longer than max_length (SampleTooLongError)",
    "no_labels": "every label is -100 after tokenisation (e.g. truncated away)",
    "chat_template": "the tokenizer's chat template failed on it (ChatTemplateError)",
    "special_token_in_text": "a message's text holds a special token string such as <|im_end|>",
    "processor_error": "the processor rejected it (ValueError)",
    "unexpected_error": "any other exception while loading it (a bug: please report)",
}
HANDLED = {
    "converted_mode": "converted to RGB (greyscale, palette, CMYK, 16-bit scaled, alpha on white)",
    "exif_transposed": "rotated/flipped upright by its EXIF orientation",
    "padded_aspect": "padded with white to at most max_aspect_ratio",
    "padded_small": "padded with white until the patch grid fits the token budget",
}
_LOG_FIRST = 20  # per process: the first skips are WARNINGs, the rest DEBUG


class SkipSample(Exception):
    """A sample cannot be used; ``reason`` is a key of ``SKIP_REASONS``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(SKIP_REASONS)}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class SkipReport:
    """Collects (id, reason) of skipped and handled samples across processes.

    directory: where the per-process JSONL files go; None: a new temporary directory (made
        now, so worker processes forked or spawned later inherit the same one).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory or tempfile.mkdtemp(prefix="vlm-skips-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._logged = 0

    def add(
        self,
        sample_id: str,
        reason: str,
        detail: str = "",
        kind: str = "skipped",
        index: int | None = None,
    ) -> None:
        """Record one event (``kind`` "skipped" or "handled"); skips are also logged.
        ``index``: the sample's position in its source, which tells apart samples sharing an
        id (LLaVA files have duplicates)."""
        table = SKIP_REASONS if kind == "skipped" else HANDLED
        if kind not in ("skipped", "handled") or reason not in table:
            raise ValueError(f"unknown {kind!r} reason {reason!r}; known: {sorted(table)}")
        event = {"id": str(sample_id), "reason": reason, "detail": detail[:500], "kind": kind}
        if index is not None:
            event["index"] = int(index)
        line = json.dumps(event, ensure_ascii=False)
        path = self.directory / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        with open(path, "a", encoding="utf-8") as f:  # one short write per event
            f.write(line + "\n")
        if kind == "skipped":
            self._logged += 1
            level = logging.WARNING if self._logged <= _LOG_FIRST else logging.DEBUG
            logger.log(level, "skipping sample %s (%s): %s", sample_id, reason, detail)
            if self._logged == _LOG_FIRST:
                logger.warning(
                    "further skips are logged at DEBUG; see the skip report in %s", self.directory
                )

    def entries(self) -> list[dict[str, str]]:
        """Every recorded event of every process, in file then line order."""
        out = []
        for path in sorted(self.directory.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut by a killed process
                        continue
        return out

    def summary(self) -> dict[str, Any]:
        """{"skipped": {reason: {"samples", "occurrences", "ids", "detail"}}, "handled": {...},
        "skipped_samples": distinct skipped samples, "samples": [{"id", "reason", "detail"
        (, "index")}]}. A sample is its (id, index): seen again (next epoch, another worker)
        it counts once; two samples sharing an id count twice."""
        groups: dict[str, dict[str, dict]] = {"skipped": {}, "handled": {}}
        first: dict[tuple[str, int | None, str], dict] = {}
        for entry in self.entries():
            kind, reason = entry["kind"], entry["reason"]
            group = groups[kind].setdefault(
                reason, {"samples": 0, "occurrences": 0, "ids": [], "detail": entry["detail"]}
            )
            group["occurrences"] += 1
            key = (entry["id"], entry.get("index"), reason)
            if key not in first:
                first[key] = entry
                group["samples"] += 1
                group["ids"].append(entry["id"])
        samples = [
            {k: e[k] for k in ("id", "index", "reason", "detail") if k in e}
            for e in first.values()
            if e["kind"] == "skipped"
        ]
        return {
            "skipped": groups["skipped"],
            "handled": groups["handled"],
            "skipped_samples": len({(s["id"], s.get("index")) for s in samples}),
            "samples": samples,
        }

    def table(self, summary: dict[str, Any] | None = None, max_ids: int = 3) -> str:
        """A Markdown table of the summary: kind | reason | samples | occurrences | example."""
        summary = summary or self.summary()
        rows = ["| kind | reason | samples | occurrences | examples |", "|---|---|---|---|---|"]
        for kind in ("skipped", "handled"):
            for reason, group in sorted(summary[kind].items()):
                ids = ", ".join(group["ids"][:max_ids]) + (
                    " ..." if len(group["ids"]) > max_ids else ""
                )
                rows.append(
                    f"| {kind} | {reason} | {group['samples']} | {group['occurrences']} | {ids} |"
                )
        if len(rows) == 2:
            return "no sample was skipped or converted"
        return "\n".join(rows)

    def save(self, path: str | Path) -> Path:
        """Write the summary as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return path

    def clear(self) -> None:
        """Delete every recorded event (e.g. before a fresh run reusing the directory)."""
        for path in self.directory.glob("*.jsonl"):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"SkipReport({str(self.directory)!r})"


class SkipReportCallback(TrainerCallback):
    """Prints the skip summary table and saves ``skip_report.json`` (into ``output_dir``,
    default ``args.output_dir``) at the end of every epoch and of training (main process)."""

    def __init__(self, report: SkipReport, output_dir: str | Path | None = None) -> None:
        self.report, self.output_dir = report, output_dir

    def _emit(self, args: Any, state: Any, when: str) -> None:
        if not state.is_world_process_zero:
            return
        summary = self.report.summary()
        print(
            f"\nskipped samples ({when}): {summary['skipped_samples']}\n"
            f"{self.report.table(summary)}\n"
        )
        folder = Path(self.output_dir or args.output_dir)
        self.report.save(folder / "skip_report.json")

    def on_epoch_end(self, args, state, control, **kwargs):
        self._emit(args, state, f"epoch {state.epoch:g}")
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._emit(args, state, "end of training")
        return control

"""Write synthdoc records as LLaVA JSON (``write_llava``): image files + one JSON list.

    >>> write_llava(records, "out/llava")          # out/llava/llava.json + out/llava/images/*.png

Their lmms-eval form (the benchmarks' own schemas) is ``vlm.evaluation.export``'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from .synthdoc import SynthDocRecord, to_messages

__all__ = ["write_llava"]

logger = logging.getLogger(__name__)


def write_llava(
    records: Iterable[SynthDocRecord],
    out_dir: str | Path,
    *,
    json_name: str = "llava.json",
    lmms_eval_prompt: bool = True,
) -> Path:
    """Write LLaVA-format training data; returns the JSON file's path.

    Each record -> ``images/<id>.png`` and an entry ``{"id", "image": "images/<id>.png",
    "conversations": [{"from": "human", "value": "<image>\\n<prompt>"}, {"from": "gpt",
    "value": answers[0]}]}`` with the prompt of ``to_messages(record, lmms_eval_prompt=...)``.
    Relative image paths: load it with the JSON's folder (the default) as image root.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for record in tqdm(records, desc="write llava", unit="record", leave=False):
        relative = f"images/{record.id}.png"
        record.image.save(out / relative)
        user, assistant = to_messages(record, lmms_eval_prompt=lmms_eval_prompt)
        entries.append(
            {
                "id": record.id,
                "image": relative,
                "conversations": [
                    {"from": "human", "value": "<image>\n" + user["content"][1]["text"]},
                    {"from": "gpt", "value": assistant["content"]},
                ],
            }
        )
    path = out / json_name
    path.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

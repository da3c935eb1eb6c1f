"""Sources: where raw samples come from. A raw sample is
``{"id": str, "images": [image | path | {"bytes", "path"}], "messages": [{"role", "content"}]}``.

- ``LlavaSource``: LLaVA JSON (a list) or JSONL (one object per line) with ``id``, ``image``
  (a path or a list of paths relative to the image root; absent for text-only samples) and
  ``conversations`` ``[{"from": "human"|"gpt"|"system", "value": "<image>\\n..."}]``. Roles
  map human -> user, gpt -> assistant; ``<image>`` markers stay in the text (the processor
  reads them). The image root defaults to the JSON file's folder.
- ``SynthDocSource``: ``synthdoc`` records drawn on demand (``to_messages`` prompts).
- Hugging Face datasets (``HFSource``, ``HFStreamSource``, ``load_hf``): ``hf_sources``.

Malformed entries do not fail at construction: ``source[i]`` raises ``SkipSample``.
Every map-style source has ``describe(i) -> (text, number of images)`` for length estimates
without decoding images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .images import resolve_image_path
from .skips import SkipSample
from .synthdoc import SynthDocConfig, eval_prompt, generate_record, plan_record, to_messages

RawSample = dict[str, Any]
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


class Source:
    """Random-access raw samples (subclasses implement ``__len__`` and ``__getitem__``)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> RawSample:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """An id for reports even when the entry itself is unreadable."""
        return f"#{index}"

    def describe(self, index: int) -> tuple[str, int]:
        """(all message text, number of images), cheaply; default: through ``__getitem__``."""
        try:
            sample = self[index]
        except SkipSample:
            return "", 0
        return _message_text(sample["messages"]), len(sample["images"])


def llava_messages(conversations: Any, where: str) -> list[dict[str, str]]:
    """LLaVA ``[{"from", "value"}]`` (or role/content messages) -> role/content messages."""
    if not isinstance(conversations, list):
        raise SkipSample(
            "malformed_sample",
            f"{where}: conversations must be a list; got {type(conversations).__name__}",
        )
    messages = []
    for j, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise SkipSample("malformed_sample", f"{where}: turn {j} is not an object")
        role, content = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if role not in ROLES or not isinstance(content, (str, list)):
            raise SkipSample(
                "malformed_sample",
                f"{where}: turn {j} needs from in {sorted(ROLES)} and a string value; got "
                f"from={role!r}, value of type {type(content).__name__}",
            )
        messages.append({"role": ROLES[role], "content": content})
    return messages


class LlavaSource(Source):
    """LLaVA-format JSON / JSONL (module docstring). ``limit``: only the first entries."""

    def __init__(
        self, path: str | Path, image_root: str | Path | None = None, limit: int | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"LLaVA data file {self.path} does not exist; check data.path")
        self.image_root = Path(image_root) if image_root is not None else self.path.parent
        text = self.path.read_text(encoding="utf-8")
        if self.path.suffix == ".jsonl":
            self.entries: list[Any] = [
                _json_line(line) for line in text.splitlines() if line.strip()
            ]
        else:
            try:
                self.entries = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{self.path} is not valid JSON ({err}); for one object per line name it .jsonl"
                ) from err
            if not isinstance(self.entries, list):
                raise ValueError(
                    f"{self.path} must hold a JSON list of samples; got "
                    f"{type(self.entries).__name__}"
                )
        if limit is not None:
            self.entries = self.entries[:limit]

    def __len__(self) -> int:
        return len(self.entries)

    def sample_id(self, index: int) -> str:
        entry = self.entries[index]
        if isinstance(entry, dict) and entry.get("id") is not None:
            return str(entry["id"])
        return f"{self.path.name}:{index}"

    def __getitem__(self, index: int) -> RawSample:
        entry, where = self.entries[index], f"{self.path.name} entry {index}"
        if isinstance(entry, _BadLine):
            raise SkipSample("malformed_sample", f"{where}: {entry.error}")
        if not isinstance(entry, dict) or "conversations" not in entry:
            raise SkipSample("malformed_sample", f"{where}: needs an object with conversations")
        images = entry.get("image", entry.get("images"))
        images = [] if images is None else images if isinstance(images, list) else [images]
        if not all(isinstance(p, str) and p for p in images):
            raise SkipSample(
                "malformed_sample", f"{where}: image must be a path or a list of paths"
            )
        return {
            "id": self.sample_id(index),
            "images": [resolve_image_path(p, self.image_root) for p in images],
            "messages": llava_messages(entry["conversations"], where),
        }

    def describe(self, index: int) -> tuple[str, int]:
        entry = self.entries[index]
        if not isinstance(entry, dict):
            return "", 0
        images = entry.get("image", entry.get("images"))
        count = 0 if images is None else len(images) if isinstance(images, list) else 1
        turns = entry.get("conversations")
        turns = turns if isinstance(turns, list) else []
        return "\n".join(str(t.get("value", "")) for t in turns if isinstance(t, dict)), count


class SynthDocSource(Source):
    """``num`` synthdoc records (drawn when asked for; ``describe`` draws nothing)."""

    def __init__(self, config: SynthDocConfig, num: int, lmms_eval_prompt: bool = True) -> None:
        if num < 1:
            raise ValueError(f"a synthdoc source needs num >= 1 records; got {num}")
        self.config, self.num, self.lmms_eval_prompt = config, num, lmms_eval_prompt

    def __len__(self) -> int:
        return self.num

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num:
            raise IndexError(f"synthdoc index {index} out of range [0, {self.num})")

    def sample_id(self, index: int) -> str:
        return f"synthdoc-{self.config.seed}-{index:07d}"

    def __getitem__(self, index: int) -> RawSample:
        self._check(index)
        record = generate_record(index, self.config)
        messages = to_messages(record, lmms_eval_prompt=self.lmms_eval_prompt)
        return {"id": record.id, "images": [record.image], "messages": messages}

    def describe(self, index: int) -> tuple[str, int]:
        self._check(index)
        plan = plan_record(index, self.config)
        question = (
            eval_prompt(plan.question, plan.style) if self.lmms_eval_prompt else plan.question
        )
        return f"{question}\n{plan.answers[0]}", 1


# --------------------------------------------------------------------------- helpers


class _BadLine:
    def __init__(self, error: str) -> None:
        self.error = error


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        return _BadLine(f"invalid JSON line ({err})")


def _message_text(messages: Any) -> str:
    parts = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts += [i.get("text", "") for i in content if isinstance(i, dict)]
        elif isinstance(content, str):
            parts.append(content)
    return "\n".join(parts)

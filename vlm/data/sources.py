"""Sources: where raw samples come from. A raw sample is
``{"id": str, "images": [image | path | {"bytes", "path"}], "messages": [{"role", "content"}]}``.

- ``LlavaSource``: LLaVA JSON (a list) or JSONL (one object per line) with ``id``, ``image``
  (a path or a list of paths relative to the image root; absent for text-only samples) and
  ``conversations`` ``[{"from": "human"|"gpt"|"system", "value": "<image>\\n..."}]``. Roles
  map human -> user, gpt -> assistant; ``<image>`` markers stay in the text (the processor
  reads them). The image root defaults to the JSON file's folder.
- ``HFSource``: a ``datasets.Dataset`` (``load_hf`` reads a ``save_to_disk`` folder, parquet
  files or a hub id) whose ``Columns`` name the id, image(s), and either a conversations
  column (LLaVA from/value or role/content messages) or question + answer columns (then one
  ``<image>\\n`` marker per image is put before the question unless it has them).
  Images are read undecoded (``datasets.Image(decode=False)``): decoding happens in the
  dataset's guarded loader, so a corrupt image is a skip, not a crash.
- ``HFStreamSource``: the same rows from a streaming (``IterableDataset``) dataset.
- ``SynthDocSource``: ``synthdoc`` records drawn on demand (``to_messages`` prompts).

Malformed entries do not fail at construction: ``source[i]`` raises ``SkipSample``.
Every map-style source has ``describe(i) -> (text, number of images)`` for length estimates
without decoding images.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import STRICT
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
IMAGE_MARKER = "<image>"


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


@dataclass
class Columns:
    """Column names of a Hugging Face dataset (None: not present).

    image: an image, a list of images, or path(s) relative to the image root.
    conversations: LLaVA from/value turns or role/content messages; when None, question and
        answer (a string or a list: the first is the reply) make a one-round conversation.
    """

    __pydantic_config__ = STRICT

    id: str | None = None  # None: "row<index>"
    image: str | None = "image"
    conversations: str | None = "conversations"
    question: str | None = None
    answer: str | None = None


def row_to_sample(row: dict, index: int, columns: Columns, image_root: Path | None) -> RawSample:
    """One dataset row -> a raw sample (raises ``SkipSample`` for a malformed row)."""
    sample_id = (
        str(row.get(columns.id))
        if columns.id and row.get(columns.id) is not None
        else (f"row{index}")
    )
    where = f"row {index} ({sample_id})"
    value = row.get(columns.image) if columns.image else None
    images = [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]
    resolved = []
    for image in images:
        if isinstance(image, str):
            if image_root is None:
                raise SkipSample(
                    "malformed_sample", f"{where}: image path {image!r} needs data.image_root"
                )
            image = resolve_image_path(image, image_root)
        resolved.append(image)
    if columns.conversations:
        messages = llava_messages(row.get(columns.conversations), where)
    else:
        question, answer = row.get(columns.question), row.get(columns.answer)
        if isinstance(answer, (list, tuple)):
            answer = answer[0] if answer else None
        if not isinstance(question, str) or not isinstance(answer, str):
            raise SkipSample("malformed_sample", f"{where}: question and answer must be strings")
        if IMAGE_MARKER not in question:
            question = f"{IMAGE_MARKER}\n" * len(resolved) + question
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"id": sample_id, "images": resolved, "messages": messages}


class HFSource(Source):
    """Rows of a map-style ``datasets.Dataset`` (module docstring)."""

    def __init__(
        self,
        dataset: Any,
        columns: Columns | None = None,
        image_root: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        self.columns = columns or Columns()
        _check_columns(dataset.column_names, self.columns)
        if limit is not None:
            dataset = dataset.select(range(min(limit, len(dataset))))
        self.dataset = _undecoded(dataset, self.columns.image)
        self.image_root = Path(image_root) if image_root is not None else None
        text_cols = [
            c for c in (self.columns.conversations, self.columns.question, self.columns.answer) if c
        ]
        self._text = self.dataset.select_columns(text_cols)  # no image bytes read for lengths

    def __len__(self) -> int:
        return len(self.dataset)

    def sample_id(self, index: int) -> str:
        if self.columns.id:
            return str(self.dataset[index][self.columns.id])
        return f"row{index}"

    def __getitem__(self, index: int) -> RawSample:
        return row_to_sample(self.dataset[index], index, self.columns, self.image_root)

    def describe(self, index: int) -> tuple[str, int]:
        row = self._text[index]
        if self.columns.conversations:
            turns = row[self.columns.conversations] or []
            text = "\n".join(
                str(t.get("value", t.get("content", ""))) for t in turns if isinstance(t, dict)
            )
        else:
            text = f"{row[self.columns.question]}\n{row[self.columns.answer]}"
        return text, max(1, text.count(IMAGE_MARKER)) if self.columns.image else 0


class HFStreamSource:
    """Rows of a streaming ``datasets.IterableDataset``: ``iter()`` gives (index, raw sample
    or the ``SkipSample`` it raised)."""

    def __init__(
        self,
        dataset: Any,
        columns: Columns | None = None,
        image_root: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        self.columns = columns or Columns()
        if dataset.column_names is not None:
            _check_columns(dataset.column_names, self.columns)
        if limit is not None:
            dataset = dataset.take(limit)
        if hasattr(dataset, "decode"):  # datasets >= 3.6: no image decoding while streaming
            dataset = dataset.decode(False)
        self.dataset = _undecoded(dataset, self.columns.image)
        self.image_root = Path(image_root) if image_root is not None else None

    def __iter__(self) -> Iterator[tuple[int, RawSample | SkipSample]]:
        for index, row in enumerate(self.dataset):
            try:
                yield index, row_to_sample(row, index, self.columns, self.image_root)
            except SkipSample as skip:
                yield index, skip


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


def load_hf(
    path: str, split: str = "train", subset: str | None = None, streaming: bool = False
) -> Any:
    """A split of: a ``save_to_disk`` folder, a parquet file or folder (all ``*.parquet`` under
    it, as one split), or a hub id (needs the network unless cached)."""
    import datasets

    local = Path(path)
    if local.is_dir() and (
        (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
    ):
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(
                    f"{path} has splits {sorted(loaded)}, not {split!r}; set data.split"
                )
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    if local.suffix == ".parquet" or local.is_dir():
        files = (
            [str(local)] if local.is_file() else sorted(str(p) for p in local.rglob("*.parquet"))
        )
        if not files:
            raise FileNotFoundError(f"no parquet files under {path}; check data.path")
        return datasets.load_dataset(
            "parquet", data_files=files, split="train", streaming=streaming
        )
    if local.exists() or path.startswith((".", "/")):
        raise ValueError(f"{path} is neither a save_to_disk folder nor parquet; check data.path")
    return datasets.load_dataset(path, subset, split=split, streaming=streaming)


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


def _check_columns(available: list[str], columns: Columns) -> None:
    if columns.conversations is None and not (columns.question and columns.answer):
        raise ValueError(f"columns need conversations, or both question and answer; got {columns}")
    wanted = [
        c
        for c in (
            columns.id,
            columns.image,
            columns.conversations,
            columns.question,
            columns.answer,
        )
        if c
    ]
    if missing := [c for c in wanted if c not in available]:
        raise ValueError(
            f"columns {missing} are not in the dataset (it has {available}); set "
            "data.columns (a name, or null when absent)"
        )


def _undecoded(dataset: Any, column: str | None) -> Any:
    """Cast an Image (or list-of-Image) column to decode=False: bytes reach our loader."""
    import datasets

    features = getattr(dataset, "features", None)
    if not column or not features or column not in features:
        return dataset
    feature = features[column]
    if isinstance(feature, datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.Image):
        return dataset.cast_column(column, datasets.Sequence(datasets.Image(decode=False)))
    return dataset

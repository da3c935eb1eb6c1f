"""Hugging Face datasets as sources of raw samples (``sources`` says what a raw sample is).

- ``HFSource``: a ``datasets.Dataset`` (``load_hf`` reads a ``save_to_disk`` folder, parquet
  files or a hub id) whose ``Columns`` name the id, image(s), and either a conversations
  column (LLaVA from/value or role/content messages) or question + answer columns (then one
  ``<image>\\n`` marker per image is put before the question unless it has them).
  Images are read undecoded (``datasets.Image(decode=False)``): decoding happens in the
  dataset's guarded loader, so a corrupt image is a skip, not a crash.
- ``HFStreamSource``: the same rows from a streaming (``IterableDataset``) dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import STRICT
from .images import resolve_image_path
from .skips import SkipSample
from .sources import RawSample, Source, llava_messages

IMAGE_MARKER = "<image>"


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


class _HFRows:
    """What both Hugging Face sources hold: ``columns`` (checked against the dataset),
    ``dataset`` (the first ``limit`` rows, images undecoded) and ``image_root``."""

    def __init__(
        self,
        dataset: Any,
        columns: Columns | None = None,
        image_root: str | Path | None = None,
        limit: int | None = None,
    ) -> None:
        self.columns = columns or Columns()
        if dataset.column_names is not None:  # None: a stream that does not know them yet
            _check_columns(dataset.column_names, self.columns)
        self.dataset = _undecoded(self._first(dataset, limit), self.columns.image)
        self.image_root = Path(image_root) if image_root is not None else None

    @staticmethod
    def _first(dataset: Any, limit: int | None) -> Any:
        raise NotImplementedError


class HFSource(_HFRows, Source):
    """Rows of a map-style ``datasets.Dataset`` (module docstring)."""

    @functools.cached_property
    def _text(self) -> Any:
        """The text columns alone: no image bytes are read for ``describe``."""
        text_cols = [
            c for c in (self.columns.conversations, self.columns.question, self.columns.answer) if c
        ]
        return self.dataset.select_columns(text_cols)

    @staticmethod
    def _first(dataset: Any, limit: int | None) -> Any:
        return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))

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


class HFStreamSource(_HFRows):
    """Rows of a streaming ``datasets.IterableDataset``: ``iter()`` gives (index, raw sample
    or the ``SkipSample`` it raised)."""

    @staticmethod
    def _first(dataset: Any, limit: int | None) -> Any:
        if limit is not None:
            dataset = dataset.take(limit)
        if hasattr(dataset, "decode"):  # datasets >= 3.6: no image decoding while streaming
            dataset = dataset.decode(False)
        return dataset

    def __iter__(self) -> Iterator[tuple[int, RawSample | SkipSample]]:
        for index, row in enumerate(self.dataset):
            try:
                yield index, row_to_sample(row, index, self.columns, self.image_root)
            except SkipSample as skip:
                yield index, skip


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

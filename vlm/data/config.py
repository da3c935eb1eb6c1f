"""``DataConfig`` (the ``data:`` block of a recipe) and ``build_dataset``.

    >>> config = DataConfig.from_dict({"kind": "llava", "path": "llava_v1_5_mix665k.json",
    ...                                "image_root": "/data/llava", "max_length": 2048})
    >>> dataset = build_dataset(config, processor)        # VLMDataset (VLMIterableDataset
    ...                                                    # when streaming)

Nested blocks (``synthdoc``, ``columns``) are dataclasses too; dicts are converted, and an
unknown key anywhere is an error naming it (recipes map YAML 1:1 onto dataclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..processing import VLMProcessor
from .dataset import VLMDataset, VLMIterableDataset
from .skips import SkipReport
from .sources import Columns, HFSource, HFStreamSource, LlavaSource, SynthDocSource, load_hf
from .synthdoc import SynthDocConfig

__all__ = ["KINDS", "DataConfig", "build_dataset"]

KINDS = ("synthdoc", "llava", "hf")


@dataclass
class DataConfig:
    """Where the training samples come from and how they are encoded.

    kind:        "synthdoc" (generated), "llava" (JSON/JSONL file), "hf" (datasets).
    path:        llava: the .json/.jsonl file; hf: a save_to_disk folder, parquet file/folder
                 or hub id. Unused for synthdoc.
    image_root:  folder relative image paths are resolved in (llava default: the JSON's
                 folder); paths may not leave it.
    split / subset / streaming: hf only (split of a DatasetDict or hub dataset; hub config
                 name; stream instead of loading -> a ``VLMIterableDataset``).
    num_samples: synthdoc: how many records (required); llava/hf: only the first N.
    seed:        synthdoc's seed (do not set synthdoc.seed).
    synthdoc:    ``SynthDocConfig`` fields (image_size, vocabulary, styles, levels, ...).
    lmms_eval_prompt: synthdoc questions phrased as lmms-eval asks them (``to_messages``).
    columns:     hf column names (``Columns``: id, image, conversations, question, answer).
    max_length / truncation: token limit per sample (longer: skipped as too_long, unless
                 truncation may cut text after the last image).
    max_aspect_ratio: extreme images are padded to this long/short ratio (``images``).
    max_consecutive_skips: this many unusable samples in a row stop the run (broken data).
    skip_report_dir: where every process writes its skip events; set it under the run's
                 output dir (all ranks the same) so the summary sees every process. None: a
                 temporary directory.
    """

    kind: str = "synthdoc"
    path: str | None = None
    image_root: str | None = None
    split: str = "train"
    subset: str | None = None
    streaming: bool = False
    num_samples: int | None = None
    seed: int = 0
    synthdoc: SynthDocConfig = field(default_factory=SynthDocConfig)
    lmms_eval_prompt: bool = True
    columns: Columns = field(default_factory=Columns)
    max_length: int | None = None
    truncation: bool = False
    max_aspect_ratio: float | None = 8.0
    max_consecutive_skips: int = 1000
    skip_report_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.synthdoc, Mapping):
            if "seed" in self.synthdoc:
                raise ValueError("set data.seed, not data.synthdoc.seed (one seed per data block)")
            self.synthdoc = _build(SynthDocConfig, self.synthdoc, "data.synthdoc")
        if isinstance(self.columns, Mapping):
            self.columns = _build(Columns, self.columns, "data.columns")
        if self.kind not in KINDS:
            raise ValueError(f"data.kind must be one of {KINDS}; got {self.kind!r}")
        if self.kind in ("llava", "hf") and not self.path:
            raise ValueError(
                f"data.kind={self.kind!r} needs data.path (the data file, folder or hub id)"
            )
        if self.kind == "synthdoc" and (self.num_samples is None or self.num_samples < 1):
            raise ValueError(f"data.kind='synthdoc' needs num_samples >= 1; got {self.num_samples}")
        if self.streaming and self.kind != "hf":
            raise ValueError(f"data.streaming only applies to kind 'hf'; kind is {self.kind!r}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"data.num_samples must be >= 1 or null; got {self.num_samples}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"data.max_length must be >= 1 or null; got {self.max_length}")
        # one seed per data block: the synthdoc generator follows data.seed
        self.synthdoc = dataclasses.replace(self.synthdoc, seed=self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """From a YAML mapping; unknown keys (also nested) are errors naming them."""
        return _build(cls, data, "data")

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe values (for saving the resolved recipe with the run)."""
        out = dataclasses.asdict(self)
        out["synthdoc"].pop("seed")
        for key in ("styles", "levels", "fonts", "font_scale"):
            out["synthdoc"][key] = list(out["synthdoc"][key])
        return out


def build_dataset(config: DataConfig, processor: VLMProcessor) -> VLMDataset | VLMIterableDataset:
    """The training dataset ``config`` describes, encoding samples with ``processor``."""
    if config.kind == "synthdoc":
        source = SynthDocSource(config.synthdoc, config.num_samples, config.lmms_eval_prompt)
    elif config.kind == "llava":
        source = LlavaSource(config.path, config.image_root, limit=config.num_samples)
    else:
        loaded = load_hf(config.path, config.split, config.subset, config.streaming)
        cls = HFStreamSource if config.streaming else HFSource
        source = cls(loaded, config.columns, config.image_root, limit=config.num_samples)
    report = SkipReport(config.skip_report_dir)
    common = {
        "max_length": config.max_length,
        "truncation": config.truncation,
        "report": report,
        "max_aspect_ratio": config.max_aspect_ratio,
    }
    if config.streaming:
        return VLMIterableDataset(source, processor, **common)
    return VLMDataset(
        source, processor, max_consecutive_skips=config.max_consecutive_skips, **common
    )


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping of settings; got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    if unknown := sorted(set(data) - set(known)):
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {known}")
    return cls(**data)

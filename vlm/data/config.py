"""``DataConfig`` (the ``data:`` block of a recipe) and ``build_dataset``.

    >>> config = DataConfig.from_dict({"kind": "llava", "path": "llava_v1_5_mix665k.json",
    ...                                "image_root": "/data/llava", "max_length": 2048})
    >>> dataset = build_dataset(config, processor)        # VLMDataset (VLMIterableDataset
    ...                                                    # when streaming)

Nested blocks (``synthdoc``, ``columns``) are dataclasses too; ``vlm.schema.from_dict`` reads
them all (types and ranges checked, an unknown key anywhere is an error naming it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from ..processing import VLMProcessor
from ..schema import STRICT, NonNegativeInt, PositiveInt, from_dict
from .dataset import VLMDataset, VLMIterableDataset
from .hf_sources import Columns, HFSource, HFStreamSource, load_hf
from .skips import SkipReport
from .sources import LlavaSource, SynthDocSource
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

    __pydantic_config__ = STRICT

    kind: Literal["synthdoc", "llava", "hf"] = "synthdoc"
    path: str | None = None
    image_root: str | None = None
    split: str = "train"
    subset: str | None = None
    streaming: bool = False
    num_samples: PositiveInt | None = None
    seed: NonNegativeInt = 0
    synthdoc: SynthDocConfig = field(default_factory=SynthDocConfig)
    lmms_eval_prompt: bool = True
    columns: Columns = field(default_factory=Columns)
    max_length: PositiveInt | None = None
    truncation: bool = False
    max_aspect_ratio: Annotated[float, Field(ge=1)] | None = 8.0
    max_consecutive_skips: PositiveInt = 1000
    skip_report_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.synthdoc, Mapping):  # built in Python with a plain dict
            self.synthdoc = from_dict(SynthDocConfig, dict(self.synthdoc), "data.synthdoc")
        if isinstance(self.columns, Mapping):
            self.columns = from_dict(Columns, dict(self.columns), "data.columns")
        if self.synthdoc.seed not in (0, self.seed):
            raise ValueError("set data.seed, not data.synthdoc.seed (one seed per data block)")
        if self.kind in ("llava", "hf") and not self.path:
            raise ValueError(
                f"data.kind={self.kind!r} needs data.path (the data file, folder or hub id)"
            )
        if self.kind == "synthdoc" and (self.num_samples is None or self.num_samples < 1):
            raise ValueError(f"data.kind='synthdoc' needs num_samples >= 1; got {self.num_samples}")
        if self.streaming and self.kind != "hf":
            raise ValueError(f"data.streaming only applies to kind 'hf'; kind is {self.kind!r}")
        # one seed per data block: the synthdoc generator follows data.seed
        self.synthdoc = dataclasses.replace(self.synthdoc, seed=self.seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataConfig:
        """From a YAML mapping; unknown keys (also nested), types and ranges are checked."""
        return from_dict(cls, dict(data), "data")

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

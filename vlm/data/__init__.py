"""Training data: sources -> ``VLMDataset`` (bad samples skipped and reported) -> ``VLMCollator``.

    >>> from vlm.data import DataConfig, build_dataset, VLMCollator, SkipReportCallback
    >>> dataset = build_dataset(DataConfig(kind="synthdoc", num_samples=2000,
    ...                                    synthdoc={"image_size": 64, "levels": ["easy"]}),
    ...                         processor)
    >>> collator = VLMCollator(processor.tokenizer.pad_token_id)
    >>> callback = SkipReportCallback(dataset.report)       # for transformers.Trainer

Modules: ``synthdoc`` (+ ``synthdoc_draw``, ``synthdoc_layout``) generate documents;
``writers`` save them as LLaVA JSON or lmms-eval datasets; ``sources`` read LLaVA JSON and
``hf_sources`` Hugging Face datasets; ``images`` loads one image safely; ``dataset`` encodes
samples; ``skips`` reports what was skipped; ``collator`` pads or packs; ``config`` builds it
all.
"""

from .collator import VLMCollator, pack_rows
from .config import KINDS, DataConfig, build_dataset
from .dataset import SampleEncoder, VLMDataset, VLMIterableDataset
from .hf_sources import Columns, HFSource, HFStreamSource, load_hf
from .skips import HANDLED, SKIP_REASONS, SkipReport, SkipReportCallback, SkipSample
from .sources import LlavaSource, Source, SynthDocSource, llava_messages
from .synthdoc import (
    LEVELS,
    STYLES,
    WORDS,
    SynthDocConfig,
    SynthDocRecord,
    eval_prompt,
    generate_record,
    generate_records,
    plan_record,
    to_messages,
)
from .writers import write_llava

__all__ = [
    "HANDLED",
    "KINDS",
    "LEVELS",
    "SKIP_REASONS",
    "STYLES",
    "WORDS",
    "Columns",
    "DataConfig",
    "HFSource",
    "HFStreamSource",
    "LlavaSource",
    "SampleEncoder",
    "SkipReport",
    "SkipReportCallback",
    "SkipSample",
    "Source",
    "SynthDocConfig",
    "SynthDocRecord",
    "SynthDocSource",
    "VLMCollator",
    "VLMDataset",
    "VLMIterableDataset",
    "build_dataset",
    "eval_prompt",
    "generate_record",
    "generate_records",
    "llava_messages",
    "load_hf",
    "pack_rows",
    "plan_record",
    "to_messages",
    "write_llava",
]

"""``VLMDataset``: a source + a ``VLMProcessor`` -> training features, never crashing on bad data.

    >>> dataset = VLMDataset(LlavaSource("data.json"), processor, max_length=2048)
    >>> dataset[0]   # {"input_ids": [L], "attention_mask": [L], "labels": [L],
    ...              #  "pixel_values": [[3, H_i, W_i], ...], "image_sizes": [n, 2]}

One sample at a time: images are loaded by ``images.open_image`` (the encoder's
``load_image``, which inference and evaluation use too: EXIF transpose, strict decoding, the
image processor's ``max_pixels``, RGB) and padded by ``images.fit_budget``, then the processor
tokenises the conversation (labels on the assistant replies only).

Bad input never crashes the run and is never dropped silently. A sample that cannot be used
raises ``SkipSample`` internally; ``__getitem__`` records (id, reason) in the ``SkipReport``
and returns the next usable sample instead (index + 1, + 2, ... wrapping around: the same
for every run and worker), so that sample appears twice in the epoch. Which input gives
which outcome:

| input                                        | outcome                                     |
|----------------------------------------------|---------------------------------------------|
| missing / unreadable file, corrupt bytes     | skipped: missing_image / corrupt_image      |
| truncated PNG/JPEG                           | skipped: truncated_image                    |
| path with ``..`` / absolute outside the root | skipped: path_escapes_root                  |
| symlink in the root leading outside it       | skipped: path_escapes_root                  |
| more pixels than ``max_pixels`` (64 Mpx)     | skipped: image_too_large                    |
| NaN / inf pixels in an array or tensor      | skipped: unsupported_image                  |
| CMYK, 16-bit, greyscale, palette, alpha      | converted to RGB (alpha on white): handled  |
| EXIF-rotated photo                           | turned upright: handled                     |
| 1x1 image                                    | scaled up by the resolution policy (padded  |
|                                              | first if the token budget needs more patches)|
| 20,000 x 10 image                            | padded to ``max_aspect_ratio`` (white), then |
|                                              | scaled down by the resolution policy        |
| <image> markers != images                    | skipped: image_count_mismatch               |
| no messages / only empty ones                | skipped: empty_conversation                 |
| no non-empty assistant reply                 | skipped: no_assistant_reply                 |
| longer than max_length (default: the LLM's   | skipped: too_long (unless truncation=True   |
| context, ``VLMProcessor.context_length``)    | can cut text after the last image)          |
| a special token (end of turn ...) as text    | skipped: special_token_in_text (it would    |
|                                              | end the reply's labels where it stands)     |
| malformed entry                              | skipped: malformed_sample                   |

After ``max_consecutive_skips`` bad samples in a row (or the whole dataset), ``__getitem__``
raises: the data (or a setting such as the chat template) is broken as a whole.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from encoder.image_processing import ResolutionWarning

from ..chat import IGNORE_INDEX, flatten_conversation
from ..processing import (
    ChatTemplateError,
    SampleTooLongError,
    SpecialTokenInTextError,
    VLMProcessor,
)
from .hf_sources import HFStreamSource
from .images import fit_budget, open_image
from .skips import SkipReport, SkipSample
from .sources import RawSample, Source

__all__ = ["SampleEncoder", "VLMDataset", "VLMIterableDataset"]

logger = logging.getLogger("vlm.data")
Features = dict[str, Any]


class SampleEncoder:
    """Raw sample -> features (module docstring), or ``SkipSample``; shared by both datasets.

    max_length / truncation: as ``VLMProcessor``; None: the LLM's context length
        (``processor.context_length``; no limit when the tokenizer names none).
    max_aspect_ratio: see ``images``.
    """

    def __init__(
        self,
        processor: VLMProcessor,
        report: SkipReport,
        *,
        max_length: int | None = None,
        truncation: bool = False,
        max_aspect_ratio: float | None = 8.0,
    ) -> None:
        if max_aspect_ratio is not None and max_aspect_ratio < 1:
            raise ValueError(f"max_aspect_ratio must be >= 1 (or None); got {max_aspect_ratio}")
        self.processor, self.report = processor, report
        self.truncation = truncation
        self.max_length, self._limit = max_length, ""
        if max_length is None and processor.context_length is not None:
            self.max_length = processor.context_length
            self._limit = " (data.max_length is null: the LLM's context length)"
        self.max_aspect_ratio = max_aspect_ratio

    def __call__(self, raw: RawSample, index: int | None = None) -> Features:
        """``index``: the sample's position in its source, for the report."""
        sid, proc = raw["id"], self.processor
        messages, images = raw["messages"], list(raw["images"])
        if not isinstance(messages, list):
            raise SkipSample("malformed_sample", f"messages is a {type(messages).__name__}")
        if not any(_has_content(m) for m in messages):
            raise SkipSample("empty_conversation", f"{len(messages)} messages, none with text")
        try:
            flat, inline, markers = flatten_conversation(
                messages, 0, proc.image_token, proc.part_separator
            )
        except ValueError as err:
            raise SkipSample("malformed_sample", str(err)) from err
        if not any(m["role"] == "assistant" and m["content"].strip() for m in flat):
            raise SkipSample("no_assistant_reply", f"roles {[m['role'] for m in flat]}")
        if inline and images:
            raise SkipSample("malformed_sample", "images both inline in the messages and listed")
        images = inline or images
        if markers != len(images):
            raise SkipSample(
                "image_count_mismatch", f"{markers} image markers, {len(images)} images"
            )

        def note(reason: str, detail: str) -> None:
            self.report.add(sid, reason, detail, kind="handled", index=index)

        ip = proc.image_processor
        loaded = [
            fit_budget(
                open_image(image, note, ip.max_pixels),
                self._fits,
                self.max_aspect_ratio,
                ip.max_resolution,
                note,
            )
            for image in images
        ]
        try:
            out = proc(
                images=loaded or None,
                conversations=messages,
                padding=False,
                max_length=self.max_length,
                truncation=self.truncation,
                return_tensors=None,
            )
        except SampleTooLongError as err:
            raise SkipSample("too_long", str(err).split(";")[0] + self._limit) from err
        except ChatTemplateError as err:
            raise SkipSample("chat_template", str(err)) from err
        except SpecialTokenInTextError as err:
            raise SkipSample("special_token_in_text", str(err)) from err
        except ValueError as err:
            raise SkipSample("processor_error", str(err)) from err
        labels = out["labels"][0]
        if all(label == IGNORE_INDEX for label in labels):
            raise SkipSample("no_labels", f"{len(labels)} tokens, none supervised")
        ids = torch.tensor(out["input_ids"][0], dtype=torch.long)
        return {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.tensor(labels, dtype=torch.long),
            "pixel_values": list(out.get("pixel_values", [])),
            "image_sizes": torch.tensor(out.get("image_sizes", []), dtype=torch.long).view(-1, 2),
        }

    def _fits(self, height: int, width: int) -> bool:
        """Whether an image of height x width gives patch grids the compressor accepts."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResolutionWarning)
            try:
                self.processor.tokens_for_image(height, width)
            except ValueError:
                return False
        return True

    def image_tokens(self) -> int:
        """Sequence tokens of one square image at the encoder's resolution (for length
        estimates; with tiling, as many tiles as such an image gets)."""
        ip, proc = self.processor.image_processor, self.processor
        extra = (proc.image_start_token is not None) + (proc.image_end_token is not None)
        try:
            return proc.tokens_for_image(ip.resolution, ip.resolution) + extra
        except ValueError:
            return extra


class _EncodedSamples:
    """What both datasets share: a source, the processor, the ``SkipReport`` and the
    ``SampleEncoder`` (the keyword settings are ``SampleEncoder``'s and the report)."""

    def __init__(
        self,
        source: Any,
        processor: VLMProcessor,
        *,
        max_length: int | None = None,
        truncation: bool = False,
        report: SkipReport | None = None,
        max_aspect_ratio: float | None = 8.0,
    ) -> None:
        self.source, self.processor = source, processor
        self.report = report or SkipReport()
        self.encoder = SampleEncoder(
            processor,
            self.report,
            max_length=max_length,
            truncation=truncation,
            max_aspect_ratio=max_aspect_ratio,
        )

    def _encoded(self, index: int, raw: RawSample | None = None) -> Features | SkipSample:
        """The features of sample ``index`` (``raw``, else read from the source), or the
        ``SkipSample`` saying why not: an unexpected error becomes one too (never crash
        mid-run; the report shows it as a bug)."""
        try:
            return self.encoder(self.source[index] if raw is None else raw, index)
        except SkipSample as skip:
            return skip
        except Exception as err:
            logger.debug("unexpected error on sample %d", index, exc_info=True)
            return SkipSample("unexpected_error", f"{type(err).__name__}: {err}")


class VLMDataset(_EncodedSamples, Dataset):
    """Map-style training dataset over a ``Source`` (module docstring for the skip rules).

    settings: max_length, truncation, report (default: a new ``SkipReport`` in a temporary
        directory) and max_aspect_ratio, as for ``VLMIterableDataset``.
    max_consecutive_skips: give up (RuntimeError) after this many bad samples in a row.
    """

    def __init__(
        self,
        source: Source,
        processor: VLMProcessor,
        *,
        max_consecutive_skips: int = 1000,
        **settings: Any,
    ) -> None:
        if len(source) == 0:
            raise ValueError("the data source is empty; check data.path / num_samples")
        super().__init__(source, processor, **settings)
        self.max_consecutive_skips = max_consecutive_skips
        self._bad: set[int] = set()  # per process: known bad indices are not retried
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Features:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        index %= n
        tries = min(n, self.max_consecutive_skips)
        for step in range(tries):
            i = (index + step) % n
            if i in self._bad:
                continue
            out = self._encoded(i)
            if not isinstance(out, SkipSample):
                return out
            self._skip(i, out.reason, out.detail)
        raise RuntimeError(
            f"{tries} samples in a row from index {index} could not be used; the data or a "
            f"setting is broken as a whole. Skip report so far:\n{self.report.table()}"
        )

    def _skip(self, index: int, reason: str, detail: str) -> None:
        self._bad.add(index)
        try:
            sid = self.source.sample_id(index)
        except Exception:
            sid = f"#{index}"
        self.report.add(sid, reason, detail, index=index)

    @property
    def lengths(self) -> list[int]:
        """Estimated tokens per sample, without decoding images (computed once): the text
        tokenised + ``image_tokens`` per image + a little template overhead. For
        ``LengthGroupedSampler(batch_size, lengths=dataset.lengths)``."""
        if self._lengths is None:
            n, per_image = len(self), self.encoder.image_tokens()
            described = [
                self.source.describe(i)
                for i in tqdm(range(n), desc="estimate lengths", disable=n < 10_000, leave=False)
            ]
            tokenizer, lengths = self.processor.tokenizer, []
            overhead = self._template_overhead()
            for start in range(0, n, 1000):
                chunk = described[start : start + 1000]
                ids = tokenizer([text for text, _ in chunk], add_special_tokens=False)["input_ids"]
                lengths += [
                    len(t) + count * per_image + overhead
                    for t, (_, count) in zip(ids, chunk, strict=True)
                ]
            self._lengths = lengths
        return self._lengths

    def _template_overhead(self) -> int:
        """Tokens the chat template adds around one user/assistant round (+1 per image
        separator is not counted: this is an estimate)."""
        tokenizer = self.processor.tokenizer
        empty = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}]
        try:
            text = tokenizer.apply_chat_template(empty, tokenize=False)
        except Exception:  # no usable template: the samples will say so when loaded
            return 8
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) - 2

    def length_grouped_sampler(self, batch_size: int, generator: torch.Generator | None = None):
        """transformers' ``LengthGroupedSampler`` on ``lengths`` (the Trainer's own would
        process every sample to measure it: override ``Trainer._get_train_sampler`` with this)."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(batch_size, lengths=self.lengths, generator=generator)


class VLMIterableDataset(_EncodedSamples, IterableDataset):
    """Streaming counterpart of ``VLMDataset``: bad samples are recorded and passed over.

    DataLoader workers take every k-th row (k = number of workers); distributed ranks are
    left to accelerate, which dispatches batches of an iterable dataset from the main process.
    """

    source: HFStreamSource

    def __iter__(self) -> Iterator[Features]:
        info = get_worker_info()
        shard, shards = (info.id, info.num_workers) if info else (0, 1)
        for index, raw in self.source:
            if index % shards != shard:
                continue
            if isinstance(raw, SkipSample):
                self.report.add(f"row{index}", raw.reason, raw.detail, index=index)
                continue
            out = self._encoded(index, raw)
            if isinstance(out, SkipSample):
                self.report.add(raw["id"], out.reason, out.detail, index=index)
            else:
                yield out


def _has_content(message: Any) -> bool:
    """A message with non-blank text or an image item."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(
            isinstance(i, dict) and (i.get("type") == "image" or str(i.get("text", "")).strip())
            for i in content
        )
    return True  # malformed: flatten_conversation names the problem

"""What ``VLMProcessor`` does around each sample: normalising the ``images`` / ``text`` /
``conversations`` arguments into per-sample lists, expanding each image id into its
placeholders, enforcing ``max_length`` without cutting an
image, and padding rows of token ids into one batch (``pad_rows``: the toolkit's one padding
helper, also the collator's and the lmms-eval model's)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .chat import IGNORE_INDEX

Row = tuple[list[int], "list[int] | None"]  # (input_ids, labels or None) of one sample


class ImageTokenIds(NamedTuple):
    """The ids an image's placeholders are made of: ``start + N x image + end``."""

    image: int
    start: list[int]  # [] or [image_start_token_id]
    end: list[int]  # [] or [image_end_token_id]


class SampleTooLongError(ValueError):
    """A sample does not fit ``max_length`` without cutting an image span or the prompt."""


def is_conversation(value: Any) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def as_batch(samples: Any, chat: bool) -> list:
    """One sample or a list of them -> a new non-empty list of samples."""
    if chat:
        batch = [samples] if is_conversation(samples) else samples
    else:
        batch = [samples] if isinstance(samples, str) else samples
        if not isinstance(batch, list) or not all(isinstance(t, str) for t in batch):
            raise ValueError(f"text must be a string or a list of strings; got {samples!r:.80}")
    if not isinstance(batch, list) or not batch:
        raise ValueError(
            f"{'conversations' if chat else 'text'} is empty; pass at least one sample"
        )
    return list(batch)


def images_per_sample(images: Any, batch_size: int) -> list[list[Any]]:
    """None / an image / a list of images (one sample) / a list of those (a batch) -> lists."""
    if images is None:
        return [[] for _ in range(batch_size)]
    if not isinstance(images, (list, tuple)):
        images = [images]
    if batch_size == 1 and not any(x is None or isinstance(x, (list, tuple)) for x in images):
        return [list(images)]
    if len(images) != batch_size:
        raise ValueError(
            f"images has {len(images)} entries for {batch_size} samples; pass one entry (an "
            "image, a list of images or None) per sample"
        )
    return [[] if x is None else list(x) if isinstance(x, (list, tuple)) else [x] for x in images]


def expand_images(
    ids: list[int],
    labels: list[int] | None,
    counts: list[int],
    b: int,
    tokenizer: Any,
    tokens: ImageTokenIds,
) -> tuple[list[int], list[int] | None, list[tuple[int, int]]]:
    """Each image id -> [start] + N x image id + [end] (N from ``counts``, in order), labelled
    -100; also returns the image spans. A start/end token typed in the text is refused."""
    out_ids: list[int] = []
    out_labels = None if labels is None else []
    spans, todo = [], iter(counts)
    for k, tok in enumerate(ids):
        if tok in tokens.start or tok in tokens.end:
            raise ValueError(
                f"sample {b} contains {tokenizer.decode([tok])!r} in its text; the "
                "processor puts the image start/end tokens around every image, remove it"
            )
        if tok != tokens.image:
            out_ids.append(tok)
            if out_labels is not None:
                out_labels.append(labels[k])
            continue
        block = tokens.start + [tok] * next(todo) + tokens.end
        spans.append((len(out_ids), len(out_ids) + len(block)))
        out_ids += block
        if out_labels is not None:
            out_labels += [IGNORE_INDEX] * len(block)
    return out_ids, out_labels, spans


def fit_max_length(
    ids: list[int],
    labels: list[int] | None,
    spans: list[tuple[int, int]],
    b: int,
    max_length: int | None,
    truncation: bool,
    generation: bool,
) -> Row:
    """Enforce max_length: cut the text after the last image (truncation=True) or raise."""
    if max_length is None or len(ids) <= max_length:
        return ids, labels
    last = max((end for _, end in spans), default=0)
    head = f"sample {b} has {len(ids)} tokens, more than max_length={max_length}"
    if last > max_length:
        raise SampleTooLongError(
            f"{head}, and its images end at token {last}: truncation would cut through an "
            f"image. Raise max_length to >= {last}, use fewer or smaller images or a smaller "
            "token budget, or drop the sample."
        )
    if generation:
        raise SampleTooLongError(
            f"{head}; truncating would cut the generation prompt. Shorten it or raise max_length."
        )
    if not truncation:
        raise SampleTooLongError(
            f"{head}; pass truncation=True to cut the text after the last image (which ends at "
            f"token {last}), or raise max_length."
        )
    return ids[:max_length], None if labels is None else labels[:max_length]


def padded_length(
    lengths: list[int], padding: bool | str, max_length: int | None, return_tensors: str | None
) -> int | None:
    """The processor's ``padding`` argument -> the length to pad every row to (None: none)."""
    target = max_length if padding == "max_length" else max(lengths) if padding else None
    if target is None and return_tensors and len(set(lengths)) > 1:
        raise ValueError(
            f"samples have different lengths {lengths} and padding=False; pad them or pass "
            "return_tensors=None for lists"
        )
    return target


def pad_rows(
    rows: list[Row],
    pad_id: int | None,
    length: int | None,
    return_tensors: str | None = "pt",
    *,
    left: bool,
) -> dict[str, Any]:
    """The toolkit's one padding of token rows (processor, collator, lmms-eval scoring).

    Rows -> input_ids, attention_mask (+ labels when the rows have them), each row padded to
    ``length`` (None: left as it is) with ``pad_id`` (0 in the mask, -100 in the labels) on
    the left or right; [B, L] int64 tensors, or lists with ``return_tensors=None``."""
    if length is not None and min(len(ids) for ids, _ in rows) < length and pad_id is None:
        raise ValueError(
            "the tokenizer has no pad token; set tokenizer.pad_token (e.g. to a reserved "
            "special token) before batching samples of different lengths"
        )
    keys = ["input_ids", "attention_mask"] + (["labels"] if rows[0][1] is not None else [])
    data: dict[str, list] = {key: [] for key in keys}
    for ids, labels in rows:
        n = 0 if length is None else length - len(ids)
        for key, values, fill in zip(
            keys, (ids, [1] * len(ids), labels), (pad_id, 0, IGNORE_INDEX), strict=False
        ):
            data[key].append([fill] * n + values if left else values + [fill] * n)
    if return_tensors:
        return {k: torch.tensor(v, dtype=torch.long) for k, v in data.items()}
    return data

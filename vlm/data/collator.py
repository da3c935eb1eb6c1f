"""``VLMCollator``: a list of ``VLMDataset`` features -> one batch, padded or packed.

Padded (default): rows are padded to the longest (rounded up to ``pad_to_multiple_of``) on
``padding_side``: input_ids with ``pad_token_id``, attention_mask 0, labels -100. With left
padding, ``position_ids`` [B, L] (0 at each row's first real token) are added, so a
left-padded row sees the positions it would see alone (Qwen2/Llama otherwise count from the
first pad).

Packed (``packing=True``): samples are concatenated, in order, into rows of at most
``max_length`` tokens (a sample longer than that gets a row of its own; nothing is cut).
Per token, ``position_ids`` restart at 0 with every sample, the first label of each sample
is -100 (it must not be predicted from the previous sample), NO attention_mask is returned
and ``use_cache=False`` is: transformers (5.x ``masking_utils``) then finds the samples from
the position restarts and builds a block-diagonal causal mask for eager/sdpa/flex attention,
and flash-attention runs varlen on them — no token attends to another sample. The
``use_cache=False`` matters: with a KV cache object present (Qwen2/Llama create one whenever
``use_cache`` is on, which their configs default to, even in train mode) the restarts are
NOT looked for and attention silently spans the whole row. Row tails are filled with pad
tokens whose positions restart too (a segment of their own, label -100). Packing needs a
model whose forward passes ``position_ids`` and extra kwargs to the LLM (ours does).

Images: every sample's ``pixel_values`` in order of appearance, samples in row order (the
model fills image placeholders row by row): stacked [N, 3, H, W] when all sizes agree, else
a list of [3, H_i, W_i] (``encoder.image_processing.batch_pixels``); ``image_sizes`` [N, 2].
A batch without images has neither key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from encoder.image_processing import batch_pixels

from ..chat import IGNORE_INDEX
from ..processing_batch import pad_rows

__all__ = ["VLMCollator", "pack_rows"]

Features = dict[str, Any]


class VLMCollator:
    """Batch features of ``VLMDataset`` (module docstring).

    pad_token_id: the tokenizer's pad id. padding_side: "right" | "left".
    pad_to_multiple_of: round the row length up to a multiple of it.
    packing / max_length: pack samples into rows of at most ``max_length`` tokens (required
        with packing; ignored without it).
    """

    def __init__(
        self,
        pad_token_id: int,
        padding_side: str = "right",
        pad_to_multiple_of: int | None = None,
        packing: bool = False,
        max_length: int | None = None,
    ) -> None:
        if not isinstance(pad_token_id, int) or isinstance(pad_token_id, bool):
            raise ValueError(
                f"pad_token_id must be an int (tokenizer.pad_token_id); got "
                f"{pad_token_id!r}. Set tokenizer.pad_token first."
            )
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left'; got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be >= 1; got {pad_to_multiple_of}")
        if packing and (max_length is None or max_length < 1):
            raise ValueError(
                f"packing=True needs max_length >= 1 (the row capacity); got {max_length}"
            )
        self.pad_token_id, self.padding_side = pad_token_id, padding_side
        self.pad_to_multiple_of, self.packing, self.max_length = (
            pad_to_multiple_of,
            packing,
            max_length,
        )

    def __call__(self, features: Sequence[Features]) -> dict[str, Any]:
        if not features:
            raise ValueError("VLMCollator got an empty list of features")
        batch = self._packed(features) if self.packing else self._padded(features)
        pixels = [p for f in features for p in f.get("pixel_values", [])]
        if pixels:  # features are in row order in both modes (pack_rows keeps the order)
            batch["pixel_values"] = batch_pixels(pixels)
            batch["image_sizes"] = torch.cat(
                [torch.as_tensor(f["image_sizes"], dtype=torch.long).view(-1, 2) for f in features]
            )
        return batch

    def _target(self, longest: int) -> int:
        m = self.pad_to_multiple_of
        return longest if m is None else -(-longest // m) * m

    def _padded(self, features: Sequence[Features]) -> dict[str, torch.Tensor]:
        rows = [(_ints(f["input_ids"]), _ints(f["labels"])) for f in features]
        length = self._target(max(len(ids) for ids, _ in rows))
        out = pad_rows(rows, self.pad_token_id, length, left=self.padding_side == "left")
        if self.padding_side == "left":  # positions as if unpadded: 0 at the first real token
            out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp_(min=0)
        return out

    def _packed(self, features: Sequence[Features]) -> dict[str, Any]:
        lengths = [len(f["input_ids"]) for f in features]
        rows, positions = [], []
        for row in pack_rows(lengths, self.max_length):
            ids, labels = [], []
            for i in row:
                sample_labels = _ints(features[i]["labels"])
                sample_labels[0] = IGNORE_INDEX  # never predicted from the previous sample
                ids += _ints(features[i]["input_ids"])
                labels += sample_labels
            rows.append((ids, labels))
            positions.append([p for i in row for p in range(lengths[i])])
        length = self._target(max(len(ids) for ids, _ in rows))
        left = self.padding_side == "left"
        batch: dict[str, Any] = pad_rows(rows, self.pad_token_id, length, left=left)
        del batch["attention_mask"]  # the position restarts mark the samples (module docstring)
        fills = [list(range(length - len(p))) for p in positions]  # the padding: its own segment
        batch["position_ids"] = torch.tensor(
            [f + p if left else p + f for f, p in zip(fills, positions, strict=True)]
        )
        batch["use_cache"] = False  # else no sample isolation (module docstring)
        return batch


def pack_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Greedy, order-keeping packing: sample indices per row, each row's total length <=
    ``max_length`` (a longer sample alone in its row)."""
    rows: list[list[int]] = []
    used = max_length + 1
    for i, n in enumerate(lengths):
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def _ints(value: Any) -> list[int]:
    """A feature's token ids or labels (a tensor or a list) as a new list of ints."""
    return torch.as_tensor(value, dtype=torch.long).tolist()

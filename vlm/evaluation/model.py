"""``RadioVLM``: the toolkit's model as an lmms-eval 0.7 model ("simple" requests).

    lmms-eval --model radio_vlm --model_args pretrained=DIR,dtype=bfloat16 --batch_size 8 \\
        --tasks textvqa_val,docvqa_val,ocrbench --output_path runs/eval
    accelerate launch --num_processes 8 -m lmms_eval --model radio_vlm ...   # data parallel

Model arguments (``--model_args k=v,...``): ``pretrained`` (a folder or hub id saved by
``save_pretrained``: model + processor), ``device`` (default cuda when present, else cpu;
in a multi-process run each process takes its own accelerator device), ``dtype`` ("auto" = as saved, "bfloat16",
"float16", "float32"), ``batch_size``, ``max_new_tokens`` (default for tasks that set none),
``system_prompt`` (a system message before each prompt; default: the chat template's own),
``attn_implementation``. Programmatic use may pass ``model=`` and ``processor=`` objects
instead of ``pretrained``.

Prompts: the processor's chat template, the task's context as the user message with the
request's images as image items before it, and the generation prompt. Answers are returned as
decoded (special tokens dropped), cut before the first ``until`` stop string, and otherwise
unchanged: lmms-eval strips whitespace itself before scoring.

Images: lmms-eval switches Pillow's ``LOAD_TRUNCATED_IMAGES`` on globally when imported, so a
cut-off image in a task's data would be decoded with grey where its pixels are missing. Each
document is read, and its images made (``doc_to_visual``), under ``strict_decoding``: such an
image is an ``ImageLoadError`` naming the task and document. The processor then puts every
image through the encoder's ``load_image``, as for training (EXIF orientation, the pixel limit,
RGB).

``loglikelihood`` returns (mean negative log-likelihood per continuation token, is_greedy), the
convention of lmms-eval's own models, which its ``multiple_choice`` scorer relies on (it takes
the argmin). The base class docstring's "log probability" is inherited from lm-eval-harness
and does not match that scorer.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm.auto import tqdm

from encoder.image_loading import decoding_error, strict_decoding

from ..chat import end_of_turn_ids
from ..processing_batch import pad_rows
from .generation import (
    as_images,
    cut_at_stop,
    decoding_settings,
    group_key,
    stop_strings,
    user_turn,
)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class _Request:
    index: int  # position in the caller's list
    context: str
    images: list[Image.Image]
    gen_kwargs: dict[str, Any]


class RadioVLM(lmms):
    """lmms-eval wrapper of a ``vlm.VisionLanguageModel`` + ``vlm.VLMProcessor``."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        *,
        model: Any = None,
        processor: Any = None,
        device: str | None = None,
        dtype: str | torch.dtype | None = "auto",
        batch_size: int | str = 1,
        max_new_tokens: int = 128,
        system_prompt: str | None = None,
        attn_implementation: str | None = None,
        max_batch_size: int | None = None,  # passed by lmms-eval's CLI; unused
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise TypeError(
                f"unknown RadioVLM model arguments {sorted(unknown)}; known: pretrained, "
                "device, dtype, batch_size, max_new_tokens, system_prompt, attn_implementation"
            )
        if (pretrained is None) == (model is None):
            raise ValueError("pass exactly one of pretrained=<folder or hub id> or model=<model>")
        if model is not None and processor is None:
            raise ValueError("model= needs its processor=; pass the VLMProcessor built with it")
        from accelerate import Accelerator

        self.accelerator = Accelerator()  # lmms-eval gathers and waits through it
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        if self._world_size > 1:
            self._device = self.accelerator.device  # one device per process
        else:
            self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._batch_size = _positive_int(batch_size, "batch_size")
        self.max_new_tokens = _positive_int(max_new_tokens, "max_new_tokens")
        self.system_prompt = system_prompt or None
        if model is None:
            model, processor = _load(pretrained, dtype, attn_implementation)
        elif dtype not in (None, "auto"):
            model = model.to(_dtype(dtype))
        self._model = model.to(self._device).eval()
        self.processor = processor
        tokenizer = processor.tokenizer
        eos = end_of_turn_ids(model, tokenizer)
        self._eos = eos
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]

    # ------------------------------------------------------------------ properties

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def config(self) -> Any:
        return self._model.config  # lmms-eval names the run after config._name_or_path

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self._batch_size

    # ------------------------------------------------------------------ lmms API

    def generate_until(self, requests: Sequence[Instance]) -> list[str]:
        """Greedy (or sampled) answers, batched by equal gen_kwargs, longest prompts first."""
        todo = [self._request(i, r.args) for i, r in enumerate(requests)]
        groups: dict[str, list[_Request]] = {}
        for req in sorted(todo, key=lambda r: -len(r.context)):
            groups.setdefault(group_key(req.gen_kwargs), []).append(req)
        answers: list[str | None] = [None] * len(todo)
        with self._progress(len(todo), "RadioVLM generating") as bar:
            for group in groups.values():
                for batch in _chunks(group, self._batch_size):
                    until = stop_strings(batch[0].gen_kwargs)
                    texts = self._generate_batch(batch, until)
                    for req, text in zip(batch, texts, strict=True):
                        answers[req.index] = cut_at_stop(text, until)
                        self.cache_hook.add_partial(
                            "generate_until", (req.context, req.gen_kwargs), answers[req.index]
                        )
                    bar.update(len(batch))
        return answers  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[Instance]) -> list[tuple[float, bool]]:
        """(mean NLL per continuation token, continuation == greedy tokens) per request: the
        continuation follows the chat template's generation prompt for the context."""
        items = []
        for i, request in enumerate(requests):
            context, continuation, images = self._loglikelihood_args(request.args)
            items.append((i, context, continuation, images))
        items.sort(key=lambda item: -len(item[1]) - len(item[2]))
        results: list[tuple[float, bool] | None] = [None] * len(items)
        with self._progress(len(items), "RadioVLM scoring") as bar:
            for batch in _chunks(items, self._batch_size):
                scores = self._score_batch([(c, k, im) for _, c, k, im in batch])
                for (i, *_), score in zip(batch, scores, strict=True):
                    results[i] = score
                bar.update(len(batch))
        return results  # type: ignore[return-value]

    def generate_until_multi_round(self, requests: Sequence[Instance]) -> list[str]:
        raise NotImplementedError(
            "RadioVLM does not implement multi-round generation (generate_until_multi_round); "
            "use tasks with output_type generate_until or loglikelihood"
        )

    def clean(self) -> None:
        """Free cached memory but keep the model: lmms-eval calls this after every run, and
        its default deletes the model, so the instance could not evaluate again."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ model calls

    @torch.inference_mode()
    def _generate_batch(self, batch: Sequence[_Request], until: Sequence[str]) -> list[str]:
        """Decoded new text for each request of a batch (same gen_kwargs), before ``until``
        cuts it; stop strings also end generation early."""
        settings = decoding_settings(batch[0].gen_kwargs, self.max_new_tokens)
        tokenizer = self.processor.tokenizer
        with _padding_side(tokenizer, "left"):  # new tokens line up at the right
            inputs = self.processor(
                images=[r.images for r in batch] if any(r.images for r in batch) else None,
                conversations=[self._conversation(r.context, r.images) for r in batch],
                add_generation_prompt=True,
            )
        inputs = {k: _to(v, self._device) for k, v in inputs.items()}
        if until:
            settings |= {"stop_strings": list(until), "tokenizer": tokenizer}
        out = self._model.generate(
            **inputs, eos_token_id=self._eos, pad_token_id=self._pad, **settings
        )
        new = out[:, inputs["input_ids"].shape[1] :]
        return tokenizer.batch_decode(new, skip_special_tokens=True)

    @torch.inference_mode()
    def _score_batch(
        self, batch: Sequence[tuple[str, str, list[Image.Image]]]
    ) -> list[tuple[float, bool]]:
        prompts = self.processor(
            images=[im for _, _, im in batch] if any(im for *_, im in batch) else None,
            conversations=[self._conversation(c, im) for c, _, im in batch],
            add_generation_prompt=True,
            padding=False,
            return_tensors=None,
        )
        tokenizer = self.processor.tokenizer
        rows, spans = [], []
        for prompt, (_, continuation, _) in zip(prompts["input_ids"], batch, strict=True):
            target = tokenizer.encode(continuation, add_special_tokens=False)
            spans.append((len(prompt), target))
            rows.append((list(prompt) + target, None))
        longest = max(len(ids) for ids, _ in rows)
        padded = pad_rows(rows, self._pad, longest, left=False)  # right: positions 0..n-1 kept
        ids, mask = padded["input_ids"], padded["attention_mask"]
        pixels = prompts.get("pixel_values")
        if pixels:  # the same stacking as the processor's tensor output
            from encoder.image_processing import batch_pixels

            pixels = _to(batch_pixels(pixels), self._device)
        logits = self._model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            pixel_values=pixels if pixels is not None and len(pixels) else None,
            use_cache=False,
        ).logits
        scores = []
        for b, (start, target) in enumerate(spans):
            if not target:
                scores.append((0.0, True))
                continue
            # logits at position t predict token t + 1
            step = logits[b, start - 1 : start - 1 + len(target)].float().log_softmax(-1)
            wanted = torch.tensor(target, device=step.device)
            logprob = step.gather(-1, wanted[:, None]).sum()
            greedy = bool((step.argmax(-1) == wanted).all())
            scores.append((float(-logprob / len(target)), greedy))
        return scores

    # ------------------------------------------------------------------ helpers

    def _conversation(self, context: str, images: list[Image.Image]) -> list[dict[str, Any]]:
        return user_turn(context, images, self.processor.image_token, self.system_prompt)

    def _doc(self, task: str, split: str, doc_id: int) -> Any:
        try:
            docs = self.task_dict[task][split]
        except KeyError as err:
            raise KeyError(
                f"RadioVLM.task_dict has no {task!r}/{split!r}: lmms-eval's evaluator fills it "
                "(lm.task_dict[task] = task.dataset) before sending requests"
            ) from err
        return _strictly_decoded(lambda: docs[doc_id], task, doc_id)  # datasets decodes here

    def _visuals(self, doc_to_visual: Any, doc: Any, task: str, doc_id: int) -> list[Image.Image]:
        if not doc_to_visual:
            return []
        return as_images(_strictly_decoded(lambda: doc_to_visual(doc), task, doc_id), task)

    def _request(self, index: int, args: tuple) -> _Request:
        if len(args) != 6:
            raise ValueError(
                f"a generate_until request has 6 arguments (context, gen_kwargs, doc_to_visual, "
                f"doc_id, task, split); got {len(args)}: {args!r:.200}"
            )
        context, gen_kwargs, doc_to_visual, doc_id, task, split = args
        images = self._visuals(doc_to_visual, self._doc(task, split, doc_id), task, doc_id)
        return _Request(index, context, images, dict(gen_kwargs or {}))

    def _loglikelihood_args(self, args: tuple) -> tuple[str, str, list[Image.Image]]:
        if len(args) == 2:  # lmms-eval's unconditional (mutual-information) requests
            return args[0], args[1], []
        context, target, doc_to_visual, doc_id, task, split = args
        doc = self._doc(task, split, doc_id)
        continuation = target if isinstance(target, str) else target(doc)
        if not isinstance(continuation, str):
            raise TypeError(
                f"task {task!r} doc {doc_id}: the continuation to score must be a string; "
                f"doc_to_target gave {continuation!r:.80}"
            )
        return context, continuation, self._visuals(doc_to_visual, doc, task, doc_id)

    def _progress(self, total: int, desc: str) -> Any:
        return tqdm(total=total, desc=desc, disable=self._rank != 0)


def _strictly_decoded(read: Any, task: str, doc_id: int) -> Any:
    """``read()`` with truncated images refused; an image that fails to decode becomes an
    ``ImageLoadError`` naming the task and document."""
    try:
        with strict_decoding():
            return read()
    except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise decoding_error(err, f"task {task!r} document {doc_id}'s image") from err


def _load(pretrained: str, dtype: Any, attn_implementation: str | None) -> tuple[Any, Any]:
    from vlm.saved import load_saved

    looks_local = Path(pretrained).is_absolute() or pretrained.startswith((".", "~"))
    if looks_local:
        pretrained = str(Path(pretrained).expanduser())
        if not Path(pretrained).is_dir():
            raise FileNotFoundError(
                f"pretrained={pretrained!r}: no such folder. Pass a saved model's folder (the "
                "output_dir of a finished stage: a model, or a LoRA stage's adapter) or a hub "
                "id (owner/name)"
            )
    kwargs: dict[str, Any] = {"dtype": "auto" if dtype in (None, "auto") else _dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    return load_saved(pretrained, **kwargs)  # a LoRA stage's adapter: merged into its base


def _dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; use 'auto' or one of {sorted(DTYPES)}")
    return DTYPES[value]


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise ValueError(
            f"{name} must be a positive integer; got {value!r} (RadioVLM has no 'auto' batch "
            "size: pick one that fits the device)"
        )
    return number


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [v.to(device) for v in value]
    return value


@contextlib.contextmanager
def _padding_side(tokenizer: Any, side: str) -> Iterator[None]:
    """Temporarily set the padding side (the tokenizer may be the caller's own)."""
    before = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = before

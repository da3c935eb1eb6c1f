"""``ChatSession``: a multi-turn conversation with a VLM; images join between turns and the
answers stream as they are generated.

    >>> session = ChatSession(model, processor)
    >>> session.add_image("page.png")               # 16: the visual tokens this image costs
    >>> for piece in session.ask("What is the title?"):
    ...     print(piece, end="", flush=True)
    >>> "".join(session.ask("And the date?"))       # the first question and answer are in
    ...                                             # this prompt: the model sees the history

Images added since the last question go into the next user message, before its text. Every
turn renders the whole conversation again (each image, each earlier turn) with the processor's
own chat template: exactly the format the model was trained on, at the price of recomputing
the prompt (no KV cache is kept between turns; fine for chat-length conversations).

Generation runs in a worker thread feeding transformers' ``TextIteratorStreamer``; the caller
reads the pieces as they come. Closing the iterator early (Ctrl-C, a closed browser tab)
stops the generation at the next token and records nothing of that turn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from encoder.image_loading import load_image

from .chat import end_of_turn_ids
from .processing import SampleTooLongError


@dataclass(frozen=True)
class ImageInfo:
    """An image of the conversation: its pixels once loaded, the size the processor resizes it
    to (height, width) and the visual tokens it costs the LLM."""

    image: Image.Image
    processed_size: tuple[int, int]
    visual_tokens: int


class _StopFlag(StoppingCriteria):
    """Ends ``generate`` once ``event`` is set (checked after every new token)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        done = self.event.is_set()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class ChatSession:
    """A conversation with ``model`` (a ``VisionLanguageModel``) through ``processor`` (its
    ``VLMProcessor``).

    system_prompt:  a system message first; None keeps the chat template's own default.
    max_new_tokens: the longest answer, in tokens.
    temperature:    0 decodes greedily (the same answer every time); > 0 samples.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        system_prompt: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1; got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy); got {temperature}")
        self.model, self.processor = model, processor
        self.system_prompt = system_prompt
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.messages: list[dict[str, Any]] = []  # user turns hold {"type": "image"} items
        self.images: list[ImageInfo] = []  # in order of appearance, the pending ones last
        self.pending = 0  # images added since the last question
        self._eos = end_of_turn_ids(model, processor.tokenizer)

    def add_image(self, image: Any) -> ImageInfo:
        """Load ``image`` (a path, bytes, PIL image or array) for the next question; returns
        what it costs. Raises ``encoder.image_loading.ImageLoadError`` for a missing or
        unreadable file, ``ValueError`` for an image the compressor cannot take."""
        rgb = load_image(image, max_pixels=self.processor.image_processor.max_pixels)
        pixels = self.processor.image_processor(rgb)[0]  # [3, H, W]
        height, width = pixels.shape[-2:]
        cost = self.processor.tokens_for_image(rgb.height, rgb.width)  # tiles summed, if any
        info = ImageInfo(rgb, (height, width), cost)
        self.images.append(info)
        self.pending += 1
        return info

    def reset(self) -> None:
        """Forget every turn and image."""
        self.messages, self.images, self.pending = [], [], 0

    def conversation(self, question: str) -> list[dict[str, Any]]:
        """The messages the next turn sends: the history, then ``question`` with the pending
        images before its text."""
        items = [{"type": "image"}] * self.pending + [{"type": "text", "text": question}]
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return [*system, *self.messages, {"role": "user", "content": items}]

    def ask(self, question: str) -> Iterator[str]:
        """Stream the answer to ``question`` in pieces of decoded text. Once the iterator is
        exhausted the turn (question, its images, the answer) joins the history.

        Raises ``ValueError`` when the conversation no longer fits the model's context
        (``reset`` starts over) and re-raises whatever ``generate`` raised."""
        if not question.strip():
            raise ValueError("the question is empty; type some text to ask")
        conversation = self.conversation(question)
        inputs = self._inputs(conversation)
        streamer = TextIteratorStreamer(
            self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        stop, failure = threading.Event(), []

        def generate() -> None:
            try:
                self.model.generate(**inputs, **self._settings(streamer, stop))
            except BaseException as err:  # handed to the reading thread
                failure.append(err)
                streamer.end()  # else the reader waits for text forever

        worker = threading.Thread(target=generate, name="vlm-chat-generate", daemon=True)
        worker.start()
        pieces, finished = [], False
        try:
            for piece in streamer:
                pieces.append(piece)
                yield piece
            finished = True
        finally:
            stop.set()  # a no-op after a normal end; stops generation when closed early
            worker.join()
        if failure:
            raise failure[0]
        if finished:
            answer = {"role": "assistant", "content": "".join(pieces)}
            self.messages = [*conversation[1 if self.system_prompt else 0 :], answer]
            self.pending = 0

    # ------------------------------------------------------------------ helpers

    def _inputs(self, conversation: list[dict[str, Any]]) -> dict[str, Any]:
        """input_ids, attention_mask [1, L] (+ pixel_values, image_sizes) on the model's device."""
        context = self.processor.context_length
        limit = None if context is None else context - self.max_new_tokens
        try:
            batch = self.processor(
                images=[info.image for info in self.images] or None,
                conversations=conversation,
                add_generation_prompt=True,
                max_length=limit,
            )
        except SampleTooLongError as err:
            raise ValueError(
                f"the conversation no longer fits the model's context of {context} tokens "
                f"with room for a {self.max_new_tokens}-token answer; start over (reset) or "
                "ask for shorter answers"
            ) from err
        device = self.model.device
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}

    def _settings(self, streamer: TextIteratorStreamer, stop: threading.Event) -> dict[str, Any]:
        """``generate`` keyword arguments, every decoding field explicit so the LLM's own
        generation_config.json (sampling defaults, penalties) never changes the answer."""
        sample, pad = self.temperature > 0, self.processor.tokenizer.pad_token_id
        settings: dict[str, Any] = {
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopFlag(stop)]),
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "num_beams": 1,
            "repetition_penalty": 1.0,
            "eos_token_id": self._eos,
            "pad_token_id": self._eos[0] if pad is None else pad,
        }
        if sample:
            settings |= {"temperature": self.temperature, "top_p": 1.0, "top_k": 0}
        return settings

"""lmms-eval requests -> chat prompts and ``generate`` settings (no model code here).

lmms-eval hands each request its task's ``generation_kwargs`` (YAML, overridden by
``--gen_kwargs``). ``decoding_settings`` maps them onto ``model.generate`` keyword arguments:

- ``until``: stop strings (str or list); the text is cut before the first one found.
- ``max_new_tokens``: default ``default_max_new_tokens`` (a model argument).
- ``temperature`` 0 (lmms-eval's convention) or ``do_sample`` False -> greedy; temperature > 0
  samples unless ``do_sample`` is False; ``top_p`` / ``top_k`` apply only when sampling.
- ``num_beams``, ``repetition_penalty``, ``no_repeat_ngram_size``, ``length_penalty``,
  ``min_new_tokens`` are passed on. Every decoding field is set explicitly, so the LLM's own
  generation_config.json (often sampling defaults or a repetition penalty) never changes the
  numbers: what the task asks is what runs.

Other keys (task-specific ones some lmms-eval YAMLs carry, e.g. ``image_aspect_ratio``) are
ignored with one warning each.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

from PIL import Image

PASSED_ON = (
    "num_beams",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
    "min_new_tokens",
)
SAMPLING = ("top_p", "top_k")
_warned: set[str] = set()


def group_key(gen_kwargs: dict[str, Any]) -> str:
    """Requests with equal settings can share a batch."""
    return json.dumps(gen_kwargs, sort_keys=True, default=repr)


def stop_strings(gen_kwargs: dict[str, Any]) -> list[str]:
    """``until`` as a list of non-empty strings."""
    until = gen_kwargs.get("until")
    if until is None:
        return []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, (list, tuple)) or not all(isinstance(s, str) for s in until):
        raise ValueError(f"gen_kwargs 'until' must be a string or a list of strings; got {until!r}")
    return [s for s in until if s]


def decoding_settings(gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> dict[str, Any]:
    """lmms-eval ``gen_kwargs`` -> ``generate`` keyword arguments (see the module docstring)."""
    known = {"until", "max_new_tokens", "temperature", "do_sample", *PASSED_ON, *SAMPLING}
    for key in sorted(set(gen_kwargs) - known):
        if key not in _warned:
            _warned.add(key)
            warnings.warn(
                f"gen_kwargs {key}={gen_kwargs[key]!r} is not a decoding setting RadioVLM "
                f"knows ({sorted(known)}); ignored",
                stacklevel=3,
            )
    max_new = gen_kwargs.get("max_new_tokens")
    max_new = default_max_new_tokens if max_new is None else int(max_new)
    if max_new < 1:
        raise ValueError(f"max_new_tokens must be >= 1; got {max_new}")
    temperature = gen_kwargs.get("temperature")
    temperature = None if temperature is None else float(temperature)
    do_sample = gen_kwargs.get("do_sample")
    # temperature 0 means greedy whatever do_sample says (lmms-eval's convention)
    sample = bool(do_sample) if temperature is None else temperature > 0 and do_sample is not False
    settings: dict[str, Any] = {
        "max_new_tokens": max_new,
        "do_sample": sample,
        "num_beams": int(gen_kwargs.get("num_beams") or 1),
        "repetition_penalty": float(gen_kwargs.get("repetition_penalty") or 1.0),
        "no_repeat_ngram_size": int(gen_kwargs.get("no_repeat_ngram_size") or 0),
    }
    for key in ("length_penalty", "min_new_tokens"):
        if gen_kwargs.get(key) is not None:
            settings[key] = gen_kwargs[key]
    if sample:
        settings["temperature"] = 1.0 if temperature is None else temperature
        settings["top_p"] = float(gen_kwargs.get("top_p") or 1.0)
        settings["top_k"] = int(gen_kwargs.get("top_k") or 0)  # 0: off, not transformers' 50
    return settings


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string; nothing else changes."""
    cut = min((i for i in (text.find(s) for s in until) if i >= 0), default=len(text))
    return text[:cut]


def user_turn(
    context: str, images: list[Image.Image], image_token: str, system_prompt: str | None
) -> list[dict[str, Any]]:
    """The task's prompt as one user message: image items first, then the text. A context that
    already holds one ``image_token`` per image keeps them where they are."""
    markers = context.count(image_token)
    if markers == 0:
        content: Any = [{"type": "image"}] * len(images) + [{"type": "text", "text": context}]
    elif markers == len(images):
        content = context
    else:
        raise ValueError(
            f"the task's prompt holds {markers} image markers {image_token!r} but it gave "
            f"{len(images)} images; the prompt text must not contain the model's image token "
            "except one per image"
        )
    conversation = [{"role": "user", "content": content}]
    if system_prompt:
        conversation.insert(0, {"role": "system", "content": system_prompt})
    return conversation


def as_images(visuals: Any, task: str) -> list[Image.Image]:
    """``doc_to_visual(doc)`` -> a list of PIL images (None / [] -> no image)."""
    if visuals is None:
        return []
    if isinstance(visuals, Image.Image):
        return [visuals]
    out = []
    for visual in visuals:
        if not isinstance(visual, Image.Image):
            raise TypeError(
                f"task {task!r} gave a {type(visual).__name__} visual ({visual!r:.80}); "
                "RadioVLM reads images only (PIL), not video or audio"
            )
        out.append(visual)
    return out

"""Chat rendering and label spans for ``VLMProcessor``: conversations -> ids + labels.

Text comes from the TOKENIZER'S OWN chat template, never a hand-written one. List content is
flattened to a string first (text parts as they are, each image part as ``image_token``, joined
by ``part_separator``); LLaVA-style ``<image>`` markers inside strings are images too.

Labels: -100 everywhere except each assistant reply and the end-of-turn token closing it. The
template locates them: the text of messages[:i] with ``add_generation_prompt=True`` must be a
prefix of the text of messages[:i+1] (else ``ChatTemplateError``), and the rest of the latter
is the reply plus the template's closing text. Tokens overlapping it are labelled up to and
including the first special token (``stop_ids``: ``<|im_end|>``, ``<|eot_id|>``, ...), not what
follows (a newline); with none there, trailing whitespace is left out. A token straddling the
reply's start is labelled. Images are only allowed in user messages, so never labelled.

A special token typed inside a message's text (the string "<|im_end|>" in a reply) would be
read by the tokenizer as the token itself and end the reply's labels there; with labels,
``refuse_special_tokens`` turns it into a ``SpecialTokenInTextError`` instead.

Every function takes the conversation's index ``b`` in its batch, for error messages only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100

Conversation = list[dict[str, Any]]
Span = tuple[int, int]


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot be used to locate the assistant replies."""


class SpecialTokenInTextError(ValueError):
    """A message's text holds one of the tokenizer's special tokens as a string."""


def refuse_special_tokens(messages: list[dict], b: int, specials: Collection[str]) -> None:
    """Raise ``SpecialTokenInTextError`` when a string-content message contains any of
    ``specials`` (the tokenizer would read it as that token, not as text)."""
    for j, message in enumerate(messages):
        found = [token for token in specials if token in message["content"]]
        if found:
            raise SpecialTokenInTextError(
                f"conversation {b}, message {j} ({message['role']}) contains {found[0]!r} as "
                "text; the tokenizer would read it as its special token (an end of turn cuts "
                "the reply's labels short). Remove or reword it, or drop the sample"
            )


def flatten_conversation(
    conversation: Conversation, b: int, image_token: str, part_separator: str
) -> tuple[list[dict], list[Any], int]:
    """Check a conversation and give every message string content.

    Returns the messages (copies, list content joined by ``part_separator`` with each image
    item as ``image_token``), the images carried by items (``{"type": "image", "image": x}``)
    and the number of image markers. Raises ``ValueError`` for malformed messages, images
    outside user messages, or images given inline for only some markers.
    """
    if not isinstance(conversation, list) or not conversation:
        raise ValueError(f"conversation {b} is empty; it needs at least one message")
    messages, inline = [], []
    for j, message in enumerate(conversation):
        where = f"conversation {b}, message {j}"
        if not isinstance(message, dict) or not {"role", "content"} <= message.keys():
            raise ValueError(
                f"{where} must be a dict with 'role' and 'content'; got {message!r:.80}"
            )
        content = message["content"]
        if isinstance(content, list):
            content = _join_items(content, where, image_token, part_separator, inline)
        elif not isinstance(content, str):
            raise ValueError(
                f"{where}: content must be a string or a list of items; got "
                f"{type(content).__name__}"
            )
        if (n := content.count(image_token)) and message["role"] != "user":
            raise ValueError(
                f"{where} ({message['role']!r}) holds {n} image(s); images are only "
                "allowed in user messages"
            )
        messages.append({**message, "content": content})
    markers = count_markers(messages, image_token)
    if inline and len(inline) != markers:
        raise ValueError(
            f"conversation {b}: {len(inline)} image items carry an image but it has "
            f"{markers} image markers; give every image inline or all through images="
        )
    return messages, inline, markers


def count_markers(messages: list[dict], image_token: str) -> int:
    """Image markers in string-content messages."""
    return sum(m["content"].count(image_token) for m in messages)


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    add_generation_prompt: bool,
    b: int,
) -> str:
    """The tokenizer's chat template applied to string-content messages, as text.

    Any failure of the template (jinja errors, no template, ...) becomes a ``ChatTemplateError``.
    """
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as err:  # jinja errors, missing template, ...
        raise ChatTemplateError(
            f"the tokenizer's chat template failed on conversation {b} ({len(messages)} "
            f"messages, add_generation_prompt={add_generation_prompt}): "
            f"{type(err).__name__}: {err}"
        ) from err


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict],
    b: int,
    *,
    image_token: str,
    image_token_id: int,
    stop_ids: Collection[int],
    add_generation_prompt: bool,
    want_labels: bool,
) -> tuple[list[int], list[int] | None]:
    """Render and tokenise once (the template holds any bos): (ids, labels or None).

    Each image marker stays one ``image_token_id``. Labels (``want_labels``, which needs a fast
    tokenizer for character offsets) are ``IGNORE_INDEX`` except the tokens of each assistant
    reply up to and including the first of ``stop_ids`` (see the module docstring).
    """
    text = render_chat(tokenizer, messages, add_generation_prompt, b)
    if want_labels and not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"labels need character offsets, which {type(tokenizer).__name__} cannot "
            "give; load a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=want_labels)
    ids = enc["input_ids"]
    markers = count_markers(messages, image_token)
    if ids.count(image_token_id) != markers:
        raise ChatTemplateError(
            f"the chat template rendered {ids.count(image_token_id)} image tokens for "
            f"conversation {b}, whose messages hold {markers}; it must copy each message once"
        )
    if not want_labels:
        return ids, None
    labels, offsets = [IGNORE_INDEX] * len(ids), enc["offset_mapping"]
    for span in reply_spans(tokenizer, messages, text, b):
        for k in _reply_tokens(ids, offsets, text, span, stop_ids):
            labels[k] = ids[k]
    return ids, labels


def reply_spans(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], text: str, b: int
) -> list[Span]:
    """Character span [start, end) in ``text`` of every assistant reply + its closing text.

    ``text`` is the rendering of all ``messages``. Raises ``ChatTemplateError`` when the
    template is not prefix-stable (an earlier turn renders differently once more follows).
    """
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:i], True, b)
        upto = render_chat(tokenizer, messages[: i + 1], False, b)
        _check_prefix(prompt, upto, b, f"messages[:{i}] + generation prompt and messages[:{i + 1}]")
        _check_prefix(upto, text, b, f"messages[:{i + 1}] and the whole conversation")
        spans.append((len(prompt), len(upto)))
    return spans


def _join_items(
    items: list, where: str, image_token: str, part_separator: str, inline: list[Any]
) -> str:
    """List content -> one string; images carried by image items are appended to ``inline``."""
    parts = []
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in ("text", "image"):
            raise ValueError(
                f"{where}: content items must be {{'type': 'text', 'text': ...}} or "
                f"{{'type': 'image'}}; got {item!r:.80}"
            )
        parts.append(item["text"] if kind == "text" else image_token)
        if kind == "image" and item.get("image") is not None:
            inline.append(item["image"])
    return part_separator.join(parts)


def _reply_tokens(
    ids: list[int],
    offsets: list[Span],
    text: str,
    span: Span,
    stop_ids: Collection[int],
) -> list[int]:
    """Indices of the tokens overlapping ``span``, cut after the first stop token (or, with
    none, without trailing whitespace-only tokens)."""
    start, end = span
    inside = [k for k, (s, e) in enumerate(offsets) if s < end and e > start]
    stop = next((n for n, k in enumerate(inside) if ids[k] in stop_ids), None)
    if stop is not None:
        return inside[: stop + 1]
    while inside and not text[slice(*offsets[inside[-1]])].strip():
        inside.pop()
    return inside


def _check_prefix(short: str, long: str, b: int, what: str) -> None:
    """Raise ``ChatTemplateError`` unless ``long`` starts with ``short``."""
    if long.startswith(short):
        return
    at = next(
        (k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y),
        min(len(short), len(long)),
    )
    raise ChatTemplateError(
        f"the chat template is not prefix-stable on conversation {b}: the texts "
        f"of {what} differ at character {at} ({short[at : at + 30]!r} vs "
        f"{long[at : at + 30]!r}). Assistant replies are located by this "
        "property; use a template that renders earlier turns the same whatever "
        "follows (set tokenizer.chat_template)."
    )


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """Tokens that end an answer: the model's generation_config eos and the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError(
            "neither the model's generation_config nor the tokenizer names an end-of-sequence "
            "token; set tokenizer.eos_token (the chat template's end of turn)"
        )
    return ids

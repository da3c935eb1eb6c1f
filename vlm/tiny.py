"""Tiny random language models and tokenizers: what the quickstart trains, what the "tiny"
recipe specs build, and what tests and benchmarks run on. The vision side's tiny towers are
``encoder.tiny``'s.

Everything is built locally from a bundled text sample and seeded random weights; nothing
touches the network, and the same arguments give the same bytes.

    >>> tok = tiny_tokenizer("chatml")                 # byte-level BPE, ~1k vocab, Qwen2-style
    >>> llm = tiny_llm("qwen2", vocab_size=len(tok))   # 2 layers, hidden 64

Chat templates (``TEMPLATES``) follow the two families most LLMs use:

- ``chatml`` (Qwen2-Instruct): ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message,
  generation prompt ``<|im_start|>assistant\\n``; eos ``<|im_end|>``, pad ``<|endoftext|>``,
  no bos.
- ``llama3`` (Llama-3-Instruct): ``<|begin_of_text|>`` then
  ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content | trim}<|eot_id|>`` per message;
  eos ``<|eot_id|>``, pad ``<|finetune_right_pad_id|>``. Like the real one, the tokenizer also
  prepends ``<|begin_of_text|>`` when encoding with ``add_special_tokens=True``, so a rendered
  chat must be encoded with ``add_special_tokens=False``.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

CORPUS = Path(__file__).parent / "assets" / "tiny_corpus.txt"
VOCAB_SIZE = 1024  # BPE vocabulary incl. the template's special tokens (not image tokens)
TEMPLATES = ("chatml", "llama3")
ARCH_TEMPLATE = {"qwen2": "chatml", "llama": "llama3"}

_CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]

_CHATML_TEMPLATE = (
    "{%- if default_system and messages and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if default_system and messages and messages[0]['role'] != 'system' %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + default_system + '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


# --------------------------------------------------------------------------- tokenizers


def tiny_tokenizer(
    template: str = "chatml", *, default_system_prompt: str | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (``VOCAB_SIZE`` ids) with the chat template of ``template``.

    default_system_prompt: inserted as the system message when a conversation has none (as
        Qwen2's "You are a helpful assistant."); None: no default.
    Trained once per process and argument set (~0.1 s); every call returns a fresh copy, so
    callers may add tokens or change the padding side freely.
    """
    return copy.deepcopy(_cached_tokenizer(template, default_system_prompt))


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(template: str, default_system_prompt: str | None) -> PreTrainedTokenizerFast:
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template family {template!r}; use one of {TEMPLATES}")
    chatml = template == "chatml"
    specials = _CHATML_SPECIALS if chatml else _LLAMA3_SPECIALS
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,  # ids 0..len-1, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS.read_text(encoding="utf-8").splitlines(), trainer)
    body = _CHATML_TEMPLATE if chatml else _LLAMA3_TEMPLATE
    # the default system prompt is baked into the template, as real tokenizers do
    chat_template = "{%- set default_system = " + json.dumps(default_system_prompt) + " %}" + body
    if chatml:
        tokens = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    else:
        bos = "<|begin_of_text|>"
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, backend.token_to_id(bos))],
        )
        tokens = {"bos_token": bos, "eos_token": "<|eot_id|>", "pad_token": specials[-1]}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=chat_template,
        model_max_length=4096,
        extra_special_tokens=[t for t in specials if t not in tokens.values()],
        **tokens,
    )


# --------------------------------------------------------------------------- language models

_LLM_DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
}


def tiny_llm(
    arch: str = "qwen2", vocab_size: int | None = None, *, seed: int = 0, **overrides: Any
) -> PreTrainedModel:
    """A tiny random ``AutoModelForCausalLM`` of ``arch`` ("qwen2" | "llama"; any model type
    transformers knows works): hidden 64, 2 layers, 4 heads, 2 kv heads, MLP 128, float32.

    vocab_size: None -> the tiny tokenizer of the matching template (``ARCH_TEMPLATE``), whose
        bos/eos/pad ids are then set on the config too.
    overrides:  any config field (e.g. ``tie_word_embeddings=True``).
    Seeded without touching the global RNG: the same arguments give the same weights.
    """
    fields: dict[str, Any] = dict(_LLM_DIMS)
    if vocab_size is None:
        if arch not in ARCH_TEMPLATE:
            raise ValueError(
                f"no tiny tokenizer for arch {arch!r} (known: {sorted(ARCH_TEMPLATE)}); "
                "pass vocab_size=len(tokenizer)"
            )
        tok = _cached_tokenizer(ARCH_TEMPLATE[arch], None)
        vocab_size = len(tok)
        fields |= {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
    config = AutoConfig.for_model(arch, vocab_size=vocab_size, **(fields | overrides))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model.eval()

"""Tiny random models for tests, benchmarks and demos: the one place that builds them.

Everything is built locally from a bundled text sample and seeded random weights; nothing
touches the network, and the same arguments give the same bytes.

    >>> tok = tiny_tokenizer("chatml")                 # byte-level BPE, ~1k vocab, Qwen2-style
    >>> llm = tiny_llm("qwen2", vocab_size=len(tok))   # 2 layers, hidden 64
    >>> radio_dir = write_tiny_radio(tmp / "radio")     # NVIDIA hub format, loads with load_radio
    >>> llm_dir = write_tiny_llm(tmp / "llm", "llama")  # model + tokenizer (Llama-3 template)

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
from safetensors.torch import save_file
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


def write_tiny_llm(
    folder: str | Path,
    arch: str = "qwen2",
    *,
    template: str | None = None,
    seed: int = 0,
    **overrides: Any,
) -> Path:
    """Save a tiny LLM and its tokenizer together into ``folder`` (a local "hub" directory that
    ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained`` read); returns the folder.

    template: the tokenizer's chat template family; default the one matching ``arch``.
    """
    template = template or ARCH_TEMPLATE.get(arch, "chatml")
    tok = tiny_tokenizer(template)
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    model = tiny_llm(arch, len(tok), seed=seed, **(ids | overrides))
    folder = Path(folder)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- RADIO


def write_tiny_radio(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    depth: int = 2,
    heads: int = 4,
    patch_size: int = 16,
    max_resolution: int = 512,
    preferred_resolution: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random RADIOv2.5-style checkpoint in NVIDIA's hub format into ``folder``.

    config.json: the reference code's training ``args`` (``vit_base_patch16_224`` shrunk by
    ``model_kwargs``; two teachers with one cls token each, padded with registers to a multiple
    of 8; a position table for ``max_resolution``) + ``version``, ``patch_size``,
    ``max_resolution``, ``preferred_resolution``. model.safetensors: ``radio_model.*`` keys
    (patch generator, ViT blocks with fused qkv, input conditioner, summary_idxs), float32,
    drawn from a seeded generator. Loads with ``encoder.load_radio(folder)``.
    """
    if hidden_size % heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by heads {heads}")
    if max_resolution % patch_size:
        raise ValueError(
            f"max_resolution {max_resolution} must be a multiple of patch_size {patch_size}"
        )
    teachers = [
        {"name": "clip", "type": "open_clip", "use_summary": True, "feature_distillation": True},
        {"name": "dino_v2", "type": "dino_v2", "use_summary": True, "feature_distillation": True},
    ]
    register_multiple = 8
    num_prefix = len(teachers) + (register_multiple - len(teachers) % register_multiple)
    args = {
        "model": "vit_base_patch16_224",
        "model_kwargs": {"embed_dim": hidden_size, "depth": depth, "num_heads": heads},
        "cpe_max_size": max_resolution,
        "cls_token_per_teacher": True,
        "teachers": teachers,
        "register_multiple": register_multiple,
        "feature_summarizer": "cls_token",
        "dtype": "float32",
    }
    config = {
        "architectures": ["RADIOModel"],
        "args": args,
        "version": "radio_v2.5-b",
        "patch_size": patch_size,
        "max_resolution": max_resolution,
        "preferred_resolution": [preferred_resolution, preferred_resolution],
        "adaptor_names": None,
    }
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std + mean

    c, p, grid = hidden_size, patch_size, max_resolution // patch_size
    vit = "radio_model.model."
    tensors = {
        f"{vit}patch_generator.embedder.weight": randn(c, 3 * p * p, std=(3 * p * p) ** -0.5),
        f"{vit}patch_generator.pos_embed": randn(1, grid * grid, c),
        f"{vit}patch_generator.cls_token.token": randn(num_prefix, c),
        "radio_model.input_conditioner.norm_mean": torch.tensor([0.48, 0.46, 0.41]).view(3, 1, 1),
        "radio_model.input_conditioner.norm_std": torch.tensor([0.27, 0.26, 0.28]).view(3, 1, 1),
        "radio_model.summary_idxs": torch.arange(len(teachers), dtype=torch.int64),
    }
    shapes = {"attn.qkv": (3 * c, c), "attn.proj": (c, c), "mlp.fc1": (4 * c, c)}
    shapes["mlp.fc2"] = (c, 4 * c)
    for i in range(depth):
        block = f"{vit}blocks.{i}."
        for norm in ("norm1", "norm2"):  # non-trivial norms, so a missed one shows
            tensors[f"{block}{norm}.weight"] = randn(c, std=0.1, mean=1.0)
            tensors[f"{block}{norm}.bias"] = randn(c, std=0.1)
        for name, (out, inp) in shapes.items():
            tensors[f"{block}{name}.weight"] = randn(out, inp, std=inp**-0.5)
            tensors[f"{block}{name}.bias"] = randn(out, std=0.02)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        folder / "model.safetensors",
        metadata={"format": "pt"},
    )
    return folder

"""vlm.tiny: tokenizers with real chat-template families, LLMs; and encoder.tiny's RADIO folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import RadioModel

from encoder import load_radio, radio_config_from_args
from encoder.tiny import write_tiny_radio
from vlm.tiny import _cached_tokenizer, tiny_llm, tiny_tokenizer

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is in the image?"},
    {"role": "assistant", "content": " A cat. "},
]


def test_chatml_tokenizer_renders_like_qwen2():
    tok = tiny_tokenizer("chatml")
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert 1000 <= len(tok) <= 2048
    text = tok.apply_chat_template(CHAT[1:], tokenize=False, add_generation_prompt=False)
    assert (
        text
        == "<|im_start|>user\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n A cat. <|im_end|>\n"
    )
    prompt = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    qwen = tiny_tokenizer("chatml", default_system_prompt="You are a helpful assistant.")
    assert qwen.apply_chat_template(CHAT[1:2], tokenize=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    )
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tok.eos_token_id


def test_llama3_tokenizer_renders_like_llama3_instruct():
    tok = tiny_tokenizer("llama3")
    assert (tok.bos_token, tok.eos_token) == ("<|begin_of_text|>", "<|eot_id|>")
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is in the image?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"  # content is trimmed
    )
    assert tok("hello")["input_ids"][0] == tok.bos_token_id  # encoding adds bos, like Llama 3


def test_tokenizer_is_deterministic_and_every_call_is_a_fresh_copy():
    a = tiny_tokenizer("chatml")
    a.add_special_tokens({"extra_special_tokens": ["<new>"]})
    a.padding_side = "left"
    b = tiny_tokenizer("chatml")
    assert "<new>" not in b.get_vocab() and b.padding_side == "right"
    _cached_tokenizer.cache_clear()  # retrained from scratch: the same vocabulary and merges
    assert tiny_tokenizer("chatml").backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    text = "Read the text in the image: total 12.50, 2024-03-18 ✓"
    assert b.decode(b.encode(text, add_special_tokens=False)) == text  # byte-level: lossless
    with pytest.raises(ValueError, match="unknown chat template family"):
        tiny_tokenizer("vicuna")


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_tiny_llm_is_small_seeded_and_runs(arch):
    model = tiny_llm(arch)
    tok = tiny_tokenizer("chatml" if arch == "qwen2" else "llama3")
    assert model.config.vocab_size == len(tok) and model.config.pad_token_id == tok.pad_token_id
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (64, 2)
    assert model.config.num_key_value_heads == 2 and model.config.intermediate_size == 128
    state = torch.get_rng_state()
    again = tiny_llm(arch)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    for p, q in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    other = tiny_llm(arch, vocab_size=300, seed=1, tie_word_embeddings=True)
    assert other.config.vocab_size == 300 and other.config.tie_word_embeddings
    ids = torch.tensor([tok.encode("The answer is 42.", add_special_tokens=False)])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


def test_write_tiny_radio_has_the_hub_format_and_loads_without_missing_keys(tmp_path):
    folder = write_tiny_radio(tmp_path / "radio", hidden_size=32, depth=3, heads=2)
    config = json.loads((folder / "config.json").read_text())
    args = config["args"]
    assert args["model"] == "vit_base_patch16_224" and args["cpe_max_size"] == 512
    assert args["model_kwargs"] == {"embed_dim": 32, "depth": 3, "num_heads": 2}
    with safe_open(folder / "model.safetensors", "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert all(k.startswith("radio_model.") for k in tensors)
    assert tensors["radio_model.model.patch_generator.pos_embed"].shape == (1, 32 * 32, 32)
    assert tensors["radio_model.model.patch_generator.cls_token.token"].shape == (8, 32)
    # the ViT weights fit transformers' RadioModel exactly
    radio_config = radio_config_from_args(
        args,
        summary_idxs=tensors["radio_model.summary_idxs"],
        norm_mean=tensors["radio_model.input_conditioner.norm_mean"],
        norm_std=tensors["radio_model.input_conditioner.norm_std"],
        patch_size=config["patch_size"],
    )
    _, info = RadioModel.from_pretrained(folder, config=radio_config, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))

    encoder = load_radio(write_tiny_radio(tmp_path / "default"))
    assert (encoder.patch_size, encoder.hidden_size, encoder.max_resolution) == (16, 64, 512)
    assert encoder.image_processor.resolution == 64
    out = encoder(torch.rand(2, 3, 64, 96))
    assert out.grid.shape == (2, 4, 6, 64) and out.summary.shape == (2, 2 * 64)
    assert torch.isfinite(out.grid).all() and out.grid.std() > 0.1
    again = load_radio(write_tiny_radio(tmp_path / "again"))
    assert torch.equal(again(torch.ones(1, 3, 32, 32)).grid, encoder(torch.ones(1, 3, 32, 32)).grid)

"""--resume puts back every weight a checkpoint holds, RADIO's converted keys included, and
refuses a checkpoint whose keys do not all fit (vlm.training.resume)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

import vlm
from encoder.tiny import write_tiny_radio
from vlm.tiny import tiny_llm, tiny_tokenizer
from vlm.training.resume import ResumeError, load_model_weights


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    radio = write_tiny_radio(tmp_path_factory.mktemp("radio"), preferred_resolution=64)
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)
    return vlm.build_vlm(radio, llm, tokenizer=tokenizer, num_tokens=4)[0]


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_module_comes_back_from_a_checkpoint(tmp_path, model):
    model.save_pretrained(tmp_path)
    saved = weights(model)
    assert any(
        k.startswith("vision_tower.model.radio_model.")
        for k in load_file(tmp_path / "model.safetensors")
    )
    with torch.no_grad():  # what training did after the save, in every module
        for p in model.parameters():
            p.add_(1.0)
    load_model_weights(model, tmp_path)
    now = weights(model)
    assert set(now) == set(saved)
    changed = [k for k in saved if not torch.equal(now[k], saved[k])]
    assert changed == []
    assert any(k.startswith("vision_tower.") for k in saved)  # the keys the Trainer dropped


def test_a_checkpoint_missing_keys_is_refused_by_name(tmp_path, model):
    model.save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    dropped = next(k for k in tensors if "radio_model.model.blocks.0.attn.qkv.weight" in k)
    del tensors[dropped]
    tensors["projector.stray.weight"] = torch.zeros(2)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ResumeError) as err:
        load_model_weights(model, tmp_path)
    message = str(err.value)
    assert "missing_keys" in message and "unexpected_keys" in message
    assert "projector.stray.weight" in message
    assert "resume from a checkpoint of this run" in message

"""vlm.training.composite without a launch: the assembled stage-1 checkpoint loads into exactly
the model vlm.build_vlm builds (the embeddings grown for the image tokens included), written in
shards; the DeepSpeed-only parts (save_in_dtype) are tested in test_deepspeed.py."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import tiny_recipe

from vlm.tiny import ARCH_TEMPLATE, tiny_llm, tiny_tokenizer
from vlm.training.checkpoints import is_complete
from vlm.training.composite import INDEX, ShardWriter, assemble, weight_files
from vlm.training.loading import build_model, load_stage


def llm_folder(tmp_path, arch, tie):
    """A tiny LLM saved like a hub model, its vocabulary exactly the tokenizer's, so the
    image tokens make build_vlm grow (resize) its embeddings."""
    tokenizer = tiny_tokenizer(ARCH_TEMPLATE[arch])
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    llm = tiny_llm(arch, vocab_size=len(tokenizer), tie_word_embeddings=tie, **ids)
    folder = tmp_path / f"llm-{arch}-{tie}"
    llm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    ("arch", "tie", "from_folder"),
    [("qwen2", False, False), ("qwen2", False, True), ("llama", True, True)],
)
def test_assembled_checkpoint_loads_as_the_built_model(tmp_path, arch, tie, from_folder):
    llm = llm_folder(tmp_path, arch, tie) if from_folder else f"tiny:{arch}"
    spec = tiny_recipe("stage1_align", tmp_path / "run", f"model.llm={llm}").model
    expected, _ = build_model(spec, seed=3)
    if from_folder:  # the image tokens really grew the vocabulary
        assert (
            expected.get_input_embeddings().num_embeddings
            > len(tiny_tokenizer(ARCH_TEMPLATE[arch])) - 1
        )

    folder = assemble(spec, seed=3, folder=tmp_path / "base", dtype=None)
    assert is_complete(folder) and not (tmp_path / "base.partial").exists()
    model, processor = load_stage(folder, dtype=torch.float32)
    want, got = expected.state_dict(), model.state_dict()
    assert set(got) == set(want)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    assert processor.image_token_id == expected.config.image_token_id


def test_shard_writer_splits_and_indexes(tmp_path):
    writer = ShardWriter(tmp_path, max_bytes=64)
    tensors = {f"t{i}": torch.full((8,), float(i)) for i in range(5)}  # 32 bytes each
    for key, tensor in tensors.items():
        writer.add(key, tensor)
    with pytest.raises(ValueError, match="written twice"):
        writer.add("t0", tensors["t0"])
    writer.close()
    files = weight_files(tmp_path)
    assert len(files) == 3 and files[0].name == "model-00001-of-00003.safetensors"
    index = json.loads((tmp_path / INDEX).read_text())
    assert index["metadata"]["total_size"] == 5 * 32 and set(index["weight_map"]) == set(tensors)
    read = {k: v for path in files for k, v in load_file(path).items()}
    assert all(torch.equal(read[k], tensors[k]) for k in tensors)


def test_shard_writer_writes_what_safetensors_reads(tmp_path):
    tensors = {
        "bf16": torch.randn(3, 5).bfloat16(),
        "f16": torch.randn(7).half(),
        "i64": torch.arange(6).view(2, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "strided": torch.randn(4, 6).t(),  # not contiguous
    }
    writer = ShardWriter(tmp_path)
    for key, tensor in tensors.items():
        writer.add(key, tensor)
    writer.close()
    (path,) = weight_files(tmp_path)
    read = load_file(path)
    assert set(read) == set(tensors) and not list(tmp_path.glob(".part*"))
    for key, tensor in tensors.items():
        assert read[key].dtype == tensor.dtype and torch.equal(read[key], tensor), key

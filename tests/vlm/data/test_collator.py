"""VLMCollator: padding on both sides and packing give the logits of the samples run alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vlm
from encoder.tiny import write_tiny_radio
from vlm.data import DataConfig, SampleEncoder, SkipReport, VLMCollator, build_dataset, pack_rows
from vlm.tiny import tiny_llm, tiny_tokenizer


@pytest.fixture(scope="module")
def model_and_processor(tmp_path_factory):
    radio = write_tiny_radio(tmp_path_factory.mktemp("radio"), preferred_resolution=64)
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)
    model, processor = vlm.build_vlm(radio, llm, tokenizer=tokenizer, num_tokens=4)
    return model.eval(), processor


@pytest.fixture(scope="module")
def features(model_and_processor):
    """Five samples of different lengths: four synthdoc documents and one 48x64 photo."""
    _, processor = model_and_processor
    config = DataConfig(kind="synthdoc", num_samples=4, synthdoc={"image_size": 64})
    samples = [build_dataset(config, processor)[i] for i in range(4)]
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    raw = {
        "id": "photo",
        "images": [photo],
        "messages": [
            {"role": "user", "content": "<image>\nWhat is in this picture, in a few words?"},
            {"role": "assistant", "content": "Colourful noise."},
        ],
    }
    samples.insert(2, SampleEncoder(processor, SkipReport())(raw))
    assert len({len(f["input_ids"]) for f in samples}) > 1
    return samples


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def alone(model, collator, features) -> list[torch.Tensor]:
    return [logits(model, collator([f]))[0] for f in features]


def test_padding_on_either_side(model_and_processor, features):
    model, processor = model_and_processor
    pad = processor.tokenizer.pad_token_id
    single = alone(model, VLMCollator(pad), features)
    for side in ("right", "left"):
        collator = VLMCollator(pad, padding_side=side, pad_to_multiple_of=8)
        batch = collator(features)
        length = batch["input_ids"].shape[1]
        assert length % 8 == 0 and length >= max(len(f["input_ids"]) for f in features)
        assert isinstance(batch["pixel_values"], list)  # 64x64 and 48x64: a list, in order
        assert (
            [tuple(p.shape[-2:]) for p in batch["pixel_values"]]
            == [tuple(s) for s in batch["image_sizes"].tolist()]
            == [(64, 64)] * 2 + [(48, 64)] + [(64, 64)] * 2
        )
        out = logits(model, batch)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            real = slice(length - n, length) if side == "left" else slice(0, n)
            assert torch.equal(batch["input_ids"][b, real], f["input_ids"])
            assert torch.equal(batch["labels"][b, real], f["labels"])
            assert int(batch["attention_mask"][b].sum()) == n
            assert (batch["input_ids"][b][batch["attention_mask"][b] == 0] == pad).all()
            assert (batch["labels"][b][batch["attention_mask"][b] == 0] == -100).all()
            torch.testing.assert_close(out[b, real], single[b], atol=2e-5, rtol=1e-4)
        assert ("position_ids" in batch) == (side == "left")


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_gives_the_logits_of_its_samples_alone(
    model_and_processor, features, attention
):
    model, processor = model_and_processor
    model.language_model.set_attn_implementation(attention)
    pad = processor.tokenizer.pad_token_id
    try:
        single = alone(model, VLMCollator(pad), features)
        lengths = [len(f["input_ids"]) for f in features]
        capacity = lengths[0] + lengths[1] + 1  # rows: [0, 1], [2, 3]?, ...: several rows + pads
        collator = VLMCollator(pad, packing=True, max_length=capacity)
        batch = collator(features)
        rows = pack_rows(lengths, capacity)
        assert len(rows) == batch["input_ids"].shape[0] > 1
        assert "attention_mask" not in batch and batch["use_cache"] is False
        out = logits(model, batch)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                n = lengths[i]
                span = slice(start, start + n)
                assert batch["position_ids"][r, span].tolist() == list(range(n))
                assert batch["labels"][r, start] == -100
                assert torch.equal(
                    batch["labels"][r, start + 1 : start + n], features[i]["labels"][1:]
                )
                torch.testing.assert_close(out[r, span], single[i], atol=2e-5, rtol=1e-4)
                start += n
        # the same samples without isolation would see each other: the check has teeth
        leaky = dict(
            batch,
            position_ids=torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"]),
        )
        second = rows[0][1]
        mixed = logits(model, leaky)[0, lengths[rows[0][0]] : lengths[rows[0][0]] + lengths[second]]
        assert not torch.allclose(mixed, single[second], atol=1e-3)
    finally:
        model.language_model.set_attn_implementation("sdpa")


def test_packing_keeps_order_and_never_cuts():
    assert pack_rows([3, 3, 3, 10, 1], 6) == [[0, 1], [2], [3], [4]]
    assert pack_rows([2, 2, 2], 100) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="packing=True needs max_length"):
        VLMCollator(0, packing=True)
    with pytest.raises(ValueError, match="pad_token_id must be an int"):
        VLMCollator(None)


def test_text_only_batches_have_no_pixels():
    feature = {
        "input_ids": torch.tensor([5, 6, 7]),
        "attention_mask": torch.ones(3, dtype=torch.long),
        "labels": torch.tensor([-100, 6, 7]),
        "pixel_values": [],
        "image_sizes": torch.zeros(0, 2, dtype=torch.long),
    }
    batch = VLMCollator(0)([feature, feature])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}

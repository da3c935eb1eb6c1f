"""VisionLanguageModel + VLMProcessor end to end on tiny random parts (vlm.tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import vlm
from encoder.tiny import tiny_tower_checkpoint, write_tiny_radio
from vlm.tiny import tiny_llm, tiny_tokenizer


@pytest.fixture(scope="module")
def radio_dir(tmp_path_factory):
    return write_tiny_radio(tmp_path_factory.mktemp("radio"), preferred_resolution=64)


def image(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def chat(question: str, answer: str | None = None, images: int = 1) -> list[dict]:
    content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def build(encoder, compressor="tome", num_tokens=4, arch="qwen2", **kwargs):
    template = {"qwen2": "chatml", "llama": "llama3"}[arch]
    tokenizer = tiny_tokenizer(template)
    llm = tiny_llm(arch, vocab_size=len(tokenizer) + 3)  # room for the image tokens
    return vlm.build_vlm(
        encoder, llm, tokenizer=tokenizer, compressor=compressor, num_tokens=num_tokens, **kwargs
    )


COMPRESSORS = [
    ("tome", {"num_tokens": 4}),
    ("avgpool", {"num_tokens": 4}),
    ("unshuffle", {"num_tokens": None, "compressor_options": {"scale": 2}}),
    ("none", {"num_tokens": None}),
]


@pytest.mark.parametrize(("method", "options"), COMPRESSORS, ids=[c[0] for c in COMPRESSORS])
def test_save_and_load_give_identical_logits(tmp_path, radio_dir, method, options):
    model, processor = build(radio_dir, method, **options)
    batch = processor(conversations=chat("What is written here?", "A cat."), images=[image(64, 48)])
    expected_tokens = {"tome": 4, "avgpool": 4, "unshuffle": 2 * 2, "none": 4 * 3}[method]
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == expected_tokens
    with torch.no_grad():
        before = model(**batch)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    again = loaded_processor(
        conversations=chat("What is written here?", "A cat."), images=[image(64, 48)]
    )
    assert torch.equal(again["input_ids"], batch["input_ids"])
    assert torch.equal(again["labels"], batch["labels"])
    with torch.no_grad():
        after = loaded(**again)
    assert isinstance(loaded, vlm.VisionLanguageModel)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=0)
    torch.testing.assert_close(after.loss, before.loss, rtol=0, atol=0)


def test_loss_counts_only_the_assistant_reply(radio_dir):
    model, processor = build(radio_dir)
    batch = processor(conversations=chat("Read it.", "Hello there."), images=[image(64, 64)])
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[0, :-1], batch["labels"][0, 1:]
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
    assert 0 < int(keep.sum()) < labels.numel() // 2


def test_generation_with_and_without_cache_and_batched_left_padding(radio_dir):
    model, processor = build(radio_dir)
    assert processor.tokenizer.padding_side == "right"  # generation prompts pad left anyway
    prompts = [chat("Short?"), chat("A much longer question about the picture here?")]
    images = [[image(64, 64, seed=1)], [image(48, 64, seed=2)]]
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 0}
    alone = []
    for prompt, imgs in zip(prompts, images, strict=True):
        inputs = processor(conversations=prompt, images=imgs, add_generation_prompt=True)
        cached = model.generate(**inputs, **settings)
        uncached = model.generate(**inputs, use_cache=False, **settings)
        assert torch.equal(cached, uncached)
        alone.append(cached[0, inputs["input_ids"].shape[1] :])
    batch = processor(conversations=prompts, images=images, add_generation_prompt=True)
    assert isinstance(batch["pixel_values"], list)  # two sizes: the packed path
    together = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
    for row, single in zip(together, alone, strict=True):
        assert torch.equal(row, single)


@pytest.mark.parametrize("family", ["siglip", "clip", "dinov2"])
def test_the_same_code_runs_on_other_towers(tmp_path, family):
    tower = tiny_tower_checkpoint(tmp_path / family, family)
    model, processor = build(tower, "tome", num_tokens=3, arch="llama")
    batch = processor(conversations=chat("Colour?", "Red."), images=[image(32, 32)])
    out = model(**batch)
    out.loss.backward()
    assert model.projector.linear_1.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path / "vlm")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, out.logits.detach(), rtol=0, atol=0)


def test_gradient_checkpointing_gives_the_same_gradients(radio_dir):
    model, processor = build(radio_dir)
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(64, 64)])
    model.train()

    def grads():
        model.zero_grad()
        model(**batch).loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = grads()
    model.activation_checkpointing_enable()
    assert model.language_model.model.layers[0].gradient_checkpointing
    assert model.vision_tower.model.encoder.layer[0].gradient_checkpointing
    for a, b in zip(plain, grads(), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_inputs_fail_with_clear_messages(radio_dir):
    model, processor = build(radio_dir, "none")
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(64, 64)])
    with pytest.raises(ValueError, match=r"hold 16 image placeholder tokens but no pixel_values"):
        model(input_ids=batch["input_ids"])
    with pytest.raises(ValueError, match=r"16 image placeholder tokens but the 1 images give 4"):
        model(input_ids=batch["input_ids"], pixel_values=torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model(input_ids=batch["input_ids"], pixel_values=torch.rand(1, 3, 60, 64))
    with pytest.raises(ValueError, match="empty"):
        processor(conversations=[], images=[])
    with pytest.raises(ValueError, match="unshuffle' in a VLM needs scale"):
        build(radio_dir, "unshuffle", num_tokens=4)


def test_the_model_checks_pixel_range_nan_image_sizes_and_placeholders(radio_dir):
    model, processor = build(radio_dir, "tome", num_tokens=4)
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(64, 48)])
    pixels = batch["pixel_values"]
    assert batch["image_sizes"].tolist() == [[64, 48]] and pixels.shape == (1, 3, 64, 48)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
        for edge in (torch.zeros_like(pixels), torch.ones_like(pixels)):  # [0, 1] inclusive
            assert len(model.get_image_features(edge)) == 1
    scaled = pixels * 255  # a 0-255 image
    lo, hi = float(scaled.min()), float(scaled.max())
    assert hi > 200
    with pytest.raises(ValueError, match=rf"range over \[{lo:.4g}, {hi:.4g}\], outside \[0, 1\]"):
        model(**{**batch, "pixel_values": scaled})
    with pytest.raises(ValueError, match="VLMProcessor gives them"):
        model.get_image_features([(pixels[0] - 0.5) / 0.25])  # mean/std normalised: negative
    broken = pixels.clone()
    broken[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="pixel_values hold 1 NaN or infinite values"):
        model(**{**batch, "pixel_values": broken})
    for sizes in ([[48, 64]], [[64, 48], [64, 48]]):
        with pytest.raises(ValueError, match=r"image_sizes .* disagree .* \[\[64, 48\]\]"):
            model(**{**batch, "image_sizes": torch.tensor(sizes)})
    text_only = processor(conversations=chat("Read it.", "Hi.", images=0))
    with pytest.raises(ValueError, match="hold 0 image placeholder tokens but the 1 images give 4"):
        model(input_ids=text_only["input_ids"], pixel_values=pixels)


def test_build_caps_the_tokenizers_length_at_the_llms_context(tmp_path, radio_dir):
    tokenizer = tiny_tokenizer("chatml")
    assert tokenizer.model_max_length == 4096
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3, max_position_embeddings=256)
    _, processor = vlm.build_vlm(radio_dir, llm, tokenizer=tokenizer, num_tokens=4)
    assert processor.context_length == 256
    processor.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).context_length == 256
    roomy = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3, max_position_embeddings=8192)
    _, processor = vlm.build_vlm(radio_dir, roomy, tokenizer=tiny_tokenizer(), num_tokens=4)
    assert processor.context_length == 4096  # the tokenizer's own, smaller limit stays


def test_an_elongated_image_still_costs_exactly_k_tokens(radio_dir):
    model, processor = build(radio_dir, "tome", num_tokens=16)
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(20, 1000)])
    h, w = batch["image_sizes"][0].tolist()
    assert (h // 16) * (w // 16) >= 16
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 16
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_beam_search_gives_each_beam_its_own_sample_images(radio_dir):
    """[a, b] with 2 beams must reach the encoder as [a, b, a, b] (not [a, a, b, b])."""
    model, processor = build(radio_dir)
    a, b = image(64, 64, seed=3), image(64, 64, seed=4)
    inputs = processor(
        conversations=chat("Two?", images=2), images=[a, b], add_generation_prompt=True
    )
    seen = []
    original = model.get_image_features

    def spy(pixel_values):
        seen.append(pixel_values.clone())
        return original(pixel_values)

    model.get_image_features = spy
    model.generate(**inputs, num_beams=2, max_new_tokens=2, do_sample=False)
    pixels = inputs["pixel_values"]
    assert torch.equal(seen[0], torch.cat([pixels, pixels]))


def test_build_keeps_the_llms_attention_and_dtype(radio_dir):
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)
    llm.config._attn_implementation = "eager"
    model, processor = vlm.build_vlm(radio_dir, llm, tokenizer=tokenizer, num_tokens=4)
    assert model.language_model.config._attn_implementation == "eager"
    model, processor = vlm.build_vlm(
        radio_dir,
        tiny_llm("qwen2", vocab_size=len(tokenizer) + 3),
        tokenizer=tiny_tokenizer(),
        num_tokens=4,
        dtype=torch.bfloat16,
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(64, 64)])
    with torch.no_grad():
        assert model(**batch).logits.dtype == torch.bfloat16


def test_from_pretrained_attention_reaches_the_vision_tower(tmp_path, radio_dir):
    model, processor = build(radio_dir)
    model.save_pretrained(tmp_path)
    batch = processor(conversations=chat("Read it.", "Hi."), images=[image(64, 48)])
    logits = {}
    for implementation in ("eager", "sdpa"):
        loaded = AutoModelForImageTextToText.from_pretrained(
            tmp_path, attn_implementation=implementation
        ).eval()
        tower = loaded.vision_tower.model.config._attn_implementation
        assert (tower, loaded.language_model.config._attn_implementation) == (implementation,) * 2
        with torch.no_grad():
            logits[implementation] = loaded(**batch).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=0, atol=1e-5)


def test_build_vlm_attn_implementation_reaches_both_parts(radio_dir):
    model, _ = build(radio_dir, attn_implementation="eager")
    assert model.language_model.config._attn_implementation == "eager"
    assert model.vision_tower.model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="no_such_kernel"):
        build(radio_dir, attn_implementation="no_such_kernel")


def test_an_attention_the_tower_cannot_run_is_logged_and_the_tower_keeps_its_own(tmp_path, caplog):
    from encoder import load_tower
    from vlm.modeling import set_tower_attention

    tower = load_tower(tiny_tower_checkpoint(tmp_path / "siglip2", "siglip2"))
    before = tower.model.config._attn_implementation
    with caplog.at_level("WARNING", logger="vlm.modeling"):
        set_tower_attention(tower, "flash_attention_2")
    assert tower.model.config._attn_implementation == before
    assert "vision tower keeps its attention implementation; 'flash_attention_2'" in caplog.text
    set_tower_attention(tower, "eager")
    assert tower.model.config._attn_implementation == "eager"

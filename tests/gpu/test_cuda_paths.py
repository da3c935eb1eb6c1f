"""The paths a GPU takes that CPU runs never prove: bf16 training with sdpa and flash attention,
RADIO's packed mixed-size sequences under flash attention, generation with a KV cache.

Each check runs on CUDA (marked ``cuda``: ``pytest -m cuda``, what benchmarks/gpu_check runs)
and, where the kernel exists there, on the CPU too, so the test code itself is exercised in
every CI run. Tolerances are relative Frobenius errors ‖a - b‖ / ‖b‖: bf16 operands land
between 1e-3 and 1e-2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.utils import is_flash_attn_2_available

import vlm
from encoder import build_encoder
from encoder.tiny import write_tiny_radio
from vlm.tiny import tiny_llm, tiny_tokenizer

CUDA = pytest.mark.cuda
# (device, attention); flash attention has no CPU kernel, so it appears on CUDA only
SETTINGS = [
    pytest.param("cpu", "sdpa", id="cpu-sdpa"),
    pytest.param("cuda", "sdpa", id="cuda-sdpa", marks=CUDA),
    pytest.param("cuda", "flash_attention_2", id="cuda-flash", marks=CUDA),
]
BF16_TOL = 3e-2  # bf16 against float32, through a few blocks of random weights
SIZES = [(64, 48), (48, 80), (96, 64), (64, 64)]  # (H, W): three grids plus a repeat


@pytest.fixture(scope="module")
def radio_dir(tmp_path_factory):
    return write_tiny_radio(tmp_path_factory.mktemp("radio"), preferred_resolution=64)


def skip_unless_runnable(attention: str) -> None:
    if attention == "flash_attention_2" and not is_flash_attn_2_available():
        pytest.skip(
            "flash_attn is not installed (the lent GPU image has none, and PyPI has no "
            "binary wheel of it to carry)"
        )


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm())


def image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels(height: int, width: int, seed: int) -> torch.Tensor:
    """[3, H, W] in [0, 1]."""
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def build(radio_dir, **kwargs):
    tokenizer = tiny_tokenizer("chatml")
    llm = tiny_llm("qwen2", vocab_size=len(tokenizer) + 3)  # room for the image tokens
    return vlm.build_vlm(radio_dir, llm, tokenizer=tokenizer, num_tokens=4, **kwargs)


def to_device(batch, device: str) -> dict:
    """Tensors and lists of tensors (mixed-size pixel_values) onto ``device``."""
    moved = {}
    for key, value in batch.items():
        if isinstance(value, list):
            moved[key] = [v.to(device) for v in value]
        else:
            moved[key] = value.to(device) if isinstance(value, torch.Tensor) else value
    return moved


def training_batch(processor) -> dict:
    """Two samples whose images differ in size: the packed path inside a training step."""
    conversations = [
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": answer},
        ]
        for question, answer in (("What is this?", "A cat."), ("Read it.", "Hello there."))
    ]
    images = [[image(64, 48, seed=1)], [image(48, 80, seed=2)]]
    return processor(conversations=conversations, images=images)


@pytest.mark.parametrize(("device", "attention"), SETTINGS)
def test_bf16_forward_backward_matches_float32(radio_dir, device, attention):
    skip_unless_runnable(attention)
    reference, processor = build(radio_dir, attn_implementation="eager")
    batch = training_batch(processor)
    assert isinstance(batch["pixel_values"], list)  # two sizes: packed
    with torch.no_grad():
        expected = reference(**batch).logits

    model, _ = build(radio_dir, dtype=torch.bfloat16, attn_implementation=attention)
    model.to(device).train()
    assert model.language_model.config._attn_implementation == attention
    assert model.vision_tower.model.config._attn_implementation == attention
    out = model(**to_device(batch, device))
    out.loss.backward()

    assert out.logits.dtype == torch.bfloat16
    assert rel_error(out.logits, expected) < BF16_TOL
    for part in (model.vision_tower, model.projector, model.language_model):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.float().abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(("device", "attention"), SETTINGS)
def test_packed_mixed_sizes_match_one_image_at_a_time(radio_dir, device, attention):
    """VisionEncoder.encode packs images of different sizes into one sequence (flash
    attention: cu_seqlens); each must equal the image run alone, and float32 on the CPU."""
    skip_unless_runnable(attention)
    images = [pixels(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    reference = build_encoder(radio_dir).eval()
    encoder = build_encoder(radio_dir, dtype=torch.bfloat16).to(device).eval()
    encoder.set_attn_implementation(attention)
    on_device = [x.to(device, torch.bfloat16) for x in images]
    with torch.no_grad():
        packed = encoder.encode(on_device)
        alone = [encoder(x.unsqueeze(0)) for x in on_device]
        exact = [reference(x.unsqueeze(0)) for x in images]
    for p, a, e in zip(packed, alone, exact, strict=True):
        assert p.grid.shape == a.grid.shape == e.grid.shape
        assert rel_error(p.grid, a.grid) < 1e-2
        assert rel_error(p.summary, a.summary) < 1e-2
        assert rel_error(p.grid, e.grid) < BF16_TOL


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_generate_with_kv_cache_equals_without(radio_dir, device):
    """Greedy decoding, float32: in bf16 a near-tie between two logits may rightly flip."""
    model, processor = build(radio_dir, attn_implementation="sdpa")
    model.to(device)
    prompts = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        for text in ("Short?", "A much longer question about the picture here?")
    ]
    batch = processor(
        conversations=prompts,
        images=[[image(64, 64, seed=3)], [image(48, 64, seed=4)]],
        add_generation_prompt=True,
    )
    batch = to_device(batch, device)
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    cached = model.generate(**batch, **settings)
    uncached = model.generate(**batch, use_cache=False, **settings)
    assert cached.shape[1] > batch["input_ids"].shape[1]
    assert torch.equal(cached, uncached)

"""One training step (forward + loss + backward, no optimizer) of a random RADIO + a random
Qwen2-architecture LLM in bf16, with ToMe and with ``compressor: none``, and its MFU.

Model FLOPs per step (a count over the matmuls, not the 6·params·tokens shorthand):

    6 · W · B · T  +  12 · L · d · B · T²      for the LLM, the vision tower and the projector

W: the weights of the part's nn.Linear layers (the tied LM head counted once, embeddings
and norms not: they do no matmul); T: tokens per sample that part sees (the LLM: visual +
text; the tower: patches + cls/register tokens; the projector: visual tokens); L, d: its
attention layers and width (query heads x head dim), the attention term counted in full
even under the LLM's causal mask (PaLM's convention). 6 = 2 (multiply-add) x 3 (forward,
input grads, weight grads). The merge itself is left out (under 0.01 % at these sizes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import vlm
from encoder import RadioEncoder, build_encoder
from encoder.tiny import write_tiny_radio
from vlm.tiny import tiny_llm, tiny_tokenizer

from .timing import median_ms

FLOPS_FORMULA = (
    "FLOPs/step = sum over LLM, vision tower, projector of "
    "6*W*B*T + 12*L*d*B*T^2 (W: nn.Linear weights, T: tokens per sample, "
    "L: attention layers, d: heads*head_dim; causal mask not halved); "
    "MFU = FLOPs/step / step time / bf16 peak"
)


@dataclass(frozen=True)
class StepSizes:
    vit: dict  # RadioConfig fields: hidden_size, num_hidden_layers, num_attention_heads, ...
    image: int  # square images of this many pixels a side
    num_tokens: int  # ToMe's K
    llm: dict  # tiny_llm overrides (a Qwen2 config)
    vocab: int
    batch: int
    text_tokens: int
    warmup: int
    repeats: int


def radio_encoder(vit: dict, folder: Path, device: str) -> RadioEncoder:
    """A random RADIO with ``vit``'s dims, built on ``device``: the tiny checkpoint's config
    (prefix tokens, input conditioner) with the ViT resized; no multi-GB file is written."""
    config = build_encoder(write_tiny_radio(folder)).get_config()
    config["radio_config"].update(vit)
    config["max_resolution"] = config["radio_config"]["max_img_size"]  # as a checkpoint pairs them
    with torch.device(device):  # initialise on the GPU: a ViT-H on the CPU takes seconds
        return RadioEncoder.from_config(config)


def build_model(sizes: StepSizes, compressor: str, folder: Path, device: str, attention: str):
    """The VLM in bf16 on ``device``, seeded: every compressor gets the same weights."""
    with torch.device(device):
        llm = tiny_llm("qwen2", vocab_size=sizes.vocab, **sizes.llm)
    model, _ = vlm.build_vlm(
        radio_encoder(sizes.vit, folder, device),
        llm,
        tokenizer=tiny_tokenizer("chatml"),
        compressor=compressor,
        num_tokens=sizes.num_tokens if compressor == "tome" else None,
        dtype=torch.bfloat16,
        attn_implementation=attention,
    )
    return model.to(device).train()


def make_batch(model, sizes: StepSizes, device: str) -> dict:
    """input_ids/labels [B, 4 + visual + text - 4], pixel_values [B, 3, S, S] in [0, 1]."""
    gen = torch.Generator().manual_seed(0)
    visual = model.num_image_tokens(sizes.image, sizes.image)
    image_token = model.config.image_token_id
    b = sizes.batch
    words = torch.randint(10, 1000, (b, sizes.text_tokens), generator=gen)
    ids = torch.cat([words[:, :4], torch.full((b, visual), image_token), words[:, 4:]], 1)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones_like(ids).to(device),
        "labels": ids.masked_fill(ids == image_token, -100).to(device),
        "pixel_values": torch.rand(b, 3, sizes.image, sizes.image, generator=gen).to(device),
    }


def linear_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def part_flops(module: nn.Module, batch: int, tokens: int, layers: int, width: int) -> float:
    return 6 * linear_weights(module) * batch * tokens + 12 * layers * width * batch * tokens**2


def model_flops(model, sizes: StepSizes) -> dict[str, float]:
    """FLOPs per step by part (module docstring): {"llm", "vision", "projector", "total"}."""
    text, tower = model.language_model.config, model.vision_tower.config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    visual = model.num_image_tokens(sizes.image, sizes.image)
    patches = (sizes.image // tower.patch_size) ** 2
    b = sizes.batch
    flops = {
        "llm": part_flops(
            model.language_model,
            b,
            visual + sizes.text_tokens,
            text.num_hidden_layers,
            text.num_attention_heads * head_dim,
        ),
        "vision": part_flops(
            model.vision_tower,
            b,
            patches + tower.num_summary_tokens,
            tower.num_hidden_layers,
            tower.hidden_size,
        ),
        "projector": 6 * linear_weights(model.projector) * b * visual,
    }
    flops["total"] = sum(flops.values())
    return flops


def train_step(model, batch: dict) -> None:
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()


def measure_step(
    sizes: StepSizes, compressor: str, folder: Path, device: str, attention: str = "sdpa"
) -> dict:
    """Median step time, tokens/s, peak memory and FLOPs of one compressor's VLM."""
    if device == "cuda":
        torch.cuda.empty_cache()  # the previous compressor's model is gone: start clean
    model = build_model(sizes, compressor, folder, device, attention)
    batch = make_batch(model, sizes, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = median_ms(lambda: train_step(model, batch), sizes.repeats, sizes.warmup, device)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    flops = model_flops(model, sizes)
    visual = model.num_image_tokens(sizes.image, sizes.image)
    llm_tokens = sizes.batch * (visual + sizes.text_tokens)
    result = {
        "compressor": compressor,
        "attention": attention,
        "visual_tokens": visual,
        "llm_tokens_per_step": llm_tokens,
        "params_llm": sum(p.numel() for p in model.language_model.parameters()),
        "params_vision": sum(p.numel() for p in model.vision_tower.parameters()),
        "step_ms": ms,
        "images_per_s": sizes.batch / (ms / 1e3),
        "llm_tokens_per_s": llm_tokens / (ms / 1e3),
        "peak_memory_gib": peak_gib,
        "flops": flops,
        "tflops_per_s": flops["total"] / (ms / 1e3) / 1e12,
    }
    return result

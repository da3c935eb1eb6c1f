"""Training-step time of VisionLanguageModel vs transformers' Llava, measured in one run.

Both get the same CLIP-architecture vision tower (random weights, penultimate-layer features
without the cls token), the same Qwen2-architecture LLM and the same number of visual tokens
(our compressor ``none``); then our model again with ToMe at K = N/9 visual tokens, to show
how much of the step the LLM side costs. One step = forward + loss + backward.

    python benchmarks/vlm_step.py [--batch 2] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: put the project root first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import vlm
from vlm.tiny import tiny_tokenizer


def configs(quick: bool) -> tuple[CLIPVisionConfig, Qwen2Config]:
    scale = 2 if quick else 1
    vision = CLIPVisionConfig(
        hidden_size=384 // scale,
        intermediate_size=1536 // scale,
        num_hidden_layers=6,
        num_attention_heads=6,
        image_size=336 // scale,
        patch_size=14,
    )
    text = Qwen2Config(
        hidden_size=512 // scale,
        intermediate_size=1408 // scale,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=2048,
    )
    return vision, text


def step_seconds(runs: list[tuple[torch.nn.Module, dict]], repeats: int) -> list[float]:
    """Median step time of each (model, batch), the models taking turns every repeat so
    that machine noise hits them alike; three warm-up steps each (the first CPU steps pay
    for kernel selection and allocator growth)."""

    def step(model, batch) -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        return time.perf_counter() - start

    for model, batch in runs:
        model.train()
        for _ in range(3):
            step(model, batch)
    times = [[step(m, b) for m, b in runs] for _ in range(repeats)]
    return [statistics.median(column) for column in zip(*times, strict=True)]


def inputs(image_token: int, visual: int, text: int, batch: int, size: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    words = torch.randint(10, 1000, (batch, text), generator=gen)
    ids = torch.cat([words[:, :4], torch.full((batch, visual), image_token), words[:, 4:]], 1)
    labels = ids.masked_fill(ids == image_token, -100)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values": torch.rand(batch, 3, size, size, generator=gen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="half-width models, 168 px")
    args = parser.parse_args()
    vision_cfg, text_cfg = configs(args.quick)
    grid = vision_cfg.image_size // vision_cfg.patch_size
    n = grid * grid

    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=vision_cfg,
            text_config=text_cfg,
            image_token_index=text_cfg.vocab_size - 1,
            image_seq_length=n,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        CLIPVisionModel(vision_cfg).save_pretrained(tmp)
        ours = {}
        for name, method, k in (("none", "none", None), ("tome", "tome", n // 9)):
            torch.manual_seed(0)
            model, _ = vlm.build_vlm(
                tmp,
                Qwen2ForCausalLM(text_cfg),
                tokenizer=tiny_tokenizer("chatml"),
                compressor=method,
                num_tokens=k,
                feature_layers=[-2],
            )
            ours[name] = (model, k or n)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch "
        f"{args.batch}, CLIP-arch tower {vision_cfg.hidden_size}x{vision_cfg.num_hidden_layers} at "
        f"{vision_cfg.image_size}px ({n} patches), Qwen2-arch LLM {text_cfg.hidden_size}x"
        f"{text_cfg.num_hidden_layers}, {args.text_tokens} text tokens; median of {args.repeats}\n"
    )
    size, text = vision_cfg.image_size, args.text_tokens
    runs = [("Llava (transformers)", n, llava, llava.config.image_token_id)]
    runs += [(f"radio-vlm, {name}", k, m, m.config.image_token_id) for name, (m, k) in ours.items()]
    seconds = step_seconds(
        [(m, inputs(token, k, text, args.batch, size)) for _, k, m, token in runs], args.repeats
    )
    rows = [(name, k, s) for (name, k, _, _), s in zip(runs, seconds, strict=True)]
    llava_s = seconds[0]
    print("| model | visual tokens | step (s) | Llava / this |")
    print("|---|---|---|---|")
    for name, k, seconds in rows:
        print(f"| {name} | {k} | {seconds:.3f} | {llava_s / seconds:.2f}x |")


if __name__ == "__main__":
    main()

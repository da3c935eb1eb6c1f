"""Encoder throughput, measured in one run: sdpa vs eager attention, packed vs padded batches.

A random ViT-B-sized RADIO (768 wide, 12 blocks, 4 cls + 4 registers, CPE table for 2048 px)
on transformers' RadioModel, behind ``RadioEncoder``:

1. images/s at each resolution with ``attn_implementation`` "sdpa" and "eager" (same weights);
2. a batch of images of different sizes: packed into one sequence (``encode``, RadioModel's
   ``image_grid_hw`` path) vs padded to the largest height and width and run as one dense batch
   (what a toolkit without packing does) vs one image at a time.

    python benchmarks/encoder_speed.py [--resolutions 512,768,1024] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a file: put the project root first on the path
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from transformers import RadioConfig, RadioModel

from encoder import RadioEncoder

MIXED = [(512, 384), (384, 768), (768, 512), (256, 256), (1024, 768), (512, 512)]


def vit_b_radio(attn: str) -> RadioEncoder:
    config = RadioConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_cls_tokens=4,
        num_registers=4,
        max_img_size=2048,
        summary_idxs=[0, 1, 2],
    )
    config._attn_implementation = attn
    torch.manual_seed(0)  # same weights for both attention implementations
    model = RadioModel(config).eval()
    return RadioEncoder(model, preferred_resolution=(768, 768), max_resolution=2048)


def median_s(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def padded(images: list[torch.Tensor]) -> torch.Tensor:
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    return torch.stack(
        [F.pad(im, (0, width - im.shape[2], 0, height - im.shape[1])) for im in images]
    )


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolutions", default="512,768,1024")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="scale the mixed sizes")
    parser.add_argument("--quick", action="store_true", help="256,384 px and half-size mix")
    args = parser.parse_args()
    resolutions = [int(r) for r in args.resolutions.split(",")]
    scale = args.scale
    if args.quick:
        resolutions, scale = [256, 384], 0.5
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoders = {attn: vit_b_radio(attn).to(device) for attn in ("sdpa", "eager")}
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, float32, "
        f"random ViT-B RADIO, batch {args.batch}; median of {args.repeats}\n"
    )

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    print("| resolution | tokens | sdpa (img/s) | eager (img/s) | sdpa / eager |")
    print("|---|---|---|---|---|")
    for res in resolutions:
        x = torch.rand(args.batch, 3, res, res, device=device)
        speed = {}
        for attn, enc in encoders.items():
            t = median_s(lambda e=enc, x=x: (e(x), sync()), args.repeats)
            speed[attn] = args.batch / t
        tokens = (res // 16) ** 2
        print(
            f"| {res} | {tokens} | {speed['sdpa']:.2f} | {speed['eager']:.2f} | "
            f"{speed['sdpa'] / speed['eager']:.2f}x |"
        )

    sizes = [(round(h * scale / 16) * 16, round(w * scale / 16) * 16) for h, w in MIXED]
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=gen).to(device) for h, w in sizes]
    enc = encoders["sdpa"]
    real = sum(h * w for h, w in sizes) // 256
    batch = padded(images)
    pad_tokens = len(images) * batch.shape[2] * batch.shape[3] // 256
    packed_s = median_s(lambda: (enc.encode(images), sync()), args.repeats)
    padded_s = median_s(lambda: (enc(batch), sync()), args.repeats)
    single_s = median_s(lambda: ([enc(im.unsqueeze(0)) for im in images], sync()), args.repeats)
    print(
        f"\nmixed batch of {len(images)} sizes {sizes}: {real} patch tokens, "
        f"{pad_tokens} when padded\n"
    )
    print("| path | img/s | vs packed |")
    print("|---|---|---|")
    for name, t in (("packed", packed_s), ("padded", padded_s), ("one by one", single_s)):
        print(f"| {name} | {len(images) / t:.2f} | {packed_s / t:.2f}x |")


if __name__ == "__main__":
    main()

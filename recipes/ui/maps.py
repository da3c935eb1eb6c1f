"""What the merger keeps of a page, on the model's own encoder features (no web code here).

    >>> page = encode_page(model, processor, image)      # the tower's patch grid of the page
    >>> maps = merge_maps(page, num_tokens=16)            # ToMe, avg-pool, unshuffle at K=16
    >>> maps[0].picture, maps[0].sizes, maps[0].error     # merge map, patches per token, MSE

Every method compresses the same grid ``model.vision_tower(pixel_values).grid`` [1, h, w, C]
to the same budget K; the map paints each output token's patches in one colour
(``token_merge.visualize``) and the error is the normalised reconstruction MSE (each channel
standardised first, as ``radio-vlm merge-demo`` reports it). Unshuffle at budget K takes the
smallest s x s block that gives at most K tokens: lossless, but each token is s*s times wider,
so the projector (and the LLM's input) pays for it in width instead of count.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state
from PIL import Image
from torch import Tensor

from token_merge import compress, reconstruction_error, visualize

METHODS = ("tome", "avgpool", "unshuffle")
TITLES = {"tome": "ToMe", "avgpool": "avg-pool", "unshuffle": "pixel unshuffle"}
DISPLAY_SIDE = 384  # px: the maps are drawn on an enlarged page so each patch is visible


@dataclass
class EncodedPage:
    """A page as the model sees it: ``picture`` (the processed page enlarged for display) and
    the tower's patch features ``grid`` [1, h, w, C] (float32, cpu)."""

    picture: Image.Image
    grid: Tensor
    tome_options: dict  # the model's ToMe destination settings (dst, seed)

    @property
    def grid_hw(self) -> tuple[int, int]:
        return tuple(self.grid.shape[1:3])


@dataclass
class MethodMap:
    """One method at one budget: its merge map, token count, width and reconstruction error;
    ``problem`` says why the method cannot give this budget (then the rest is None)."""

    method: str
    picture: Image.Image | None
    tokens: int | None = None
    channels: int | None = None
    error: float | None = None
    sizes: Tensor | None = None  # [K] patches per token
    problem: str | None = None


@torch.inference_mode()
def encode_page(model, processor, image: Image.Image) -> EncodedPage:
    """Resize ``image`` as the processor does and run the model's vision tower on it."""
    pixels = processor.image_processor(image)[0]  # [3, H, W] in [0, 1]
    tower = next(model.vision_tower.parameters())
    grid = model.vision_tower(pixels[None].to(tower.device, tower.dtype)).grid
    height, width = pixels.shape[-2:]
    scale = DISPLAY_SIDE / max(height, width)
    picture = Image.fromarray((pixels.permute(1, 2, 0) * 255).round().byte().numpy())
    picture = picture.resize((round(width * scale), round(height * scale)), Image.NEAREST)
    saved = model.compressor
    options = {"dst": saved.dst, "seed": saved.seed} if saved.method == "tome" else {}
    return EncodedPage(picture, grid.float().cpu(), options)


def merge_maps(page: EncodedPage, num_tokens: int) -> list[MethodMap]:
    """ToMe, avg-pool and unshuffle of ``page`` at budget ``num_tokens`` (``METHODS`` order)."""
    maps = []
    for method in METHODS:
        options = page.tome_options if method == "tome" else {}
        try:
            out = compress(page.grid, method, num_tokens=num_tokens, **options)
        except ValueError as err:  # e.g. no kh x kw = K pooling fits the grid
            maps.append(MethodMap(method, None, problem=" ".join(str(err).split())))
            continue
        error = float(reconstruction_error(page.grid, out, normalize=True))
        maps.append(
            MethodMap(
                method,
                visualize(page.picture, out, alpha=0.55),
                out.num_tokens,
                out.tokens.shape[-1],
                error,
                out.sizes[0],
            )
        )
    return maps


def sizes_chart(sizes: Tensor, title: str) -> Image.Image:
    """A bar per token, largest first: how many patches each output token stands for."""
    values = sorted(sizes.tolist(), reverse=True)
    fig = Figure(figsize=(5.2, 2.1), dpi=100)
    ax = fig.subplots()
    ax.bar(range(len(values)), values, width=1.0, color="#4c72b0")
    ax.set_xlabel("output token (largest first)")
    ax.set_ylabel("patches")
    ax.set_title(title, fontsize=10)
    ax.margins(x=0)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return Image.open(buffer).convert("RGB")


def errors_table(maps: list[MethodMap], grid_hw: tuple[int, int]) -> str:
    """Markdown: tokens, width and reconstruction error per method."""
    h, w = grid_hw
    lines = [
        f"Encoder grid {h}x{w} = {h * w} patches. Reconstruction error: normalised MSE between "
        "the encoder's features and each token copied back to its patches.",
        "",
        "| method | tokens | channels per token | reconstruction error |",
        "|---|---|---|---|",
    ]
    for m in maps:
        if m.problem:
            lines.append(f"| {TITLES[m.method]} | - | - | cannot: {m.problem} |")
        else:
            lines.append(f"| {TITLES[m.method]} | {m.tokens} | {m.channels} | {m.error:.4f} |")
    return "\n".join(lines)
